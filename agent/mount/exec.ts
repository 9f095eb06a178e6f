/**
 * The only module that spawns processes: `run` for a short command, `start` for a long-lived one
 * (a FUSE client). No shell, ever (`shell: false`): argv is passed to the program as is. Every child
 * gets its own process group (`detached: true`, i.e. `setsid`), so that a kill reaches helpers it
 * forked and a terminal's signals do not reach it; its stdio is always explicit (never inherited),
 * because a daemon that inherits a pipe keeps it open.
 *
 * The agent hands these functions absolute paths only (`agent/mount/mounters/programs.ts`); the mount
 * commands below default to them.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { AppError } from "../../shared/errors.js";
import { DEFAULT_PROGRAMS, type ProgramPaths } from "./mounters/programs.js";

export type Env = Readonly<Record<string, string | undefined>>;

export interface ExitStatus {
  /** Exit code, or null when the process was ended by a signal. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface RunOptions {
  /** The child's complete environment. Default: the agent's own. */
  readonly env?: Env;
  /** Hard limit: after it the process group gets SIGTERM, then SIGKILL after `killGraceMs`. */
  readonly timeoutMs: number;
  /** Written to stdin, which is then closed. Without it stdin is /dev/null. */
  readonly input?: string | Uint8Array;
  /** Default 2000 ms. */
  readonly killGraceMs?: number;
  /** Per stream; stdout keeps its first bytes, stderr its last. Default 1 MiB. */
  readonly maxOutputBytes?: number;
  readonly cwd?: string;
  /**
   * Descriptors of this process that the child gets as its 3, 4, …: a program named
   * `/proc/self/fd/3` then reaches exactly the file or directory held here, whatever happened to
   * its path since it was opened.
   */
  readonly fds?: readonly number[];
}

export interface RunResult extends ExitStatus {
  readonly stdout: string;
  readonly stderr: string;
  /** The timeout fired and the process was killed. */
  readonly timedOut: boolean;
  /** Some output was dropped to respect `maxOutputBytes`. */
  readonly truncated: boolean;
  readonly durationMs: number;
}

const DEFAULT_KILL_GRACE_MS = 2000;
const DEFAULT_MAX_OUTPUT = 1024 * 1024;
// After the child exits, a grandchild may still hold its pipes open; stop waiting for EOF after this.
const PIPE_DRAIN_MS = 200;

/** Keeps the first `limit` bytes. */
class HeadBuffer {
  private readonly chunks: Buffer[] = [];
  private size = 0;
  truncated = false;
  constructor(private readonly limit: number) {}
  push(chunk: Buffer): void {
    const room = this.limit - this.size;
    if (chunk.length > room) this.truncated = true;
    if (room <= 0) return;
    const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
    this.chunks.push(part);
    this.size += part.length;
  }
  text(): string {
    return Buffer.concat(this.chunks).toString("utf8");
  }
}

/** Keeps the last `limit` bytes. */
class TailBuffer {
  private chunks: Buffer[] = [];
  private size = 0;
  truncated = false;
  constructor(private readonly limit: number) {}
  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size > this.limit && this.chunks.length > 0) {
      const first = this.chunks[0]!;
      const excess = this.size - this.limit;
      this.truncated = true;
      if (first.length <= excess) {
        this.chunks.shift();
        this.size -= first.length;
      } else {
        this.chunks[0] = first.subarray(excess);
        this.size -= excess;
      }
    }
  }
  text(): string {
    return Buffer.concat(this.chunks).toString("utf8");
  }
}

/** Sends `signal` to the process group led by `pid`, or to `pid` alone if there is no group. */
function signalGroup(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pid, signal);
    return true;
  } catch {
    try {
      process.kill(pid, signal);
      return true;
    } catch {
      return false;
    }
  }
}

function spawnError(cmd: string, e: unknown): AppError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === "ENOENT")
    return new AppError(
      "Unavailable",
      `${cmd} was not found${cmd.includes("/") ? "" : " on PATH"}. Is it installed on your system?`,
      { cause: e },
    );
  return new AppError("Unavailable", `cannot run ${cmd}: ${code ?? String(e)}`, { cause: e });
}

/** Resolves when the child has exited and its pipes are drained (or given up on). */
function waitForClose(child: ChildProcess): Promise<ExitStatus> {
  return new Promise((resolve) => {
    let status: ExitStatus | undefined;
    let drainTimer: NodeJS.Timeout | undefined;
    const finish = (s: ExitStatus): void => {
      if (drainTimer) clearTimeout(drainTimer);
      resolve(s);
    };
    child.once("exit", (code, signal) => {
      status = { code, signal };
      drainTimer = setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
        finish(status!);
      }, PIPE_DRAIN_MS);
    });
    child.once("close", (code: number | null, signal: NodeJS.Signals | null) =>
      finish(status ?? { code, signal }),
    );
  });
}

/** Waits for the `spawn` event, or turns a spawn failure (ENOENT…) into `AppError("Unavailable")`. */
function spawned(cmd: string, child: ChildProcess): Promise<number> {
  // A permanent listener: an unhandled 'error' event (a failed kill) would crash the agent.
  child.on("error", () => undefined);
  return new Promise((resolve, reject) => {
    child.once("spawn", () => resolve(child.pid!));
    child.once("error", (e) => reject(spawnError(cmd, e)));
  });
}

/**
 * Runs a short command to completion. Never rejects because of the exit status; rejects with
 * `AppError("Unavailable")` only when the program cannot be started.
 */
export async function run(cmd: string, argv: readonly string[], opts: RunOptions): Promise<RunResult> {
  const started = Date.now();
  const maxOutput = opts.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  const child = spawn(cmd, [...argv], {
    shell: false,
    detached: true,
    env: { ...(opts.env ?? process.env) },
    ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
    stdio: [opts.input !== undefined ? "pipe" : "ignore", "pipe", "pipe", ...(opts.fds ?? [])],
  });
  const stdout = new HeadBuffer(maxOutput);
  const stderr = new TailBuffer(maxOutput);
  child.stdout!.on("data", (c: Buffer) => stdout.push(c));
  child.stderr!.on("data", (c: Buffer) => stderr.push(c));
  const closed = waitForClose(child);
  const pid = await spawned(cmd, child);
  if (opts.input !== undefined && child.stdin) {
    child.stdin.on("error", () => undefined); // EPIPE when the program does not read its input
    child.stdin.end(opts.input);
  }
  let timedOut = false;
  let killTimer: NodeJS.Timeout | undefined;
  const timer = setTimeout(() => {
    timedOut = true;
    signalGroup(pid, "SIGTERM");
    killTimer = setTimeout(() => signalGroup(pid, "SIGKILL"), opts.killGraceMs ?? DEFAULT_KILL_GRACE_MS);
  }, opts.timeoutMs);
  try {
    const status = await closed;
    return {
      ...status,
      stdout: stdout.text(),
      stderr: stderr.text(),
      timedOut,
      truncated: stdout.truncated || stderr.truncated,
      durationMs: Date.now() - started,
    };
  } finally {
    clearTimeout(timer);
    if (killTimer) clearTimeout(killTimer);
  }
}

export interface StartOptions {
  /** The child's complete environment. */
  readonly env: Env;
  /** How much of the client's output to keep for {@link ClientProcess.stderrTail}. Default 64 KiB. */
  readonly stderrLimit?: number;
  /**
   * Send stdout and stderr to this file (created 0600, appended to) instead of pipes. A client
   * writing to a file does not depend on the agent staying alive to read a pipe.
   */
  readonly logFile?: string;
  readonly cwd?: string;
}

/** A long-lived child (a FUSE client), leader of its own process group. */
export interface ClientProcess {
  readonly pid: number;
  /** Resolves once, when the process has exited. Never rejects. */
  readonly exited: Promise<ExitStatus>;
  /** The exit status once known, else undefined (the process is running). */
  exitStatus(): ExitStatus | undefined;
  /**
   * The last `stderrLimit` bytes the client printed, stdout and stderr interleaved: s3fs in the
   * foreground logs to stdout, rclone and GeeseFS to stderr. May contain secrets: scrub it.
   */
  stderrTail(): string;
  /** Signals the whole process group. False when it is already gone. Default SIGTERM. */
  kill(signal?: NodeJS.Signals): boolean;
  /** SIGTERM, then SIGKILL after `graceMs` (default 2000); resolves when the process has exited. */
  stop(graceMs?: number): Promise<ExitStatus>;
}

function readFileTail(path: string, limit: number): string {
  let fd: number | undefined;
  try {
    fd = openSync(path, "r");
    const size = fstatSync(fd).size;
    const length = Math.min(size, limit);
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, size - length);
    return buf.toString("utf8");
  } catch {
    return "";
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Starts a long-lived process (stdin /dev/null; output to a bounded in-memory tail or to
 * `logFile`). Resolves once the process is running; rejects with `AppError("Unavailable")` when
 * it cannot be started.
 */
export async function start(
  cmd: string,
  argv: readonly string[],
  opts: StartOptions,
): Promise<ClientProcess> {
  const limit = opts.stderrLimit ?? 64 * 1024;
  let logFd: number | undefined;
  if (opts.logFile !== undefined) logFd = openSync(opts.logFile, "a", 0o600);
  let child: ChildProcess;
  try {
    child = spawn(cmd, [...argv], {
      shell: false,
      detached: true,
      env: { ...opts.env },
      ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
      stdio: ["ignore", logFd ?? "pipe", logFd ?? "pipe"],
    });
  } finally {
    // The child has its own copy of the descriptor.
    if (logFd !== undefined) closeSync(logFd);
  }
  const tail = new TailBuffer(limit);
  child.stdout?.on("data", (c: Buffer) => tail.push(c));
  child.stderr?.on("data", (c: Buffer) => tail.push(c));
  const exited = waitForClose(child);
  const pid = await spawned(cmd, child);
  const logFile = opts.logFile;
  return clientHandle(pid, exited, () =>
    logFile !== undefined ? readFileTail(logFile, limit) : tail.text(),
  );
}

/** The handle of a running client; `exited` resolves when it has exited and its pipes are closed. */
function clientHandle(pid: number, exited: Promise<ExitStatus>, output: () => string): ClientProcess {
  let status: ExitStatus | undefined;
  const done = exited.then((s) => (status = s));
  return {
    pid,
    exited: done,
    exitStatus: () => status,
    stderrTail: output,
    kill: (signal = "SIGTERM") => (status === undefined ? signalGroup(pid, signal) : false),
    async stop(graceMs = DEFAULT_KILL_GRACE_MS) {
      if (status !== undefined) return status;
      signalGroup(pid, "SIGTERM");
      const timer = setTimeout(() => signalGroup(pid, "SIGKILL"), graceMs);
      try {
        return await done;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

export type UnmountMethod = "fusermount3" | "umount" | "fusermount3 -z" | "umount -l" | "none";

export interface UnmountAttempt {
  readonly command: string;
  readonly argv: readonly string[];
  readonly code: number | null;
  readonly stderr: string;
}

export interface UnmountOutcome {
  /** False when `path` was not a mount point (nothing was done). */
  readonly unmounted: boolean;
  /** A lazy (detach) unmount was needed: the mount was busy or its client gone. */
  readonly lazy: boolean;
  readonly method: UnmountMethod;
  /** Every command tried, in order, for the log. */
  readonly attempts: readonly UnmountAttempt[];
}

export interface UnmountOptions {
  /** Fall back to a lazy unmount when the mount is busy or stale. Default true. */
  readonly lazy?: boolean;
  /** Per command. Default 10 s. */
  readonly timeoutMs?: number;
  readonly env?: Env;
  /** Default: {@link DEFAULT_PROGRAMS}. */
  readonly programs?: Pick<ProgramPaths, "fusermount3" | "umount">;
}

const NOT_MOUNTED =
  /not mounted|not found in|no mount point specified|No such file or directory|Invalid argument/i;
const BUSY_OR_STALE = /busy|not connected|EBUSY|ENOTCONN|timed out/i;

// Linux's O_PATH (node:fs does not export it): the descriptor names a place in the tree without
// opening the file there, so no FUSE client is asked, a hung one included.
const O_PATH = 0o10000000;

/**
 * Unmounts `path`: `fusermount3 -u` (as root it unmounts any file system, FUSE or not); when that
 * fails because the mount is busy or stale (`EBUSY`, `ENOTCONN`) or hangs, `fusermount3 -uz`, then
 * `umount -l` (a lazy detach: the mount disappears now, processes that still use it keep the
 * detached tree). A path that is not a mount point gives `{unmounted: false, method: "none"}`.
 * Anything else throws `AppError("Internal")` with every command's stderr; busy with `lazy: false`
 * throws `AppError("Conflict")`.
 *
 * A symbolic link at `path` is never followed: fusermount3 unmounts with `UMOUNT_NOFOLLOW`, and
 * `umount`, which has no such option, gets the mount as `/proc/self/fd/3`, a descriptor of `path`
 * opened without following a link in its last component (on a link it names the link, no mount).
 * Someone who can write where the mount point is could otherwise swap it for a link to another
 * mount between the agent's look at mountinfo and the unmount, and have that one unmounted. A plain
 * `umount` of such a descriptor would always find the mount busy (the descriptor holds it), so
 * `umount` only detaches lazily.
 */
export async function unmount(path: string, opts: UnmountOptions = {}): Promise<UnmountOutcome> {
  const attempts: UnmountAttempt[] = [];
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const programs = opts.programs ?? DEFAULT_PROGRAMS;
  const attempt = async (command: "fusermount3" | "umount", argv: string[]): Promise<boolean> => {
    // Opened only now: the descriptor holds the mount, which makes every unmount but a lazy one busy.
    let held: FileHandle | undefined;
    try {
      if (command === "umount") held = await open(path, O_PATH | constants.O_NOFOLLOW);
      const r = await run(programs[command], argv, {
        timeoutMs,
        killGraceMs: 500,
        ...(opts.env ? { env: opts.env } : {}),
        ...(held !== undefined ? { fds: [held.fd] } : {}),
      });
      const stderr = r.timedOut ? `${r.stderr}\n${command} timed out after ${timeoutMs} ms` : r.stderr;
      attempts.push({ command, argv, code: r.code, stderr: stderr.trim() });
      return r.code === 0 && !r.timedOut;
    } catch (e) {
      attempts.push({ command, argv, code: null, stderr: e instanceof Error ? e.message : String(e) });
      return false;
    } finally {
      await held?.close();
    }
  };
  const done = (method: UnmountMethod, lazy: boolean): UnmountOutcome => ({
    unmounted: method !== "none",
    lazy,
    method,
    attempts,
  });
  if (await attempt("fusermount3", ["-u", path])) return done("fusermount3", false);
  const last = attempts[attempts.length - 1]?.stderr ?? "";
  const all = attempts.map((a) => a.stderr).join("\n");
  if (NOT_MOUNTED.test(last) && !BUSY_OR_STALE.test(all)) return done("none", false);
  const report = (): string =>
    attempts.map((a) => `${a.command} ${a.argv.join(" ")}: ${a.stderr}`).join("; ");
  if (!BUSY_OR_STALE.test(all)) throw new AppError("Internal", `cannot unmount ${path}: ${report()}`);
  if (opts.lazy === false) {
    throw new AppError(
      "Conflict",
      `${path} is busy or stale and a lazy unmount was not allowed: ${report()}`,
    );
  }
  if (await attempt("fusermount3", ["-uz", path])) return done("fusermount3 -z", true);
  if (await attempt("umount", ["-l", "--no-canonicalize", "/proc/self/fd/3"])) return done("umount -l", true);
  throw new AppError("Internal", `cannot unmount ${path}, even lazily: ${report()}`);
}

export interface MountCommandOptions {
  /** Default: {@link DEFAULT_PROGRAMS}. */
  readonly programs?: Pick<ProgramPaths, "mount" | "umount">;
  /** Default 10 s. */
  readonly timeoutMs?: number;
}

/** Runs a mount tool on descriptors passed as the child's 3, 4, …; throws with its stderr on failure. */
async function onDescriptors(
  program: string,
  argv: readonly string[],
  fds: readonly number[],
  timeoutMs: number,
): Promise<void> {
  const r = await run(program, argv, { timeoutMs, killGraceMs: 500, fds });
  if (r.code !== 0 || r.timedOut)
    throw new AppError(
      "Internal",
      `${program} ${argv.join(" ")} failed: ${r.timedOut ? `timed out after ${timeoutMs} ms` : r.stderr.trim() || `exit ${r.code ?? r.signal}`}`,
    );
}

/**
 * Moves the mount whose root `source` holds onto the directory `target` holds (`mount --move`),
 * both named as `/proc/self/fd/N`: the kernel follows such a link to the very directory behind the
 * descriptor, so no path is looked up again and nothing a symbolic link says is followed.
 * `--no-canonicalize` keeps `mount` from resolving the names to paths first. The mount's parent
 * must not be shared (the kernel refuses to move it otherwise; see `agent/mount/host.ts`).
 */
export async function moveMount(
  source: number,
  target: number,
  opts: MountCommandOptions = {},
): Promise<void> {
  const programs = opts.programs ?? DEFAULT_PROGRAMS;
  await onDescriptors(
    programs.mount,
    ["--move", "--no-canonicalize", "/proc/self/fd/3", "/proc/self/fd/4"],
    [source, target],
    opts.timeoutMs ?? 10_000,
  );
}

/** Lazily detaches the mount whose root `mountRoot` holds, wherever it is now (`umount -l`). */
export async function detachMount(mountRoot: number, opts: MountCommandOptions = {}): Promise<void> {
  const programs = opts.programs ?? DEFAULT_PROGRAMS;
  await onDescriptors(
    programs.umount,
    ["--lazy", "--no-canonicalize", "/proc/self/fd/3"],
    [mountRoot],
    opts.timeoutMs ?? 10_000,
  );
}
