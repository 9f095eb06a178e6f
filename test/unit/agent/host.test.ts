import { expect } from "chai";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeDirAt } from "../../../agent/host.js";

describe("makeDirAt", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "dv-host-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("makes the directory with the given mode when its parent exists", () => {
    expect(makeDirAt(join(dir, "a"), 0o700)).to.equal(true);
    const st = statSync(join(dir, "a"));
    expect(st.isDirectory()).to.equal(true);
    expect(st.mode & 0o777).to.equal(0o700);
  });

  it("says true for something already there, without replacing it", () => {
    writeFileSync(join(dir, "f"), "x");
    expect(makeDirAt(join(dir, "f"), 0o755)).to.equal(true);
    expect(statSync(join(dir, "f")).isFile()).to.equal(true);
  });

  it("says false when the parent is missing, and makes nothing", () => {
    expect(makeDirAt(join(dir, "no", "b"), 0o755)).to.equal(false);
    expect(() => statSync(join(dir, "no"))).to.throw(/ENOENT/);
  });

  it("[error] throws other errors, such as a file where the parent should be", () => {
    writeFileSync(join(dir, "f"), "x");
    expect(() => makeDirAt(join(dir, "f", "b"), 0o755)).to.throw(/ENOTDIR/);
  });
});
