/**
 * The suite's layout: `npx mocha FILE` runs that file alone. Mocha merges a `spec` from
 * `.mocharc.json` with the files named on the command line, so the glob lives in `npm test` only.
 */
import { expect } from "chai";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";

describe("the test suite's layout", function () {
  it("keeps no spec in .mocharc.json, so that a named file runs alone", function () {
    const rc = JSON.parse(readFileSync(".mocharc.json", "utf8")) as Record<string, unknown>;
    expect(rc).to.not.have.property("spec");
  });

  it("runs every test file from npm test", function () {
    const pkg = JSON.parse(readFileSync("package.json", "utf8")) as { scripts: Record<string, string> };
    expect(pkg.scripts.test).to.match(/^mocha 'test\/\*\*\/\*\.test\.ts'$/);
  });

  it("runs exactly one file when one is named", function () {
    this.timeout(60_000);
    const r = spawnSync("npx", ["mocha", "--reporter", "json", "test/unit/shared/names.test.ts"], {
      encoding: "utf8",
    });
    const files = new Set(
      (JSON.parse(r.stdout) as { tests: Array<{ file: string }> }).tests.map((t) => t.file),
    );
    expect([...files].map((f) => f.replace(/^.*\/test\//, "test/"))).to.deep.equal([
      "test/unit/shared/names.test.ts",
    ]);
  });
});
