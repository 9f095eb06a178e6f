import { expect } from "chai";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  MIN_NODE_MAJOR,
  nodeMajor,
  pinnedNode,
  programNameOf,
  refusalLine,
} from "../../../dvctl/node-guard.js";

describe("dvctl's Node version guard", () => {
  it("reads the major version", () => {
    expect(nodeMajor("v20.20.2")).to.equal(20);
    expect(nodeMajor("24.1.0")).to.equal(24);
    expect(nodeMajor("nonsense")).to.equal(0);
    expect(MIN_NODE_MAJOR).to.equal(22);
  });

  it("refuses in one line that says what is needed and how to get it", () => {
    const line = refusalLine("v20.20.2");
    expect(line.trimEnd().split("\n")).to.have.length(1);
    expect(line).to.match(/^dvctl: needs Node 22 or later \(this is v20\.20\.2\);/);
    expect(line).to.include("npx dvctl");
    expect(line).to.include("install Node 24");
    expect(refusalLine("v18.0.0", "kubectl dv")).to.match(/^kubectl dv: needs Node 22/);
  });

  it("calls itself kubectl dv when run as kubectl-dv", () => {
    expect(programNameOf("/usr/local/bin/kubectl-dv")).to.equal("kubectl dv");
    expect(programNameOf("/x/kubectl-dv.js")).to.equal("kubectl dv");
    expect(programNameOf("/repo/dist/dvctl/main.js")).to.equal("dvctl");
    expect(programNameOf("/usr/local/bin/dvctl")).to.equal("dvctl");
    expect(programNameOf(undefined)).to.equal("dvctl");
  });

  it("finds the pinned Node above the script, or nothing", () => {
    const dir = mkdtempSync(join(tmpdir(), "dvctl-guard-"));
    try {
      mkdirSync(join(dir, "node_modules", "node", "bin"), { recursive: true });
      mkdirSync(join(dir, "dist", "dvctl"), { recursive: true });
      writeFileSync(join(dir, "node_modules", "node", "bin", "node"), "");
      expect(pinnedNode(join(dir, "dist", "dvctl"))).to.equal(
        join(dir, "node_modules", "node", "bin", "node"),
      );
      expect(pinnedNode(tmpdir())).to.equal(undefined);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
