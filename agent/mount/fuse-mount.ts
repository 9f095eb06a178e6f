/**
 * Runs one FUSE client for one mount and decides when the mount is ready.
 *
 * `mount` checks the way to the mount point and holds it open (`agent/mount/host.ts`: no symbolic link is
 * followed, and a pod that can write to its directory cannot redirect the mount), writes the
 * mounter's files (0600, in a 0700 state directory), starts the client through `agent/mount/exec.ts` on a
 * staging directory, moves the client's mount onto the held mount point once it shows up in
 * `/proc/self/mountinfo` as FUSE and checks that it landed there, then waits until (1) the client is
 * still alive a short while later (s3fs exits 0 after a failed service check) and (2) a `readdir`
 * through the mount succeeds. On failure it stops the client, removes any half-made mount and the
 * state directory, and throws `AppError("MountFailed")` with the client's output, credentials
 * scrubbed.
 *
 * Every call that may reach a FUSE mount is asynchronous on purpose: a synchronous one blocks the
 * event loop until the client answers, and the client may be waiting on this process. Synchronous
 * are only the read of `/proc/self/mountinfo`, which the kernel writes from its own tables without
 * asking any file system, and the small writes in the agent's private state (see `prepare`).
 */
import { chmodSync, closeSync, fchmodSync, mkdirSync, openSync, rmSync, writeFileSync } from "node:fs";
import { open, readdir, rmdir } from "node:fs/promises";
import { dirname } from "node:path";
import { AppError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { MOUNTERS, type MounterName } from "../../shared/names.js";
import { diagnose } from "./diagnose.js";
import * as exec from "./exec.js";
import { mountIdAt, openMountPoint, openMountRoot, stagingDir, stagingPathOf } from "./host.js";
import type { ClientProcess, StartOptions, UnmountOptions, UnmountOutcome } from "./exec.js";
import { findMount, isFuse, type MountInfo } from "./mountinfo.js";
import { errnoOf, MountTable, probeMount, withTimeout, type ProbeResult } from "./mount-table.js";
import {
  buildMount,
  DEFAULT_CLIENT_PATH,
  DEFAULT_PROGRAMS,
  scrubSecrets,
  secretsOf,
  type ProgramPaths,
} from "./mounters/index.js";
import type { BaseEnv, MountCommand, MountRequest } from "./mounters/types.js";
import { checkAbsolutePath } from "./mounters/validate.js";
import { removeStateDir, stateDirCache } from "./records.js";
import { mayHaveLostWrites, WRITE_BACK_MODE, type ClientEnd, type WriteBackReport } from "./write-back.js";

/** The parts of `agent/mount/exec.ts` the mounter uses; tests hand in fakes. */
export interface ProcessRunner {
  start(cmd: string, argv: readonly string[], opts: StartOptions): Promise<ClientProcess>;
  unmount(path: string, opts?: UnmountOptions): Promise<UnmountOutcome>;
  /** Moves the mount whose root `source` holds onto the directory `target` holds. */
  moveMount(source: number, target: number): Promise<void>;
  /** Lazily detaches the mount whose root `mountRoot` holds, wherever it is. */
  detachMount(mountRoot: number): Promise<void>;
}

export interface FuseMounterOptions {
  /**
   * The host root. Mount points lie below it, every directory from it down to a mount point is
   * checked before a mount, and clients mount in `<root>/agent/staging` first, which must be a
   * private mount point (`ensurePrivateStaging` in `agent/mount/host.ts`).
   */
  readonly root: string;
  /** Default: `agent/mount/exec.ts`, running {@link FuseMounterOptions.programs}. */
  readonly exec?: ProcessRunner;
  /** Returns the text of the agent's mountinfo. Default: reads `/proc/self/mountinfo`. */
  readonly readMountinfo?: () => Promise<string>;
  /** The id of the mount a path lies in. Default `mountIdAt` of `agent/mount/host.ts`. */
  readonly mountIdAt?: (path: string) => number | undefined;
  /** The mount must be usable within this. Default 15000 ms. */
  readonly readyTimeoutMs?: number;
  /** The client must still be alive this long after the mount worked. Default 300 ms. */
  readonly settleMs?: number;
  /** Interval between mountinfo reads while waiting. Default 20 ms. */
  readonly pollMs?: number;
  /**
   * Interval between looks for the client's mount on its staging directory. Default 1 ms (Node's
   * timer resolution): the pod sees nothing until the mount is moved into place, so this wait adds
   * to the time a user waits for the bucket, where the later checks do not. A look is two small
   * reads (the staging directory's mount id), about 30 µs.
   */
  readonly stagePollMs?: number;
  /** Consecutive failed `readdir`s through the new mount before giving up. Default 3. */
  readonly readdirAttempts?: number;
  /**
   * How long an unmounted client may take to finish uploading the writes it acknowledged and exit.
   * When it runs out the client is stopped, and a cache that may still hold such writes is kept
   * (see `agent/mount/write-back.ts`). Default 60000 ms.
   */
  readonly uploadGraceMs?: number;
  /** Interval between looks at a cache while waiting for its uploads. Default 250 ms. */
  readonly uploadPollMs?: number;
  /** Between SIGTERM and SIGKILL when stopping a client. Default 2000 ms. */
  readonly stopGraceMs?: number;
  /** Per unmount command. Default 10000 ms. */
  readonly unmountTimeoutMs?: number;
  /** A `stat` through the mount slower than this makes `probe` report "stale". Default 2000 ms. */
  readonly probeTimeoutMs?: number;
  /**
   * Probes accept a copy of the mount table this old, when this mounter has changed nothing since.
   * Default 1000 ms.
   */
  readonly tableMaxAgeMs?: number;
  /** Environment handed to clients, before each mounter drops what it must. Default: see {@link defaultBaseEnv}. */
  readonly baseEnv?: BaseEnv;
  /** Absolute paths of the clients and mount tools. Default `DEFAULT_PROGRAMS`. */
  readonly programs?: Partial<ProgramPaths>;
  /** The `PATH` clients get, whatever the agent's own. Default `DEFAULT_CLIENT_PATH`. */
  readonly clientPath?: string;
  readonly log?: Logger;
  /** Called when a client this mounter started exits on its own while its mount is in use. */
  readonly onClientExit?: (mountPoint: string) => void;
}

export interface MountResult {
  readonly mountPoint: string;
  readonly mounter: MounterName;
  readonly pid: number;
  /** From starting the client to the mount passing every readiness check (settle time excluded). */
  readonly readyMs: number;
  readonly fsType: string;
}

export interface UnmountResult {
  /** False when nothing was mounted there. */
  readonly unmounted: boolean;
  /** A lazy unmount was needed (busy or stale). */
  readonly lazy: boolean;
  /** A client started by this mounter was stopped (or had already exited). */
  readonly processStopped: boolean;
  /**
   * Present when the client ended with writes it had acknowledged but not uploaded: its cache was
   * kept for the next mount of the entry, or (a client that holds them in memory) they may be lost.
   */
  readonly writeBack?: WriteBackReport;
}

export type { ProbeResult } from "./mount-table.js";

/**
 * Variables passed down to clients from the agent's environment. Everything else stays behind, the
 * agent's `PATH` too: clients get {@link FuseMounterOptions.clientPath}.
 */
export const BASE_ENV_KEYS = [
  "HOME",
  "LANG",
  "LC_ALL",
  "TZ",
  "SSL_CERT_FILE",
  "SSL_CERT_DIR",
  "AWS_CA_BUNDLE",
  "HTTP_PROXY",
  "HTTPS_PROXY",
  "NO_PROXY",
  "http_proxy",
  "https_proxy",
  "no_proxy",
] as const;

/** The base environment: {@link BASE_ENV_KEYS} from `env`. */
export function defaultBaseEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of BASE_ENV_KEYS) {
    const v = env[k];
    if (v !== undefined) out[k] = v;
  }
  return out;
}

const CLIENT_LOG = "client.log";

interface Tracked {
  readonly client: ClientProcess;
  readonly stateDir: string;
  readonly mounter: MounterName;
  /** Set while this mounter unmounts it, so that the client's exit is not reported as a crash. */
  stopping: boolean;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The last `limit` bytes of a local file, or "" when it cannot be read. */
async function readTail(path: string, limit: number): Promise<string> {
  try {
    const fh = await open(path, "r");
    try {
      const size = (await fh.stat()).size;
      const length = Math.min(size, limit);
      const buf = Buffer.alloc(length);
      await fh.read(buf, 0, length, size - length);
      return buf.toString("utf8");
    } finally {
      await fh.close();
    }
  } catch {
    return "";
  }
}

/**
 * Writes a file that this call creates (O_EXCL), so that it never keeps an older file's mode or
 * owner: a file left from an earlier mount is removed and the creation tried once more. The mode is
 * set again on the new file, whatever the umask took away.
 */
function writeFresh(path: string, content: string, mode: number): void {
  let fd: number;
  try {
    fd = openSync(path, "wx", mode);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    rmSync(path, { force: true });
    fd = openSync(path, "wx", mode);
  }
  try {
    writeFileSync(fd, content);
    fchmodSync(fd, mode);
  } finally {
    closeSync(fd);
  }
}

/** The last lines of a client's output, short enough for a status or an Event. */
function lastLines(text: string, maxChars = 2000): string {
  const lines = text.trim().split("\n").slice(-20).join("\n");
  return lines.length > maxChars ? `…${lines.slice(-maxChars)}` : lines;
}

export class FuseMounter {
  private readonly exec: ProcessRunner;
  private readonly onClientExit: ((mountPoint: string) => void) | undefined;
  private readonly table: MountTable;
  private readonly mountIdAt: (path: string) => number | undefined;
  private readonly readyTimeoutMs: number;
  private readonly settleMs: number;
  private readonly pollMs: number;
  private readonly stagePollMs: number;
  private readonly readdirAttempts: number;
  private readonly stopGraceMs: number;
  private readonly uploadGraceMs: number;
  private readonly uploadPollMs: number;
  private readonly unmountTimeoutMs: number;
  private readonly probeTimeoutMs: number;
  private readonly tableMaxAgeMs: number;
  private readonly baseEnv: BaseEnv;
  private readonly root: string;
  private readonly programs: ProgramPaths;
  private readonly clientPath: string;
  private readonly log: Logger | undefined;
  private readonly mounts = new Map<string, Tracked>();
  /** Mount points with a mount being made. */
  private readonly inFlight = new Set<string>();

  constructor(opts: FuseMounterOptions) {
    this.root = opts.root;
    const programs: ProgramPaths = { ...DEFAULT_PROGRAMS, ...opts.programs };
    this.programs = programs;
    this.clientPath = opts.clientPath ?? DEFAULT_CLIENT_PATH;
    this.exec = opts.exec ?? {
      start: exec.start,
      unmount: (path, o) => exec.unmount(path, { ...o, programs }),
      moveMount: (source, target) => exec.moveMount(source, target, { programs }),
      detachMount: (mountRoot) => exec.detachMount(mountRoot, { programs }),
    };
    this.table = new MountTable(opts.readMountinfo);
    this.mountIdAt = opts.mountIdAt ?? mountIdAt;
    this.readyTimeoutMs = opts.readyTimeoutMs ?? 15_000;
    this.settleMs = opts.settleMs ?? 300;
    this.pollMs = opts.pollMs ?? 20;
    this.stagePollMs = opts.stagePollMs ?? Math.min(1, this.pollMs);
    this.readdirAttempts = opts.readdirAttempts ?? 3;
    this.stopGraceMs = opts.stopGraceMs ?? 2000;
    this.uploadGraceMs = opts.uploadGraceMs ?? 60_000;
    this.uploadPollMs = opts.uploadPollMs ?? 250;
    this.unmountTimeoutMs = opts.unmountTimeoutMs ?? 10_000;
    this.probeTimeoutMs = opts.probeTimeoutMs ?? 2000;
    this.tableMaxAgeMs = opts.tableMaxAgeMs ?? 1000;
    this.baseEnv = opts.baseEnv ?? defaultBaseEnv();
    this.log = opts.log;
    this.onClientExit = opts.onClientExit;
  }

  /** See {@link MountTable.read}. */
  mountinfo(maxAgeMs = 0, under?: string): Promise<readonly MountInfo[]> {
    return this.table.read(maxAgeMs, under);
  }

  /** The topmost mount on `mp` itself, if any. */
  private mountAt(mp: string, maxAgeMs: number): Promise<MountInfo | undefined> {
    return this.table.at(mp, maxAgeMs);
  }

  /**
   * Whether something is mounted on `path` (it lies in another mount than its parent), found
   * without reading the mount table.
   */
  private isMountPoint(path: string): boolean {
    const here = this.mountIdAt(path);
    return here !== undefined && here !== this.mountIdAt(dirname(path));
  }

  /** Marks every read of the mount table made so far as out of date. */
  private tableChanged(): void {
    this.table.changed();
  }

  /** PID of the client this mounter runs for `mountPoint`, while it runs. */
  pidOf(mountPoint: string): number | undefined {
    const t = this.mounts.get(mountPoint);
    return t !== undefined && t.client.exitStatus() === undefined ? t.client.pid : undefined;
  }

  /** Mount points with a client started by this mounter (running or not). */
  mountPoints(): string[] {
    return [...this.mounts.keys()];
  }

  /**
   * Mounts `req` with the named client and resolves when the mount is ready. Throws
   * `AppError("InvalidArgument")` for a bad request, `AppError("Conflict")` when something is
   * already mounted on the mount point, `AppError("Forbidden")` when the way to the mount point is
   * not safe (a symbolic link, a directory a pod could write to…; nothing is written or started
   * then), and `AppError("MountFailed")` when the client fails. `onStarted` is called as soon as
   * the client runs, before the mount is ready.
   */
  async mount(req: MountRequest, mounter: MounterName, onStarted?: () => void): Promise<MountResult> {
    const mp = req.mountPoint;
    const staging = stagingPathOf(this.root, mp);
    const cmd = buildMount(
      mounter,
      { ...req, mountPoint: staging },
      { baseEnv: this.baseEnv, program: this.programs[mounter], clientPath: this.clientPath },
    );
    if (this.isMountPoint(mp) || this.pidOf(mp) !== undefined) {
      throw new AppError("Conflict", `${mp} is already a mount point; unmount it before mounting again`);
    }
    // Two mounts of one mount point would share its staging directory. A second request comes when
    // an agent restarts while the first is still being made.
    if (this.inFlight.has(mp))
      throw new AppError("Conflict", `${mp} is being mounted already; try again once that mount is done`);
    this.inFlight.add(mp);
    try {
      return await this.mountNow(req, mounter, mp, staging, cmd, onStarted);
    } finally {
      this.inFlight.delete(mp);
    }
  }

  private async mountNow(
    req: MountRequest,
    mounter: MounterName,
    mp: string,
    staging: string,
    cmd: MountCommand,
    onStarted: (() => void) | undefined,
  ): Promise<MountResult> {
    const secrets = secretsOf(req.credentials);
    // Checked and held before anything is written or started, so that a refusal leaves nothing.
    const target = openMountPoint(this.root, mp);
    let started = Date.now();
    let client: ClientProcess;
    try {
      await this.prepare(req, cmd, staging);
      started = Date.now();
      client = await this.exec.start(cmd.command, cmd.argv, {
        env: cmd.env,
        logFile: `${req.stateDir}/${CLIENT_LOG}`,
        stderrLimit: 16 * 1024,
      });
    } catch (e) {
      closeSync(target);
      await rmdir(staging).catch(() => undefined);
      await this.removeState(req.stateDir);
      throw new AppError(
        "MountFailed",
        `${mounter} could not be started for ${describe(req)}: ${scrubSecrets(e instanceof Error ? e.message : String(e), secrets)}`,
        { cause: e },
      );
    }
    this.log?.debug({ mounter, mountPoint: mp, staging, pid: client.pid }, "client started");
    try {
      onStarted?.();
    } catch (e) {
      // The client runs and is waited for below either way; a caller's hook cannot orphan it.
      this.log?.warn({ mountPoint: mp, err: (e as Error).message }, "start hook failed");
    }
    let failure: string | undefined;
    let ready: { readyMs: number; fsType: string } | undefined;
    try {
      ready = await this.waitReady(mp, staging, target, cmd, client, started, req.listBeforePlacing === true);
    } catch (e) {
      failure = e instanceof Error ? e.message : String(e);
    } finally {
      closeSync(target);
    }
    this.tableChanged();
    if (ready === undefined) {
      const output = await this.abort(req, cmd, client);
      await this.clearStaging(staging);
      const shown = lastLines(scrubSecrets(output, secrets)) || "(no output)";
      const step = `${mounter} could not mount ${describe(req)}: ${scrubSecrets(failure ?? "unknown failure", secrets)}`;
      // The first line is what a user acts on; the client's own words follow for whoever digs.
      const d = diagnose(output, req.bucket, req.endpoint);
      throw new AppError(
        "MountFailed",
        d !== undefined
          ? `${d.cause}: ${d.fix}.\n${step}. Client output:\n${shown}`
          : `${step}. Client output:\n${shown}`,
      );
    }
    await rmdir(staging).catch(() => undefined);
    const tracked: Tracked = { client, stateDir: req.stateDir, mounter, stopping: false };
    this.mounts.set(mp, tracked);
    // A client that dies leaves an ENOTCONN mount behind; say so at once rather than at the next probe.
    void client.exited.then((status) => {
      if (this.mounts.get(mp) !== tracked || tracked.stopping) return;
      this.log?.warn({ mountPoint: mp, mounter, pid: client.pid, ...status }, "client exited while mounted");
      this.onClientExit?.(mp);
    });
    this.log?.info({ mounter, mountPoint: mp, pid: client.pid, ms: ready.readyMs }, "mounted");
    return { mountPoint: mp, mounter, pid: client.pid, readyMs: ready.readyMs, fsType: ready.fsType };
  }

  /**
   * Creates the state directory (0700), the mounter's files (0600), its cache dir and the staging
   * directory the client mounts on. All live in the agent's private state on the host's disk, never
   * under a FUSE mount, and are made synchronously: a handful of small metadata operations, each of
   * which would otherwise be a round trip through the thread pool that the client waits for (a
   * millisecond in all on a busy node). A mount left on the staging directory by an attempt whose
   * clean-up failed is removed first.
   */
  private async prepare(req: MountRequest, cmd: MountCommand, staging: string): Promise<void> {
    const stateDir = req.stateDir.replace(/\/+$/, "");
    for (const p of [...cmd.files.map((f) => f.path), ...(cmd.cacheDir !== undefined ? [cmd.cacheDir] : [])])
      if (!p.startsWith(`${stateDir}/`) || p.split("/").includes(".."))
        throw new AppError("Internal", `mounter path ${p} is outside the state directory`);
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    chmodSync(stateDir, 0o700);
    for (const f of cmd.files) {
      if (dirname(f.path) !== stateDir) mkdirSync(dirname(f.path), { recursive: true, mode: 0o700 });
      writeFresh(f.path, f.content, f.mode);
    }
    if (cmd.cacheDir !== undefined) mkdirSync(cmd.cacheDir, { recursive: true, mode: 0o700 });
    rmSync(`${stateDir}/${CLIENT_LOG}`, { force: true });
    if (this.isMountPoint(staging)) await this.clearStaging(staging);
    // Mode 0755 as the mount point has: s3fs shows the bucket's top directory with the mode of the
    // directory it mounted on.
    closeSync(openMountPoint(this.root, staging, 0o755));
  }

  /** Resolves with the readiness time, or throws an Error whose message says what was missing. */
  private async waitReady(
    mp: string,
    staging: string,
    target: number,
    cmd: MountCommand,
    client: ClientProcess,
    started: number,
    listBeforePlacing: boolean,
  ): Promise<{ readyMs: number; fsType: string }> {
    const deadline = started + this.readyTimeoutMs;
    const exitedEarly = (): string | undefined => {
      const s = client.exitStatus();
      if (s === undefined || (cmd.daemonizes && s.code === 0)) return undefined;
      return s.signal !== null
        ? `the client was killed by ${s.signal}`
        : `the client exited with code ${s.code}`;
    };
    const stillAlive = (): void => {
      const late = exitedEarly();
      if (late !== undefined) throw new Error(`${late} right after mounting`);
    };
    // The staging directory lies in the staging mount until the client's mount covers it. Its
    // mount id is polled (two small reads) rather than the whole mount table, which on a node with
    // hundreds of mounts is a large string each time, and many mounts start at once.
    const unmounted = this.mountIdAt(stagingDir(this.root));
    let staged: MountInfo | undefined;
    let settledMs: number | undefined;
    for (;;) {
      const early = exitedEarly();
      if (early !== undefined) throw new Error(`${early} before the mount was ready`);
      const now = this.mountIdAt(staging);
      const m = now !== undefined && now !== unmounted ? await this.mountAt(staging, 0) : undefined;
      if (m !== undefined && isFuse(m)) {
        if (listBeforePlacing) {
          const t = Date.now();
          await this.settle(client);
          settledMs = Date.now() - t;
          stillAlive();
          await this.listStaged(staging, deadline);
          stillAlive();
        }
        await this.place(m, staging, target, mp);
        staged = m;
        break;
      }
      if (Date.now() >= deadline)
        throw new Error(`the client's mount did not appear in mountinfo within ${this.readyTimeoutMs} ms`);
      await Promise.race([sleep(this.stagePollMs), client.exited]);
    }
    if (staged === undefined) throw new Error("the client's mount was not placed");
    let readdirFailures = 0;
    let lastReaddirError = "";
    for (;;) {
      const early = exitedEarly();
      if (early !== undefined) throw new Error(`${early} before the mount was ready`);
      // Mounts made at once share their polls' reads of the table.
      // Placed and checked in the table above; from here its mount id says it is still there.
      const m = this.mountIdAt(mp) === staged.mountId ? staged : undefined;
      if (m !== undefined) {
        try {
          // The listing comes after the settle time, not before: the pod sees the bucket as soon
          // as it is mounted, and a listing then (a LIST request, and for s3fs a HEAD per entry)
          // queues in front of the pod's own first reads on the same client and S3 endpoint.
          if (settledMs === undefined) {
            const t = Date.now();
            await this.settle(client);
            settledMs = Date.now() - t;
            stillAlive();
          }
          await withTimeout(readdir(mp), Math.max(deadline - Date.now(), 1), `readdir ${mp}`);
          const readyMs = Date.now() - started - settledMs;
          stillAlive();
          if (this.mountIdAt(mp) !== staged.mountId)
            throw new Error("the mount disappeared right after mounting");
          return { readyMs, fsType: m.fsType };
        } catch (e) {
          if (!(e as NodeJS.ErrnoException).code) throw e;
          readdirFailures++;
          lastReaddirError = errnoOf(e);
          if (lastReaddirError === "ETIMEDOUT")
            throw new Error(`the mount did not answer a directory listing within ${this.readyTimeoutMs} ms`);
          if (readdirFailures >= this.readdirAttempts)
            throw new Error(`listing the mount failed with ${lastReaddirError}`, { cause: e });
        }
      }
      if (Date.now() >= deadline) {
        throw new Error(
          m === undefined
            ? `${mp} did not appear in mountinfo within ${this.readyTimeoutMs} ms`
            : `the mount was not usable within ${this.readyTimeoutMs} ms`,
        );
      }
      await Promise.race([sleep(this.pollMs), client.exited]);
    }
  }

  /**
   * Moves the client's mount `staged` from the staging directory onto the mount point the agent
   * holds open (`target`), then checks in mountinfo that it is on `mp` itself, topmost, in the
   * mount that holds `mp`'s parent. It lands elsewhere only when the held directory was renamed
   * since the walk to it, which only a pod that can write to its own directory can do, and then
   * only inside that directory: the mount is detached at once through a descriptor of its root (no
   * path is looked up for that either) and the mount fails.
   */
  private async place(staged: MountInfo, staging: string, target: number, mp: string): Promise<void> {
    const mountRoot = openMountRoot(staging);
    try {
      await this.exec.moveMount(mountRoot, target);
      this.tableChanged();
      // Only the lines at or below the mount point are parsed: on a node with hundreds of mounts
      // the whole table, parsed for every mount, was most of the mounter's garbage.
      const here = await this.mountinfo(0, mp);
      const moved = here.find((m) => m.mountId === staged.mountId && m.mountPoint === mp);
      if (
        moved !== undefined &&
        moved.parentId === this.mountIdAt(dirname(mp)) &&
        findMount(here, mp)?.mountId === moved.mountId
      )
        return;
      const went = (await this.mountinfo(0)).find((m) => m.mountId === staged.mountId)?.mountPoint;
      await this.exec.detachMount(mountRoot);
      this.tableChanged();
      throw new Error(
        `the mount point ${mp} was renamed or replaced while the bucket was being mounted (the mount went to ${went ?? "an unknown place"}); it was detached`,
      );
    } finally {
      closeSync(mountRoot);
    }
  }

  /** Removes whatever a failed attempt left on its staging directory, and the directory. */
  private async clearStaging(staging: string): Promise<void> {
    try {
      await this.unmountAll(staging);
    } catch (e) {
      this.log?.warn({ staging, err: errnoOf(e) }, "cleanup of a staging directory");
    }
    await rmdir(staging).catch(() => undefined);
  }

  /**
   * Lists the client's mount on its staging directory, where no pod sees it: failures and time
   * limits as for the listing in place.
   */
  private async listStaged(staging: string, deadline: number): Promise<void> {
    for (let failures = 1; ; failures++) {
      try {
        await withTimeout(readdir(staging), Math.max(deadline - Date.now(), 1), `readdir ${staging}`);
        return;
      } catch (e) {
        if (!(e as NodeJS.ErrnoException).code) throw e;
        const err = errnoOf(e);
        if (err === "ETIMEDOUT")
          throw new Error(`the mount did not answer a directory listing within ${this.readyTimeoutMs} ms`);
        if (failures >= this.readdirAttempts)
          throw new Error(`listing the mount failed with ${err}`, { cause: e });
      }
      await sleep(this.pollMs);
    }
  }

  private async settle(client: ClientProcess): Promise<void> {
    if (this.settleMs <= 0) return;
    await Promise.race([sleep(this.settleMs), client.exited]);
  }

  /**
   * Stops the client, removes any mount it left, reads its output, removes the state dir (but for
   * a cache that may hold writes an earlier client acknowledged: this mount was to upload them).
   */
  private async abort(req: MountRequest, cmd: MountCommand, client: ClientProcess): Promise<string> {
    await client.stop(this.stopGraceMs);
    try {
      await this.unmountAll(req.mountPoint);
    } catch (e) {
      this.log?.warn({ mountPoint: req.mountPoint, err: errnoOf(e) }, "cleanup after a failed mount");
    }
    const ownLog = cmd.logFile !== undefined ? await readTail(cmd.logFile, 16 * 1024) : "";
    const output = [client.stderrTail(), ownLog]
      .map((t) => t.trim())
      .filter((t) => t !== "")
      .join("\n");
    await this.removeState(req.stateDir);
    return output;
  }

  /** Removes a state directory, keeping a cache that may hold unuploaded writes (logged). */
  private async removeState(stateDir: string): Promise<ReturnType<typeof removeStateDir>> {
    checkAbsolutePath("state directory", stateDir);
    if (stateDir.replace(/\/+$/, "") === "") return undefined;
    const kept = await removeStateDir(stateDir);
    if (kept !== undefined)
      this.log?.warn(
        { stateDir, dirty: kept.verdict.dirty.length, unsure: kept.verdict.unsure.length },
        "cache kept: it may hold writes not yet uploaded",
      );
    return kept;
  }

  /** Unmounts every mount stacked on `mp`. */
  private async unmountAll(mp: string): Promise<{ unmounted: boolean; lazy: boolean }> {
    let unmounted = false;
    let lazy = false;
    for (let i = 0; i < 8 && (await this.mountAt(mp, 0)) !== undefined; i++) {
      const r = await this.exec.unmount(mp, { lazy: true, timeoutMs: this.unmountTimeoutMs });
      this.tableChanged();
      unmounted ||= r.unmounted;
      lazy ||= r.lazy;
      if (!r.unmounted) break;
    }
    return { unmounted, lazy };
  }

  /**
   * Unmounts `mountPoint` (lazily when busy or stale), waits within the upload grace for the
   * client to finish uploading what it acknowledged, stops the client if this mounter started it,
   * and removes the state directory (this mounter's, or `opts.stateDir` for a mount it did not
   * make). A cache that may still hold writes not yet in S3 is kept for the next mount of the same
   * entry and reported in `writeBack`, as are writes a memory-only client may have lost.
   */
  async unmount(mountPoint: string, opts: { stateDir?: string } = {}): Promise<UnmountResult> {
    const tracked = this.mounts.get(mountPoint);
    if (tracked !== undefined) tracked.stopping = true;
    const stateDir = tracked?.stateDir ?? opts.stateDir;
    if (stateDir !== undefined) checkAbsolutePath("state directory", stateDir);
    // A client that died before the unmount has no uploads left to make: nothing to wait for. One
    // this mounter did not start (adopted after a restart) is waited for only while it answers.
    let end: ClientEnd = "unknown";
    let mounter = tracked?.mounter;
    let adoptedAlive = false;
    if (tracked === undefined) {
      const m = await this.mountAt(mountPoint, 0);
      mounter = MOUNTERS.find((n) => m?.fsType === `fuse.${n}`);
      adoptedAlive = m !== undefined && stateDir !== undefined && (await this.probe(mountPoint)) === "ok";
    } else if (tracked.client.exitStatus() !== undefined) {
      end = "died";
    }
    const { unmounted, lazy } = await this.unmountAll(mountPoint);
    const deadline = Date.now() + this.uploadGraceMs;
    let processStopped = false;
    if (tracked !== undefined) {
      if (end !== "died") end = (await this.awaitExit(tracked, lazy, deadline)) ? "exited" : "stopped";
      await tracked.client.stop(this.stopGraceMs);
      processStopped = true;
      this.mounts.delete(mountPoint);
    } else if (adoptedAlive) {
      await this.awaitCleanCache(stateDir!, deadline);
    }
    let writeBack: WriteBackReport | undefined;
    const kept = stateDir !== undefined ? await this.removeState(stateDir) : undefined;
    if (kept !== undefined)
      writeBack = {
        outcome: "kept",
        mounter,
        client: end,
        graceMs: this.uploadGraceMs,
        stateDir: kept.stateDir,
        cacheDir: kept.cacheDir,
        verdict: kept.verdict,
      };
    else if (
      mounter !== undefined &&
      (end === "stopped" || end === "died") &&
      mayHaveLostWrites(mounter, end)
    )
      writeBack = { outcome: "maybe-lost", mounter, client: end, graceMs: this.uploadGraceMs };
    if (writeBack === undefined) this.log?.info({ mountPoint, unmounted, lazy }, "unmounted");
    else
      this.log?.warn(
        { mountPoint, unmounted, lazy, client: end, writeBack: writeBack.outcome },
        "unmounted with writes not uploaded",
      );
    return { unmounted, lazy, processStopped, ...(writeBack !== undefined ? { writeBack } : {}) };
  }

  /**
   * Waits for an unmounted client to exit by itself, which it does once its uploads are done
   * (rclone finishes the uploads it has started): true when it did before `deadline`.
   */
  private async awaitExit(tracked: Tracked, lazy: boolean, deadline: number): Promise<boolean> {
    const client = tracked.client;
    const exited = client.exited.then(() => true);
    const cacheless = WRITE_BACK_MODE[tracked.mounter] !== "cache";
    if (!lazy || WRITE_BACK_MODE[tracked.mounter] === "memory")
      return Promise.race([exited, sleep(deadline - Date.now()).then(() => false)]);
    // Detached lazily, the client keeps serving the files a pod still has open and exits only once
    // they are closed, which may be never. It gets the stop grace, and beyond that only as long as
    // its cache still holds uploads to make. (A client that keeps unuploaded writes in memory
    // cannot be watched that way and gets the whole upload grace, above.)
    const minimum = Date.now() + this.stopGraceMs;
    for (;;) {
      if (client.exitStatus() !== undefined) return true;
      const now = Date.now();
      if (now >= deadline) return false;
      if (now >= minimum && (cacheless || !(await stateDirCache(tracked.stateDir)).verdict.pending))
        return false;
      await Promise.race([
        sleep(Math.min(now < minimum ? minimum - now : this.uploadPollMs, deadline - now)),
        client.exited,
      ]);
    }
  }

  /** Waits until the cache in `stateDir` holds nothing to upload, or `deadline`. */
  private async awaitCleanCache(stateDir: string, deadline: number): Promise<void> {
    while (Date.now() < deadline && (await stateDirCache(stateDir)).verdict.pending)
      await sleep(Math.min(this.uploadPollMs, Math.max(deadline - Date.now(), 0)));
  }

  /**
   * Health of a mount point: "absent" when nothing is mounted there, "stale" when a `stat` through
   * it fails (`ENOTCONN` after the client died, `EIO`) or hangs past the probe timeout, else "ok".
   */
  async probe(mountPoint: string): Promise<ProbeResult> {
    const tracked = this.mounts.get(mountPoint);
    return probeMount(this.table, mountPoint, {
      timeoutMs: this.probeTimeoutMs,
      // A resync probes every mount in a row: one copy of the table serves them all.
      tableMaxAgeMs: this.tableMaxAgeMs,
      clientExited: tracked !== undefined && tracked.client.exitStatus() !== undefined,
      ...(this.log !== undefined ? { log: this.log } : {}),
    });
  }

  /** Unmounts everything this mounter started (for shutdown and tests). */
  async unmountEverything(): Promise<void> {
    for (const mp of [...this.mounts.keys()]) await this.unmount(mp);
  }
}

function describe(req: MountRequest): string {
  return `bucket "${req.bucket}"${req.prefix !== "" ? ` prefix "${req.prefix}"` : ""} on ${req.mountPoint}`;
}
