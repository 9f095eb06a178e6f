/**
 * dvctl as an installed program: the package's `bin` map (dvctl and the kubectl plugin kubectl-dv),
 * the Node version guard run by an old Node (the system's `/usr/bin/node`, when it is older than 22),
 * the usage text under the plugin's name, and a reader that closes the pipe early (`dvctl ls | head`).
 */
import { expect } from "chai";
import { execFileSync, spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ts from "typescript";
import { nodeMajor } from "../../../dvctl/node-guard.js";
import { DVCTL_MAIN, REPO, runDvctl, startDvctl } from "../../support/dvctl.js";

const OLD_NODE = "/usr/bin/node";

function oldNodeVersion(): string | undefined {
  if (!existsSync(OLD_NODE)) return undefined;
  const v = execFileSync(OLD_NODE, ["--version"], { encoding: "utf8" }).trim();
  return nodeMajor(v) < 22 ? v : undefined;
}

/**
 * main.ts and node-guard.ts compiled as tsc would (ES2023, ESM), next to a stand-in for the program
 * (run.js) that only says which Node loaded it, in a directory of their own.
 */
function compiledGuard(dir: string): string {
  const out = join(dir, "dist", "dvctl");
  mkdirSync(out, { recursive: true });
  writeFileSync(join(dir, "package.json"), '{"type":"module"}\n');
  for (const name of ["main", "node-guard"]) {
    const source = readFileSync(join(REPO, "dvctl", `${name}.ts`), "utf8");
    const js = ts.transpileModule(source, {
      compilerOptions: { target: ts.ScriptTarget.ES2023, module: ts.ModuleKind.ES2022 },
      fileName: `${name}.ts`,
    }).outputText;
    writeFileSync(join(out, `${name}.js`), js);
  }
  writeFileSync(
    join(out, "run.js"),
    'process.stdout.write(`program loaded on ${process.version} with ${process.argv.slice(2).join(" ")}\\n`);\n',
  );
  return join(out, "main.js");
}

describe("dvctl as an installed program", function () {
  this.timeout(60_000);
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), "dvctl-bin-"))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("package.json's bin has dvctl and kubectl-dv, both the compiled main.js", () => {
    const pkg = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as {
      bin: Record<string, string>;
    };
    expect(pkg.bin).to.deep.include({ dvctl: "dist/dvctl/main.js", "kubectl-dv": "dist/dvctl/main.js" });
    // tsc keeps the shebang, which a bin needs.
    expect(readFileSync(DVCTL_MAIN, "utf8")).to.match(/^#!\/usr\/bin\/env node\n/);
  });

  describe("on a Node older than 22", () => {
    let version: string;
    before(function () {
      const v = oldNodeVersion();
      if (v === undefined) this.skip();
      version = v;
    });

    it("refuses in one line, before loading the program, when no pinned Node is found", () => {
      const main = compiledGuard(join(dir, "lonely"));
      const r = spawnSync(OLD_NODE, [main, "ls"], { encoding: "utf8", env: { PATH: "/usr/bin:/bin" } });
      expect(r.status).to.equal(1);
      expect(r.stdout).to.equal("");
      expect(r.stderr).to.equal(
        `dvctl: needs Node 22 or later (this is ${version}); run it as \`npx dvctl\` from the repository (which pins Node 24), or install Node 24\n`,
      );
    });

    it("runs itself again on the repository's pinned Node when there is one", () => {
      const root = join(dir, "repo");
      const main = compiledGuard(root);
      mkdirSync(join(root, "node_modules", "node", "bin"), { recursive: true });
      symlinkSync(process.execPath, join(root, "node_modules", "node", "bin", "node"));
      // Through a symlink, as npm link installs it.
      symlinkSync(main, join(dir, "kubectl-dv"));
      const r = spawnSync(OLD_NODE, [join(dir, "kubectl-dv"), "ls", "-A"], {
        encoding: "utf8",
        env: { PATH: "/usr/bin:/bin" },
      });
      expect(r.stderr).to.equal("");
      expect(r.stdout).to.equal(`program loaded on ${process.version} with ls -A\n`);
      expect(r.status).to.equal(0);
    });
  });

  it("loads the program at once on a new enough Node", () => {
    const main = compiledGuard(join(dir, "new"));
    const r = spawnSync(process.execPath, [main, "--help"], { encoding: "utf8" });
    expect(r.stdout).to.equal(`program loaded on ${process.version} with --help\n`);
    expect(r.status).to.equal(0);
  });

  it("as kubectl-dv, the usage says kubectl dv", async () => {
    const link = join(dir, "kubectl-dv-plugin", "kubectl-dv");
    mkdirSync(join(dir, "kubectl-dv-plugin"));
    symlinkSync(DVCTL_MAIN, link);
    const r = await runDvctl(["--help"], { script: link });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/^Usage: kubectl dv \[options\] \[command\]/);
    expect(r.stdout).to.include("kubectl dv mount team-a/trainer-0");
    expect(r.stdout).not.to.match(/\bdvctl (ls|mount|status|umount|watch)\b/);
    const plain = await runDvctl(["--help"]);
    expect(plain.stdout).to.match(/^Usage: dvctl \[options\] \[command\]/);
  });

  it("exits 0 without a word when the reader of its output goes away (dvctl ls | head)", async () => {
    const p = startDvctl(["--help"]);
    // The reader closes before dvctl (still starting) writes anything: its write gets EPIPE.
    p.child.stdout!.destroy();
    p.child.stdin!.end();
    const r = await p.exited;
    expect(r.stderr).not.to.match(/EPIPE|Unhandled|Error/);
    expect(r.stderr).to.equal("");
    expect(r.code).to.equal(0);
  });
});
