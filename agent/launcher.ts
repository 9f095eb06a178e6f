/**
 * Starts FUSE clients from a warm helper process instead of forking the agent.
 *
 * libuv starts a child by forking the calling process; the agent's fork copies its page tables, and
 * the exec that follows tears the copy down again, with the agent's event loop blocked until the
 * exec is done: about 3 ms from request to client on the 2-core test machine, against 1.3 ms for
 * the helper below (docs/architecture.md). So the launcher keeps one helper ready: a small Perl process (perl-base
 * is part of every Debian system, the agent's image included) started ahead of time, waiting for
 * one request on its stdin. Given the request, it opens the client's log file, replaces its own
 * environment with the client's and execs the client, so that the helper's pid becomes the
 * client's pid. The agent reaps it like any child: it is the agent's child.
 *
 * The request is data, never code: NUL-separated fields (log file, command, argv, environment)
 * after their length in bytes. The program is fixed text below and runs the client with Perl's
 * list form of `exec`, which never calls a shell. Credentials travel in the environment over the pipe, as with
 * `start`, never in argv. The helper reports a failed exec on a close-on-exec status pipe (fd 3):
 * end of file with nothing written means the client is running.
 *
 * One helper serves one client; a new one is started shortly after, off the path of the client
 * that was just started. When no helper is ready (Perl missing, several clients at once) the client
 * is started with `start`, as before. A helper that is never used exits when the agent goes away:
 * its stdin reaches end of file.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { constants } from "node:os";
import type { Readable, Writable } from "node:stream";
import { AppError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import {
  clientHandle,
  readFileTail,
  spawnError,
  start,
  waitForClose,
  type ClientProcess,
  type StartOptions,
} from "./exec.js";

/**
 * The helper. fd 3 is the status pipe, made close-on-exec so that a successful exec closes it.
 * Everything it writes there is `<stage> <errno>`; it never writes anywhere else before the exec.
 */
export const LAUNCHER_PROGRAM = String.raw`
use strict; use warnings; no warnings 'exec';
use POSIX (); use Fcntl ();
$0 = 'dynamic-volumes-launcher';
open(my $status, '>&=', 3) or POSIX::_exit(2);
fcntl($status, Fcntl::F_SETFD(), Fcntl::FD_CLOEXEC()) or POSIX::_exit(2);
binmode STDIN;
sub fail { syswrite($status, "$_[0] " . ($! + 0) . "\n"); POSIX::_exit(127); }
my $len = <STDIN>;
POSIX::_exit(0) if !defined $len;
$len =~ /\A([0-9]+)\n\z/ or do { $! = 22; fail('request') };
my ($size, $req) = ($1, '');
while (length($req) < $size) { read(STDIN, $req, $size - length($req), length($req)) or POSIX::_exit(0); }
my ($log, $cmd, $argc, @rest) = split /\0/, $req, -1;
defined $argc && $argc =~ /\A[0-9]+\z/ && @rest >= $argc or do { $! = 22; fail('request') };
my @args = splice(@rest, 0, $argc);
@rest % 2 == 0 or do { $! = 22; fail('request') };
my $fd = POSIX::open($log, POSIX::O_WRONLY() | POSIX::O_APPEND() | POSIX::O_CREAT(), 0600);
defined $fd or fail('log');
my $null = POSIX::open('/dev/null', POSIX::O_RDONLY());
defined $null or fail('stdin');
defined POSIX::dup2($null, 0) && defined POSIX::dup2($fd, 1) && defined POSIX::dup2($fd, 2) or fail('stdio');
POSIX::close($fd); POSIX::close($null);
%ENV = @rest;
exec { $cmd } $cmd, @args;
fail('exec');
`;

export interface LauncherOptions {
  /** The Perl interpreter. Default "perl" (from PATH). */
  readonly perl?: string;
  /** Wait this long after a helper was used (or the first start) before starting the next. Default 250 ms. */
  readonly refillDelayMs?: number;
  /** The helper's own environment until it takes the client's. Default: PATH only. */
  readonly env?: NodeJS.ProcessEnv;
  readonly log?: Logger;
}

/** How many clients were started each way. */
export interface LauncherStats {
  readonly warm: number;
  readonly direct: number;
}

interface Helper {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  ready: boolean;
}

/** Helpers that died unused this many times in a row turn the launcher off: something is wrong with Perl. */
const MAX_IDLE_DEATHS = 3;

export class ClientLauncher {
  private readonly perl: string;
  private readonly refillDelayMs: number;
  private readonly env: NodeJS.ProcessEnv;
  private readonly log: Logger | undefined;
  private helper: Helper | undefined;
  private refillTimer: NodeJS.Timeout | undefined;
  private idleDeaths = 0;
  private disabled = false;
  private closed = false;
  private warmStarts = 0;
  private directStarts = 0;

  constructor(opts: LauncherOptions = {}) {
    this.perl = opts.perl ?? "perl";
    this.refillDelayMs = opts.refillDelayMs ?? 250;
    this.env = opts.env ?? { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin" };
    this.log = opts.log;
  }

  /** Same contract as `exec.start`. */
  readonly start = async (
    cmd: string,
    argv: readonly string[],
    opts: StartOptions,
  ): Promise<ClientProcess> => {
    const { helper } = this;
    const { logFile } = opts;
    if (
      helper?.ready !== true ||
      logFile === undefined ||
      opts.cwd !== undefined ||
      [logFile, cmd, ...argv, ...envPairs(opts.env)].some((f) => f.includes("\0"))
    ) {
      this.directStarts++;
      this.refillSoon();
      return start(cmd, argv, opts);
    }
    this.helper = undefined;
    try {
      const client = await this.launch(helper, cmd, argv, logFile, opts.env, opts.stderrLimit ?? 64 * 1024);
      if (client !== undefined) {
        this.warmStarts++;
        return client;
      }
      this.directStarts++;
      return await start(cmd, argv, opts);
    } finally {
      this.refillSoon();
    }
  };

  /** Starts the first helper now rather than after the first client. */
  warmUp(): void {
    if (this.refillTimer !== undefined) clearTimeout(this.refillTimer);
    this.refillTimer = undefined;
    this.refillSoon(0);
  }

  stats(): LauncherStats {
    return { warm: this.warmStarts, direct: this.directStarts };
  }

  /** Pid of the helper waiting for a request, if one is ready. */
  readyPid(): number | undefined {
    return this.helper?.ready === true ? this.helper.child.pid : undefined;
  }

  /** Stops the waiting helper and starts no more. Clients already started are not touched. */
  close(): void {
    this.closed = true;
    if (this.refillTimer !== undefined) clearTimeout(this.refillTimer);
    const h = this.helper;
    this.helper = undefined;
    h?.child.kill("SIGKILL");
  }

  private refillSoon(delayMs = this.refillDelayMs): void {
    if (this.closed || this.disabled || this.helper !== undefined || this.refillTimer !== undefined) return;
    this.refillTimer = setTimeout(() => {
      this.refillTimer = undefined;
      this.spawnHelper();
    }, delayMs);
    this.refillTimer.unref();
  }

  private spawnHelper(): void {
    if (this.closed || this.disabled || this.helper !== undefined) return;
    const child = spawn(this.perl, ["-e", LAUNCHER_PROGRAM], {
      shell: false,
      detached: true,
      env: { ...this.env },
      stdio: ["pipe", "ignore", "ignore", "pipe"],
    });
    const helper: Helper = { child, exited: waitForClose(child), ready: false };
    this.helper = helper;
    // A helper waiting for work must not keep the agent alive.
    child.unref();
    for (const s of [child.stdin, child.stdio[3]] as Array<{ unref?: () => void } | null>) s?.unref?.();
    child.stdin?.on("error", () => undefined);
    child.on("error", (e: NodeJS.ErrnoException) => {
      if (this.helper === helper) this.helper = undefined;
      if (e.code === "ENOENT") {
        this.disabled = true;
        this.log?.info(
          { perl: this.perl },
          "perl was not found; FUSE clients are started by forking the agent, about 1.5 ms slower each",
        );
      }
    });
    child.once("spawn", () => {
      helper.ready = true;
    });
    void helper.exited.then((status) => {
      if (this.helper !== helper) return;
      // Died while waiting: killed by someone, or Perl cannot run the program.
      this.helper = undefined;
      if (++this.idleDeaths >= MAX_IDLE_DEATHS) {
        this.disabled = true;
        this.log?.warn(
          { ...status },
          "the client launcher keeps exiting; FUSE clients are started by forking the agent",
        );
        return;
      }
      this.refillSoon();
    });
  }

  private async launch(
    helper: Helper,
    cmd: string,
    argv: readonly string[],
    logFile: string,
    env: StartOptions["env"],
    limit: number,
  ): Promise<ClientProcess | undefined> {
    const { child } = helper;
    this.idleDeaths = 0;
    // From here on the helper is the client: the agent waits for it like for any client it started.
    child.ref();
    const status = child.stdio[3] as Readable;
    (status as Readable & { ref?: () => void }).ref?.();
    const report = new Promise<string>((resolve) => {
      let text = "";
      status.setEncoding("utf8");
      status.on("data", (c: string) => (text += c));
      status.on("error", () => resolve(text));
      status.once("close", () => resolve(text));
    });
    // Length-prefixed, so that the helper acts as soon as the bytes arrive rather than at end of
    // file, which Node delivers only a few event-loop turns after the write.
    const request = Buffer.from([logFile, cmd, String(argv.length), ...argv, ...envPairs(env)].join("\0"));
    (child.stdin as Writable).end(Buffer.concat([Buffer.from(`${request.length}\n`), request]));
    const failure = (await report).trim();
    if (failure === "") {
      // Killed while it waited, before it could read the request: nothing was started. (A client that
      // exited within these microseconds is started once more, directly, and fails again the same way.)
      if (!execed(child, cmd)) return undefined;
      return clientHandle(child.pid!, helper.exited, () => readFileTail(logFile, limit));
    }
    await helper.exited;
    const [stage, errno] = failure.split(" ");
    const code = errnoName(Number(errno));
    if (stage === "exec") throw spawnError(cmd, Object.assign(new Error(code), { code }));
    throw new AppError("Unavailable", `cannot run ${cmd}: ${stage} failed with ${code}`);
  }
}

/**
 * Whether the helper became the client: its argv[0] is now the client's command. A helper killed
 * while it waited closes the status pipe too, and can do so before it shows as exited.
 */
function execed(child: ChildProcess, cmd: string): boolean {
  try {
    return readFileSync(`/proc/${child.pid}/cmdline`, "utf8").split("\0", 1)[0] === cmd;
  } catch {
    return false;
  }
}

function envPairs(env: StartOptions["env"]): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out.push(k, v);
  return out;
}

function errnoName(n: number): string {
  for (const [name, value] of Object.entries(constants.errno)) if (value === n) return name;
  return `errno ${n}`;
}
