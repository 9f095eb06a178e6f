/**
 * docs/local-mode.md, run: every ```sh block in order, in one bash (the doc's variables carry from
 * block to block, as in the reader's shell), as root, in a temporary $WORK with free ports; each
 * ```text block that follows a command block is the output that block must show. Lines match in
 * order, whitespace collapsed, `…` standing for anything.
 */
import { expect } from "chai";
import { spawn } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const REPO = join(import.meta.dirname, "..", "..");
const DOC = join(REPO, "docs", "local-mode.md");

export interface DocBlock {
  readonly script: string;
  /** The ```text block right after it, if any. */
  readonly expected: string | undefined;
}

/** The doc's ```sh blocks, each with the ```text block that follows it. */
export function docBlocks(markdown: string): DocBlock[] {
  const fences = [...markdown.matchAll(/^```(\w*)\n([\s\S]*?)^```$/gm)].map((m) => ({
    lang: m[1]!,
    body: m[2]!,
  }));
  const blocks: DocBlock[] = [];
  fences.forEach((f, i) => {
    if (f.lang !== "sh") return;
    const next = fences[i + 1];
    blocks.push({ script: f.body, expected: next?.lang === "text" ? next.body : undefined });
  });
  return blocks;
}

const squash = (s: string): string => s.replace(/\s+/g, " ").trim();

/** Where the expected lines do not all appear, in order, in `actual`; undefined when they do. */
export function mismatch(expected: string, actual: string): string | undefined {
  const lines = actual.split("\n").map(squash);
  let at = 0;
  for (const want of expected.split("\n").map(squash)) {
    if (want === "") continue;
    const re = new RegExp(
      `^${want
        .split("…")
        .map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
        .join(".*")}$`,
    );
    const found = lines.findIndex((l, i) => i >= at && re.test(l));
    if (found < 0) return `expected a line matching ${JSON.stringify(want)} after line ${at}`;
    at = found + 1;
  }
  return undefined;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => resolve(typeof a === "object" && a !== null ? a.port : 0));
    });
  });
}

function run(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: REPO, env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

const MARK = "@@@ local-mode.md block";

describe("docs/local-mode.md, run as written", function () {
  this.timeout(300_000);
  const blocks = docBlocks(readFileSync(DOC, "utf8"));
  let work: string;
  let parent: string;
  let outputs: string[] = [];
  let result: { code: number | null; out: string } | undefined;
  let logs = "";

  before(async function () {
    if (process.getuid?.() !== 0 || !existsSync("/dev/fuse") || !existsSync("/usr/bin/s3fs")) this.skip();
    parent = mkdtempSync(join(tmpdir(), "dv-doc-"));
    // The agent's uid must reach $WORK, as it reaches /tmp/dv-local.
    chmodSync(parent, 0o755);
    work = join(parent, "work");
    const script = [
      "set -euo pipefail",
      "exec 2>&1",
      ...blocks.map((b, i) => `echo "${MARK} ${i}"\n${b.script}`),
      `echo "${MARK} end"`,
    ].join("\n");
    writeFileSync(join(parent, "doc.sh"), script);
    const env = {
      ...process.env,
      WORK: work,
      S3_PORT: String(await freePort()),
      AGENT_PORT: String(await freePort()),
    };
    result = await run("bash", [join(parent, "doc.sh")], env, 280_000);
    // The daemons' logs, for a failure's message (the clean-up block removes them on success).
    for (const f of ["mounter.log", "agent.log", "s3.log"]) {
      const p = join(work, f);
      if (existsSync(p))
        logs += `--- ${f} (last lines):\n${readFileSync(p, "utf8").split("\n").slice(-40).join("\n")}\n`;
    }
    const parts = result.out.split(new RegExp(`^${MARK} `, "m"));
    outputs = [];
    for (const p of parts.slice(1)) {
      const nl = p.indexOf("\n");
      const which = p.slice(0, nl);
      if (which !== "end") outputs[Number(which)] = p.slice(nl + 1);
    }
  });

  after(async () => {
    if (work === undefined) return;
    // Whatever the doc's clean-up did not get to: its daemons, mounts, clients and files.
    const root = join(work, "root");
    for (const f of ["agent.pid", "mounter.pid", "s3.pid"]) {
      const p = join(work, f);
      if (!existsSync(p)) continue;
      const pid = Number(readFileSync(p, "utf8").trim());
      if (pid > 1) {
        try {
          // The doc starts each daemon as a process group of its own (set -m).
          process.kill(-pid, "SIGTERM");
        } catch {
          // gone
        }
      }
    }
    await new Promise((r) => setTimeout(r, 500));
    if (readFileSync("/proc/self/mountinfo", "utf8").includes(` ${root}`))
      await run("umount", ["--recursive", "--lazy", root], process.env, 30_000);
    await run(
      "bash",
      [
        "-c",
        // Anything still running for this $WORK (a daemon, a watch, a FUSE client): named by the path.
        `for p in $(grep -lsaF -- "${work}/" /proc/[0-9]*/cmdline | cut -d/ -f3); do [ "$p" != $$ ] && kill -9 "$p" 2>/dev/null || true; done`,
      ],
      process.env,
      30_000,
    );
    rmSync(parent, { recursive: true, force: true });
  });

  it("has command blocks with expected output", () => {
    expect(blocks.length).to.be.greaterThan(10);
    expect(blocks.filter((b) => b.expected !== undefined).length).to.be.greaterThan(8);
    const all = blocks.map((b) => b.script).join("\n");
    for (const step of [
      "npm run --silent inject",
      "npm run --silent mounter",
      "npm run --silent agent",
      "npm run --silent certs",
      "dvctl",
      " watch ",
      "umount --recursive",
    ])
      expect(all, step).to.include(step);
  });

  it("runs every block, in order, to the end", () => {
    expect(result?.code, `${result?.out}\n${logs}`).to.equal(0);
    expect(result?.out).to.include(`${MARK} end`);
    expect(outputs.filter((o) => o !== undefined)).to.have.length(blocks.length);
  });

  it("shows the output the doc says each block shows", () => {
    blocks.forEach((b, i) => {
      if (b.expected === undefined) return;
      const actual = outputs[i] ?? "(the block did not run)";
      const miss = mismatch(b.expected, actual);
      expect(miss, `block ${i}:\n${b.script}\n--- output:\n${actual}`).to.equal(undefined);
    });
  });

  it("leaves nothing behind: no mount under the root, no process for it, no work directory", () => {
    expect(readFileSync("/proc/self/mountinfo", "utf8")).not.to.include(` ${join(work, "root")}`);
    expect(existsSync(work)).to.equal(false);
    const left: string[] = [];
    for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
      try {
        const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
        if (cmd.includes(work) && !cmd.includes("grep")) left.push(`${pid}: ${cmd}`);
      } catch {
        // exited meanwhile
      }
    }
    expect(left, "processes left running for the doc's $WORK").to.deep.equal([]);
  });
});
