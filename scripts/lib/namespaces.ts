/**
 * Mount-namespace plumbing for the local demo and the end-to-end tests (root only): a shared host
 * directory, a process in a mount namespace that behaves like a Kubernetes `Bidirectional` volume
 * of that directory, and a deepest-first unmount of a whole tree. Every command runs through
 * `agent/exec` (argv arrays, never a shell).
 *
 * The recipe, checked by test/e2e/harness.test.ts:
 *
 *     mount --bind ROOT ROOT; mount --make-rshared ROOT        # host side, once
 *     unshare -m --propagation unchanged -- CMD...              # the agent's namespace
 *
 * `--propagation unchanged` copies the host's mount tree *with* its propagation, so the namespace's
 * ROOT is a peer of the host's ROOT (same `shared:N` group) and a FUSE mount made there appears on
 * the host and, through the pods' `rslave` binds, inside running containers: the mounter's
 * namespace. `--propagation slave` receives the host's mounts and sends none back, as Kubernetes'
 * `HostToContainer` does: the agent's namespace. `unshare`'s default (`private`, i.e. plain
 * `unshare -m`) cuts the link both ways: a negative control.
 */
import { readFile, readlink, realpath } from "node:fs/promises";
import { run, start, type Env, type ExitStatus } from "../../agent/mount/exec.js";
import {
  findMount,
  isFuse,
  mountsUnder,
  parseMountinfo,
  propagationOf,
  type MountInfo,
  type Propagation,
} from "../../agent/mount/mountinfo.js";

const COMMAND_TIMEOUT_MS = 10_000;

/** Parsed `/proc/<pid>/mountinfo`: the mount table as that process's namespace sees it. */
export async function readMountinfo(pid: number | "self" = "self"): Promise<MountInfo[]> {
  return parseMountinfo(await readFile(`/proc/${pid}/mountinfo`, "utf8"));
}

/** Runs a short command; throws with its stderr when it fails or times out. */
async function must(cmd: string, argv: readonly string[]): Promise<void> {
  const r = await run(cmd, argv, { timeoutMs: COMMAND_TIMEOUT_MS });
  if (r.code !== 0 || r.timedOut) {
    const why = r.timedOut ? `timed out after ${COMMAND_TIMEOUT_MS} ms` : `exit ${r.code ?? r.signal}`;
    throw new Error(`${cmd} ${argv.join(" ")}: ${why}: ${r.stderr.trim()}`);
  }
}

/** Handle on a directory made a shared mount point by {@link ensureSharedMount}. */
export interface SharedMount {
  /** The canonical path (mountinfo only knows canonical paths). */
  readonly dir: string;
  /** True when `dir` was not a mount point and a bind of it onto itself was created. */
  readonly createdBind: boolean;
  /** Propagation of the mount at `dir` before; undefined when there was none. */
  readonly previous: Propagation | undefined;
  /**
   * Undoes {@link ensureSharedMount}: when the bind was created here, unmounts whatever is still
   * below `dir` (deepest first) and then the bind itself; otherwise makes `dir` private again if
   * it was private before. Idempotent.
   */
  undo(): Promise<void>;
}

/**
 * Makes `dir` a shared mount point, as the kubelet does for its own directory and the agent must
 * do for its root: `mount --bind dir dir` when `dir` is not a mount point yet (propagation is a
 * property of mounts, not of directories), then `mount --make-rshared dir`. Needed here because
 * `/` is private on these machines; on a systemd host it is a no-op in effect.
 */
export async function ensureSharedMount(path: string): Promise<SharedMount> {
  const dir = await realpath(path);
  const before = findMount(await readMountinfo(), dir);
  const createdBind = before === undefined;
  if (createdBind) await must("mount", ["--bind", dir, dir]);
  await must("mount", ["--make-rshared", dir]);
  const previous = before !== undefined ? propagationOf(before) : undefined;
  let undone = false;
  return {
    dir,
    createdBind,
    previous,
    async undo() {
      if (undone) return;
      undone = true;
      if (createdBind) await unmountTree(dir, { includeSelf: true });
      else if (previous === "private") await must("mount", ["--make-private", dir]);
    },
  };
}

/** How one mount was removed by {@link unmountTree}. */
export interface UnmountedMount {
  readonly mountPoint: string;
  readonly fsType: string;
  readonly method: "umount" | "umount -l" | "fusermount3 -uz";
}

export interface UnmountTreeOptions {
  /** Also unmount a mount at `dir` itself. Default false: only what lies below it. */
  readonly includeSelf?: boolean;
}

/**
 * Unmounts everything mounted below `dir`, deepest first (a parent is busy while it has children),
 * newest first on a stacked mount point. Each mount gets `umount`, then a lazy `umount -l`, then
 * for FUSE `fusermount3 -uz` (a client killed with -9 leaves an ENOTCONN mount that is busy
 * while any process still has its cwd inside). Repeats until mountinfo shows nothing left, because
 * one unmount can propagate and remove others. Throws when mounts remain after that.
 */
export async function unmountTree(path: string, opts: UnmountTreeOptions = {}): Promise<UnmountedMount[]> {
  const dir = await realpath(path).catch(() => path);
  const done: UnmountedMount[] = [];
  const pending = async (): Promise<MountInfo[]> =>
    mountsUnder(await readMountinfo(), dir).filter((m) => opts.includeSelf === true || m.mountPoint !== dir);
  for (let pass = 0; pass < 8; pass++) {
    const mounts = await pending();
    if (mounts.length === 0) return done;
    for (const m of mounts) {
      const method = await unmountOne(m);
      if (method !== undefined) done.push({ mountPoint: m.mountPoint, fsType: m.fsType, method });
    }
  }
  const left = await pending();
  if (left.length === 0) return done;
  throw new Error(`could not unmount under ${dir}: ${left.map((m) => m.mountPoint).join(", ")}`);
}

async function unmountOne(m: MountInfo): Promise<UnmountedMount["method"] | undefined> {
  // `-c` (no canonicalize): mountinfo paths are canonical already, and canonicalizing would stat
  // the mount point, which hangs or fails with ENOTCONN on a dead FUSE mount.
  const attempts: [UnmountedMount["method"], string, string[]][] = [
    ["umount", "umount", ["-c", m.mountPoint]],
    ["umount -l", "umount", ["-c", "-l", m.mountPoint]],
  ];
  if (isFuse(m)) attempts.push(["fusermount3 -uz", "fusermount3", ["-uz", m.mountPoint]]);
  for (const [method, cmd, argv] of attempts) {
    const r = await run(cmd, argv, { timeoutMs: COMMAND_TIMEOUT_MS }).catch(() => undefined);
    if (r !== undefined && r.code === 0 && !r.timedOut) return method;
  }
  // Already gone (removed by propagation or with its parent): the next pass re-reads mountinfo.
  return undefined;
}

/** `unshare --propagation` modes worth naming: see the module comment. */
export type NamespacePropagation = "unchanged" | "slave" | "private";

export interface MountNamespaceOptions {
  /** The command and its arguments, run through `unshare` (no shell). */
  readonly argv: readonly string[];
  /** stdout and stderr go to this file (appended, 0600): a file never blocks a daemon the way a pipe can. */
  readonly logFile: string;
  /**
   * `unchanged` (default): Kubernetes `Bidirectional`, `unshare -m --propagation unchanged`.
   * `slave`: Kubernetes `HostToContainer`, `unshare -m --propagation slave`.
   * `private`: plain `unshare -m`, nothing propagates in or out (a negative control).
   */
  readonly propagation?: NamespacePropagation;
  /**
   * Directories whose mount must be a peer of the host's (same `shared:N` group) in the new
   * namespace; checked once it exists, and the process is killed and an error thrown otherwise.
   * Only meaningful with `unchanged`. Default none.
   */
  readonly bidirectional?: readonly string[];
  /** The complete environment. Default this process's. */
  readonly env?: Env;
  readonly cwd?: string;
  /** How long to wait for the namespace to exist. Default 5000 ms. */
  readonly readyTimeoutMs?: number;
}

/** A long-running process in its own mount namespace. */
export interface NamespacedProcess {
  readonly pid: number;
  readonly logFile: string;
  /** Resolves once, when the process has exited. Never rejects. */
  readonly exited: Promise<ExitStatus>;
  /** The exit status once known, else undefined (still running). */
  exitStatus(): ExitStatus | undefined;
  /** Signals the process group (default SIGTERM). False when it has already exited. */
  kill(signal?: NodeJS.Signals): boolean;
  /** SIGTERM, then SIGKILL after `graceMs` (default 2000); resolves when it has exited. */
  stop(graceMs?: number): Promise<ExitStatus>;
  /** Everything the process has written so far. */
  log(): Promise<string>;
  /** The mount table as the namespace sees it. */
  mountinfo(): Promise<MountInfo[]>;
  /** `path` as the namespace sees it, reachable from the host (`/proc/<pid>/root/<path>`), no nsenter needed. */
  pathInside(path: string): string;
}

/**
 * Starts `argv` in a new mount namespace (see the module comment for the recipe). Resolves once
 * the process runs in its own namespace and, for `bidirectional` directories, once their peer
 * groups are checked; rejects with the process's log when it exits early or a check fails.
 */
export async function startInMountNamespace(opts: MountNamespaceOptions): Promise<NamespacedProcess> {
  if (opts.argv.length === 0) throw new Error("startInMountNamespace: argv is empty");
  const mode = opts.propagation ?? "unchanged";
  const unshareArgs = mode === "private" ? ["-m"] : ["-m", "--propagation", mode];
  const child = await start("unshare", [...unshareArgs, "--", ...opts.argv], {
    env: opts.env ?? process.env,
    logFile: opts.logFile,
    ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
  });
  const handle: NamespacedProcess = {
    pid: child.pid,
    logFile: opts.logFile,
    exited: child.exited,
    exitStatus: () => child.exitStatus(),
    kill: (signal) => child.kill(signal),
    stop: (graceMs) => child.stop(graceMs),
    log: () => readFile(opts.logFile, "utf8").catch(() => ""),
    mountinfo: () => readMountinfo(child.pid),
    pathInside: (path) => `/proc/${child.pid}/root${path.startsWith("/") ? "" : "/"}${path}`,
  };
  try {
    await waitForOwnNamespace(handle, opts.readyTimeoutMs ?? 5000);
    for (const dir of opts.bidirectional ?? []) await checkPeer(handle, await realpath(dir));
  } catch (e) {
    await handle.stop(500);
    const log = (await handle.log()).trim();
    throw new Error(`${(e as Error).message}${log ? `\n--- ${opts.logFile}:\n${log}` : ""}`, { cause: e });
  }
  return handle;
}

async function waitForOwnNamespace(p: NamespacedProcess, timeoutMs: number): Promise<void> {
  // unshare(2) then execvp in the same pid: the namespace exists once the link differs from ours.
  const ours = await readlink("/proc/self/ns/mnt");
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = p.exitStatus();
    if (status !== undefined) {
      throw new Error(`${p.pid} exited (${status.code ?? status.signal}) before its namespace was ready`);
    }
    const theirs = await readlink(`/proc/${p.pid}/ns/mnt`).catch(() => ours);
    if (theirs !== ours) return;
    if (Date.now() > deadline) throw new Error(`no new mount namespace for ${p.pid} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

async function checkPeer(p: NamespacedProcess, dir: string): Promise<void> {
  const host = findMount(await readMountinfo(), dir);
  const inside = findMount(await p.mountinfo(), dir);
  if (host?.sharedGroup === undefined) {
    throw new Error(`${dir} is not a shared mount on the host: call ensureSharedMount(${dir}) first`);
  }
  if (inside?.sharedGroup !== host.sharedGroup) {
    throw new Error(
      `${dir} in the namespace of ${p.pid} is not a peer of the host's (shared:${host.sharedGroup}, ` +
        `inside: ${inside?.optionalFields.join(" ") || "private"}): mounts made there would not propagate`,
    );
  }
}
