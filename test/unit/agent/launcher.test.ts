import { expect } from "chai";
import { spawn } from "node:child_process";
import { mkdtemp, readFile, readlink, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ClientProcess } from "../../../agent/exec.js";
import { ClientLauncher } from "../../../agent/launcher.js";
import { AppError } from "../../../shared/errors.js";
import { alive, processGroupOf, rejection } from "../../support/processes.js";

const NODE = process.execPath;
const PATH = process.env.PATH ?? "/usr/bin:/bin";
/** Prints its argv (one per line) and $SECRET, then stays up. */
const ECHO_AND_WAIT =
  "console.log(process.argv.slice(1).join('\\n')); console.log('secret=' + process.env.SECRET); setInterval(() => {}, 1000);";

async function waitFor(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("ClientLauncher", () => {
  let dir: string;
  const launchers: ClientLauncher[] = [];
  const clients: ClientProcess[] = [];
  const pids: number[] = [];

  const launcher = (opts: ConstructorParameters<typeof ClientLauncher>[0] = {}): ClientLauncher => {
    const l = new ClientLauncher({ refillDelayMs: 0, ...opts });
    launchers.push(l);
    return l;
  };
  const warm = async (l: ClientLauncher): Promise<number> => {
    l.warmUp();
    await waitFor("a ready helper", () => l.readyPid() !== undefined);
    const pid = l.readyPid()!;
    pids.push(pid);
    return pid;
  };
  const startEcho = async (
    l: ClientLauncher,
    logFile: string,
    args: string[] = [],
  ): Promise<ClientProcess> => {
    const c = await l.start(NODE, ["-e", ECHO_AND_WAIT, ...args], {
      env: { PATH, SECRET: "s3cr3t-value" },
      logFile,
    });
    clients.push(c);
    pids.push(c.pid);
    return c;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "dv-launcher-"));
  });

  after(async () => {
    for (const l of launchers) l.close();
    for (const c of clients) await c.stop(500);
    for (const pid of pids)
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    await rm(dir, { recursive: true, force: true });
  });

  it("runs the client in the ready helper's process, with its argv and environment, output in a 0600 log", async () => {
    const l = launcher();
    const helperPid = await warm(l);
    const log = join(dir, "warm.log");
    const hostile = ["a b", "$(touch /tmp/dv-launcher-pwned)", "-o allow_root", "", "ünïcode"];
    const c = await startEcho(l, log, hostile);

    expect(c.pid).to.equal(helperPid);
    expect(l.stats()).to.deep.equal({ warm: 1, direct: 0 });
    await waitFor("the client's output", async () => (await readFile(log, "utf8")).includes("secret="));
    expect(await readFile(log, "utf8")).to.equal(`${hostile.join("\n")}\nsecret=s3cr3t-value\n`);
    expect((await stat(log)).mode & 0o777).to.equal(0o600);
    // The helper became the client: its command line is the client's, and holds no credential.
    const cmdline = (await readFile(`/proc/${c.pid}/cmdline`, "utf8")).split("\0");
    expect(cmdline[0]).to.equal(NODE);
    expect(cmdline.join(" ")).not.to.include("s3cr3t");
    // Leader of its own process group, stdin /dev/null.
    expect(await processGroupOf(c.pid)).to.equal(c.pid);
    expect(await readlink(`/proc/${c.pid}/fd/0`)).to.equal("/dev/null");
    expect(c.exitStatus()).to.equal(undefined);
    expect(await c.stop()).to.deep.equal({ code: null, signal: "SIGTERM" });
    expect(c.stderrTail()).to.include("secret=s3cr3t-value");
  });

  it("has the next helper ready after one was used", async () => {
    const l = launcher();
    const first = await warm(l);
    await startEcho(l, join(dir, "next.log"));
    await waitFor("a second helper", () => l.readyPid() !== undefined && l.readyPid() !== first);
    pids.push(l.readyPid()!);
  });

  it("reports a client that is not on PATH as the direct start does", async () => {
    const l = launcher();
    const helperPid = await warm(l);
    const e = await rejection(
      l.start("dv-no-such-client", [], { env: { PATH }, logFile: join(dir, "x.log") }),
    );
    expect(e).to.be.instanceOf(AppError);
    expect((e as AppError).code).to.equal("Unavailable");
    expect((e as Error).message).to.equal(
      "dv-no-such-client was not found on PATH. Is it installed on your system?",
    );
    // The helper tried the exec and reported its failure: nothing was started, directly or not.
    expect(l.stats()).to.deep.equal({ warm: 0, direct: 0 });
    expect(await alive(helperPid)).to.equal(false);
  });

  it("reports a log file it cannot open, and starts nothing", async () => {
    const l = launcher();
    const helperPid = await warm(l);
    const e = await rejection(
      l.start(NODE, ["-e", ECHO_AND_WAIT], { env: { PATH }, logFile: join(dir, "missing-dir", "c.log") }),
    );
    expect((e as Error).message).to.match(/cannot run .*node: log failed with ENOENT/);
    await waitFor("the helper to exit", async () => !(await alive(helperPid)));
  });

  it("starts the client directly when no helper is ready, and when the ready one was killed", async () => {
    const l = launcher({ refillDelayMs: 60_000 });
    const first = await startEcho(l, join(dir, "cold.log"));
    expect(l.stats()).to.deep.equal({ warm: 0, direct: 1 });
    expect((await readFile(`/proc/${first.pid}/cmdline`, "utf8")).split("\0")[0]).to.equal(NODE);

    const helperPid = await warm(l);
    process.kill(helperPid, "SIGKILL");
    const second = await startEcho(l, join(dir, "killed.log"));
    expect(second.pid).not.to.equal(helperPid);
    await waitFor("the client's output", async () =>
      (await readFile(join(dir, "killed.log"), "utf8").catch(() => "")).includes("secret="),
    );
    expect(l.stats().direct).to.be.greaterThan(0);
  });

  it("falls back to forking the agent when Perl is missing", async () => {
    const l = launcher({ perl: join(dir, "no-perl-here") });
    l.warmUp();
    await new Promise((r) => setTimeout(r, 200));
    expect(l.readyPid()).to.equal(undefined);
    const c = await startEcho(l, join(dir, "noperl.log"));
    expect(l.stats()).to.deep.equal({ warm: 0, direct: 1 });
    await waitFor("the client's output", async () =>
      (await readFile(join(dir, "noperl.log"), "utf8").catch(() => "")).includes("secret="),
    );
    expect(await alive(c.pid)).to.equal(true);
  });

  it("close() ends the waiting helper", async () => {
    const l = launcher();
    const helperPid = await warm(l);
    l.close();
    await waitFor("the helper to exit", async () => !(await alive(helperPid)));
    expect(l.readyPid()).to.equal(undefined);
  });

  it("an unused helper exits when the agent that started it is gone", async () => {
    const script = [
      `const { ClientLauncher } = await import(${JSON.stringify(new URL("../../../agent/launcher.ts", import.meta.url).href)});`,
      "const l = new ClientLauncher({ refillDelayMs: 0 }); l.warmUp();",
      "const t = setInterval(() => { if (l.readyPid() !== undefined) { console.log(l.readyPid()); clearInterval(t); } }, 5);",
    ].join("\n");
    const agent = spawn(NODE, ["--import", "tsx", "--input-type=module", "-e", script], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    pids.push(agent.pid!);
    let out = "";
    agent.stdout.on("data", (c: Buffer) => (out += c.toString()));
    // The launcher does not keep the process alive: it prints the helper's pid and exits.
    const code = await new Promise<number | null>((r) => agent.once("exit", r));
    expect(code).to.equal(0);
    const helperPid = Number(out.trim());
    expect(helperPid).to.be.greaterThan(0);
    pids.push(helperPid);
    await waitFor("the orphaned helper to exit", async () => !(await alive(helperPid)));
  });
});
