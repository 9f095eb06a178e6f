import { expect } from "chai";
import { closeSync, existsSync, openSync, readFileSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rename, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  detachMount,
  moveMount,
  run,
  start,
  unmount,
  type ClientProcess,
} from "../../../../agent/mount/exec.js";
import { findMount, parseMountinfo } from "../../../../agent/mount/mountinfo.js";
import { AppError } from "../../../../shared/errors.js";
import { alive, processGroupOf, rejection } from "../../../support/processes.js";

const NODE = process.execPath;

describe("exec", () => {
  let dir: string;
  const started: ClientProcess[] = [];
  const pids: number[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "dv-exec-"));
  });

  afterEach(async () => {
    for (const c of started.splice(0)) await c.stop(200);
    for (const pid of pids.splice(0)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    await rm(dir, { recursive: true, force: true });
  });

  describe("run", () => {
    it("returns the exit code, stdout and stderr", async () => {
      const r = await run(
        NODE,
        ["-e", "process.stdout.write('out'); process.stderr.write('err'); process.exit(3)"],
        {
          timeoutMs: 10_000,
        },
      );
      expect(r).to.include({
        code: 3,
        signal: null,
        stdout: "out",
        stderr: "err",
        timedOut: false,
        truncated: false,
      });
    });

    it("passes argv without a shell: metacharacters are plain text", async () => {
      const target = join(dir, "pwned");
      const r = await run("echo", [`; touch ${target}`, `$(touch ${target})`, `| touch ${target}`], {
        timeoutMs: 10_000,
      });
      expect(r.code).to.equal(0);
      expect(r.stdout).to.equal(`; touch ${target} $(touch ${target}) | touch ${target}\n`);
      expect(existsSync(target)).to.equal(false);
    });

    it("does not run a command line as a shell would", async () => {
      const target = join(dir, "pwned");
      const e = await rejection(run(`true; touch ${target}`, [], { timeoutMs: 10_000 }));
      expect(e).to.be.instanceOf(AppError);
      expect((e as AppError).code).to.equal("Unavailable");
      expect(existsSync(target)).to.equal(false);
    });

    it("kills the process with SIGTERM when the timeout fires", async () => {
      const t0 = Date.now();
      const r = await run("sleep", ["30"], { timeoutMs: 150 });
      expect(r.timedOut).to.equal(true);
      expect(r.signal).to.equal("SIGTERM");
      expect(r.code).to.equal(null);
      expect(Date.now() - t0).to.be.lessThan(5000);
    });

    it("escalates to SIGKILL when SIGTERM is ignored", async () => {
      const r = await run(NODE, ["-e", "process.on('SIGTERM', () => {}); setInterval(() => {}, 1000)"], {
        timeoutMs: 300,
        killGraceMs: 300,
      });
      expect(r.timedOut).to.equal(true);
      expect(r.signal).to.equal("SIGKILL");
    });

    it("kills the whole process group on timeout, grandchildren included", async () => {
      const script =
        "const c = require('child_process').spawn('sleep', ['30'], {stdio: 'ignore'});" +
        "process.stdout.write(String(c.pid)); setInterval(() => {}, 1000)";
      const r = await run(NODE, ["-e", script], { timeoutMs: 500 });
      const grandchild = Number(r.stdout);
      expect(grandchild).to.be.greaterThan(0);
      pids.push(grandchild);
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(await alive(grandchild)).to.equal(false);
    });

    it("feeds input on stdin", async () => {
      const r = await run("cat", [], { timeoutMs: 10_000, input: "hello\n" });
      expect(r.stdout).to.equal("hello\n");
    });

    it("gives the child only the environment it was given", async () => {
      const r = await run("env", [], { timeoutMs: 10_000, env: { FOO: "bar" } });
      expect(r.stdout).to.equal("FOO=bar\n");
    });

    it("keeps the first bytes of stdout and the last bytes of stderr", async () => {
      const r = await run(
        NODE,
        [
          "-e",
          "process.stdout.write('A'.repeat(100000) + 'Z'); process.stderr.write('x'.repeat(100000) + 'END')",
        ],
        { timeoutMs: 10_000, maxOutputBytes: 1000 },
      );
      expect(r.stdout).to.equal("A".repeat(1000));
      expect(r.stderr).to.have.length(1000);
      expect(r.stderr.endsWith("END")).to.equal(true);
      expect(r.truncated).to.equal(true);
    });

    it("returns even when a daemonized grandchild keeps the pipes open", async () => {
      const script =
        "const c = require('child_process').spawn('sleep', ['30'], {stdio: 'inherit', detached: true});" +
        "c.unref(); process.stdout.write(c.pid + ' parent done')";
      const t0 = Date.now();
      const r = await run(NODE, ["-e", script], { timeoutMs: 10_000 });
      const [pid, ...rest] = r.stdout.split(" ");
      pids.push(Number(pid));
      expect(await alive(Number(pid)), "the daemon still runs").to.equal(true);
      expect(r.code).to.equal(0);
      expect(rest.join(" ")).to.equal("parent done");
      expect(Date.now() - t0).to.be.lessThan(5000);
    });

    it("[error] a program that does not exist is Unavailable with a hint", async () => {
      const e = await rejection(run("dv-no-such-program", [], { timeoutMs: 1000 }));
      expect(e).to.be.instanceOf(AppError);
      expect((e as AppError).code).to.equal("Unavailable");
      expect((e as AppError).message).to.match(/not found on PATH\. Is it installed/);
    });

    it("[error] a program named by its path that does not exist says so without blaming PATH", async () => {
      const e = await rejection(run(join(dir, "no-such-program"), [], { timeoutMs: 1000 }));
      expect((e as AppError).message).to.equal(
        `${join(dir, "no-such-program")} was not found. Is it installed on your system?`,
      );
    });

    it("hands the child the given descriptors as its 3, 4, …: /proc/self/fd/3 is the file held here", async () => {
      await writeFile(join(dir, "a"), "held\n");
      const a = openSync(join(dir, "a"), "r");
      const b = openSync(dir, "r");
      try {
        // Renamed after it was opened: the child reaches the file, not the name.
        await rename(join(dir, "a"), join(dir, "a2"));
        const r = await run("/bin/sh", ["-c", "cat /proc/self/fd/3; readlink /proc/self/fd/4"], {
          timeoutMs: 10_000,
          fds: [a, b],
        });
        expect(r.stdout).to.equal(`held\n${dir}\n`);
      } finally {
        closeSync(a);
        closeSync(b);
      }
    });
  });

  describe("start", () => {
    it("starts a process in its own process group and reports its exit", async () => {
      const c = await start("sleep", ["30"], { env: { PATH: process.env.PATH } });
      started.push(c);
      expect(c.pid).to.be.greaterThan(0);
      expect(await processGroupOf(c.pid)).to.equal(c.pid);
      expect(c.exitStatus()).to.equal(undefined);
      expect(c.kill("SIGTERM")).to.equal(true);
      expect(await c.exited).to.deep.equal({ code: null, signal: "SIGTERM" });
      expect(c.exitStatus()).to.deep.equal({ code: null, signal: "SIGTERM" });
      expect(c.kill()).to.equal(false);
    });

    it("keeps a bounded tail of stdout and stderr", async () => {
      const c = await start(
        NODE,
        ["-e", "process.stdout.write('o'.repeat(5000) + 'OUT\\n'); process.stderr.write('ERR\\n')"],
        { env: {}, stderrLimit: 100 },
      );
      started.push(c);
      expect(await c.exited).to.deep.equal({ code: 0, signal: null });
      const tail = c.stderrTail();
      expect(tail.length).to.be.at.most(100);
      expect(tail).to.include("OUT\n");
      expect(tail).to.include("ERR\n");
    });

    it("writes output to a 0600 log file when asked and reads the tail from it", async () => {
      const logFile = join(dir, "client.log");
      const c = await start(NODE, ["-e", "console.log('to stdout'); console.error('to stderr')"], {
        env: {},
        logFile,
        stderrLimit: 1000,
      });
      started.push(c);
      await c.exited;
      expect((await stat(logFile)).mode & 0o777).to.equal(0o600);
      expect(c.stderrTail()).to.equal("to stdout\nto stderr\n");
    });

    it("stop() escalates to SIGKILL after the grace time", async () => {
      const c = await start(NODE, ["-e", "process.on('SIGTERM', () => {}); setInterval(() => {}, 1000)"], {
        env: {},
      });
      started.push(c);
      await new Promise((resolve) => setTimeout(resolve, 200)); // let it install the handler
      const status = await c.stop(200);
      expect(status.signal).to.equal("SIGKILL");
    });

    it("[error] a program that does not exist rejects with Unavailable", async () => {
      const e = await rejection(start("dv-no-such-program", [], { env: {} }));
      expect((e as AppError).code).to.equal("Unavailable");
    });
  });

  describe("unmount, moveMount and detachMount (as root, on tmpfs mounts)", () => {
    const table = (): ReturnType<typeof parseMountinfo> =>
      parseMountinfo(readFileSync("/proc/self/mountinfo", "utf8"));
    const tmpfs = async (at: string): Promise<void> => {
      await mkdir(at, { recursive: true });
      const r = await run("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "dv-exec-test", at], {
        timeoutMs: 10_000,
      });
      expect(r.code, r.stderr).to.equal(0);
    };

    beforeEach(function () {
      if (process.getuid?.() !== 0) throw new Error("these tests need root: they mount");
    });
    afterEach(async () => {
      // Deepest first; whatever a failed test left.
      for (const m of table()
        .filter((m) => m.mountPoint.startsWith(`${dir}/`))
        .reverse())
        await run("/usr/bin/umount", ["-l", m.mountPoint], { timeoutMs: 10_000 });
    });

    it("runs the programs it is given, never a program found through PATH", async () => {
      const marker = join(dir, "ran");
      // The fusermount3 given fails as on a busy mount, so that umount runs too.
      const fake = async (name: string): Promise<string> => {
        const p = join(dir, name);
        const then =
          name === "umount" ? `exec /usr/bin/${name} "$@"` : "echo 'Device or resource busy' >&2; exit 1";
        await writeFile(p, `#!/bin/sh\necho "${name} $*" >> '${marker}'\n${then}\n`);
        await chmod(p, 0o755);
        return p;
      };
      const programs = { fusermount3: await fake("fusermount3"), umount: await fake("umount") };
      await tmpfs(join(dir, "m"));
      const out = await unmount(join(dir, "m"), { programs, env: { PATH: "/nonexistent" } });
      expect(out).to.include({ unmounted: true, method: "umount -l" });
      expect(await readFile(marker, "utf8")).to.equal(
        `fusermount3 -u ${join(dir, "m")}\nfusermount3 -uz ${join(dir, "m")}\numount -l --no-canonicalize /proc/self/fd/3\n`,
      );
      expect(findMount(table(), join(dir, "m"))).to.equal(undefined);
    });

    it("never follows a symbolic link at the path: a link to another mount leaves that mount alone", async () => {
      const victim = join(dir, "victim");
      await tmpfs(victim);
      const link = join(dir, "pods", "swapped");
      await mkdir(join(dir, "pods"));
      await symlink(victim, link);
      const out = await unmount(link);
      expect(out).to.include({ unmounted: false, method: "none" });
      expect(findMount(table(), victim)?.fsType, "the link's target is still mounted").to.equal("tmpfs");
      // Lazily too.
      await rejection(unmount(link, { lazy: true })).catch(() => undefined);
      expect(findMount(table(), victim)?.fsType).to.equal("tmpfs");
    });

    it("unmounts a mount at the path itself, a busy one lazily, and says when nothing is mounted", async () => {
      const m = join(dir, "m");
      await tmpfs(m);
      expect(await unmount(m)).to.include({ unmounted: true, lazy: false, method: "fusermount3" });
      expect(findMount(table(), m)).to.equal(undefined);
      expect(await unmount(m)).to.include({ unmounted: false, method: "none" });
      await tmpfs(m);
      const inside = openSync(m, "r");
      try {
        expect(await unmount(m)).to.include({ unmounted: true, lazy: true });
        expect(findMount(table(), m)).to.equal(undefined);
      } finally {
        closeSync(inside);
      }
    });

    it("moveMount puts a mount on the directory a descriptor holds, even when a link took that directory's name", async () => {
      const staging = join(dir, "staging");
      await tmpfs(staging);
      // A private parent, as the agent's staging directory is: the kernel moves no mount out of a shared one.
      expect((await run("/usr/bin/mount", ["--make-private", staging], { timeoutMs: 10_000 })).code).to.equal(
        0,
      );
      await tmpfs(join(staging, "m"));
      await writeFile(join(staging, "m", "inside"), "x");
      const target = join(dir, "pods", "data");
      await mkdir(target, { recursive: true });
      const elsewhere = join(dir, "elsewhere");
      await mkdir(elsewhere);
      const O_PATH = 0o10000000;
      const held = openSync(target, O_PATH);
      const mountRoot = openSync(join(staging, "m"), O_PATH);
      try {
        // The swap a pod that can write to its directory could make after the agent's walk.
        await rename(target, `${target}-renamed`);
        await symlink(elsewhere, target);
        await moveMount(mountRoot, held);
        const t = table();
        expect(findMount(t, `${target}-renamed`)?.fsType).to.equal("tmpfs");
        expect(findMount(t, elsewhere)).to.equal(undefined);
        expect(findMount(t, join(staging, "m"))).to.equal(undefined);
        expect(existsSync(join(`${target}-renamed`, "inside"))).to.equal(true);
        // Detached through the descriptor of its root, wherever it went.
        await detachMount(mountRoot);
        expect(findMount(table(), `${target}-renamed`)).to.equal(undefined);
      } finally {
        closeSync(held);
        closeSync(mountRoot);
      }
    });

    it("[error] moveMount fails with the tool's message when the source is not a mount", async () => {
      await mkdir(join(dir, "plain"));
      await mkdir(join(dir, "to"));
      const a = openSync(join(dir, "plain"), 0o10000000);
      const b = openSync(join(dir, "to"), 0o10000000);
      try {
        const e = await rejection(moveMount(a, b));
        expect((e as AppError).message).to.match(
          /^\/usr\/bin\/mount --move --no-canonicalize \/proc\/self\/fd\/3 \/proc\/self\/fd\/4 failed: /,
        );
      } finally {
        closeSync(a);
        closeSync(b);
      }
    });
  });
});
