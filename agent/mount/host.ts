/**
 * What the agent does to the host's directories: at start-up, the root made a mount point with
 * shared propagation, as the kubelet does for its own directory, so that the FUSE mounts made below
 * it propagate to the containers' `HostToContainer` (rslave) views, and a private staging directory
 * for new mounts; before every mount, the walk to the mount point.
 *
 * Under the root nothing is trusted that a pod might have written. A pod whose host directory is
 * writable to it can put a symbolic link where a bucket is to be mounted, and mount(2) follows it:
 * the bucket would land anywhere, `/usr/local/sbin` included, first on the agent's `PATH`. So the
 * agent opens every component from the root to the mount point without following links
 * ({@link openMountPoint}) and holds the last one open. A FUSE client is never given that
 * directory's path, though: every client resolves its mount point again (libfuse 2 in s3fs calls
 * realpath(3) before mount(2); fusermount3, which rclone and GeeseFS use, looks the path up again
 * and rejects a `/proc/self/fd/N` name), and a pod could swap the directory for a link in between.
 * The client mounts on a staging directory in the agent's private state instead, a path no pod can
 * write to, and the agent moves the finished mount onto the directory it holds
 * (`agent/mount/exec.ts` `moveMount`). The kernel attaches it to that very directory: if a pod renamed it
 * meanwhile, the mount lands where it went, inside the pod's own directory, which
 * `agent/mount/fuse-mount.ts` sees in mountinfo and undoes.
 */
import { closeSync, constants, fstatSync, lstatSync, mkdirSync, openSync, readFileSync } from "node:fs";
import { mkdir, readdir, readFile, rmdir } from "node:fs/promises";
import { relative } from "node:path";
import { AppError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { agentDir, podsDir } from "../../shared/names.js";
import { run } from "./exec.js";
import { findMount, parseMountinfo, propagationOf } from "./mountinfo.js";
import { DEFAULT_PROGRAMS, type ProgramPaths } from "./mounters/programs.js";

async function mount(program: string, argv: string[]): Promise<void> {
  const r = await run(program, argv, { timeoutMs: 10_000 });
  if (r.code !== 0)
    throw new AppError(
      "Unavailable",
      `mount ${argv.join(" ")} failed: ${r.stderr.trim()}; the agent needs CAP_SYS_ADMIN (a privileged container)`,
    );
}

/**
 * Creates the root and makes it a shared mount point, then prepares the staging directory
 * ({@link ensurePrivateStaging}). Returns what it had to do.
 */
export async function ensureSharedRoot(
  root: string,
  log: Logger,
  programs: Pick<ProgramPaths, "mount"> = DEFAULT_PROGRAMS,
): Promise<string[]> {
  const done: string[] = [];
  await mkdir(podsDir(root), { recursive: true, mode: 0o755 });
  await mkdir(agentDir(root), { recursive: true, mode: 0o700 });
  let infos = parseMountinfo(await readFile("/proc/self/mountinfo", "utf8"));
  if (findMount(infos, root) === undefined) {
    await mount(programs.mount, ["--bind", root, root]);
    done.push("bind");
    infos = parseMountinfo(await readFile("/proc/self/mountinfo", "utf8"));
  }
  const rec = findMount(infos, root);
  if (rec === undefined || propagationOf(rec) !== "shared") {
    await mount(programs.mount, ["--make-rshared", root]);
    done.push("make-rshared");
  }
  if (done.length > 0) log.info({ root, done }, "root made a shared mount point");
  done.push(...(await ensurePrivateStaging(root, log, programs)));
  return done;
}

/** Where FUSE clients mount before their mount is moved into place: `<root>/agent/staging`. */
export function stagingDir(root: string): string {
  return `${agentDir(root)}/staging`;
}

/**
 * The staging directory for the mount that goes to `mountPoint` (below `root`): the mount point's
 * path below the root with `/` turned into `.`, e.g. `<root>/agent/staging/pods.<id>.<name>`.
 */
export function stagingPathOf(root: string, mountPoint: string): string {
  const rel = relative(root, mountPoint);
  if (rel === "" || rel.startsWith("..") || rel.startsWith("/"))
    throw new AppError("Internal", `${mountPoint} is not below the root ${root}`);
  return `${stagingDir(root)}/${rel.split("/").join(".")}`;
}

/**
 * Makes the staging directory (0700) a mount point of its own with private propagation: the kernel
 * moves a mount only when its parent mount is not shared, and the root is. Empty directories left
 * by an agent that stopped halfway through a mount are removed. Returns what it had to do.
 */
export async function ensurePrivateStaging(
  root: string,
  log?: Logger,
  programs: Pick<ProgramPaths, "mount"> = DEFAULT_PROGRAMS,
): Promise<string[]> {
  const dir = stagingDir(root);
  const done: string[] = [];
  await mkdir(dir, { recursive: true, mode: 0o700 });
  let infos = parseMountinfo(await readFile("/proc/self/mountinfo", "utf8"));
  if (findMount(infos, dir) === undefined) {
    await mount(programs.mount, ["--bind", dir, dir]);
    done.push("staging-bind");
    infos = parseMountinfo(await readFile("/proc/self/mountinfo", "utf8"));
  }
  const rec = findMount(infos, dir);
  if (rec === undefined || propagationOf(rec) !== "private") {
    await mount(programs.mount, ["--make-private", dir]);
    done.push("staging-private");
  }
  for (const name of await readdir(dir)) await rmdir(`${dir}/${name}`).catch(() => undefined);
  if (done.length > 0) log?.info({ dir, done }, "staging directory made a private mount point");
  return done;
}

// Linux's O_PATH on the architectures Node runs on; node:fs does not export it. A descriptor opened
// with it names a place in the tree without opening the file there: no FUSE request, even when a
// client's mount sits on it.
const O_PATH = 0o10000000;
const WALK_FLAGS = O_PATH | constants.O_DIRECTORY | constants.O_NOFOLLOW;

function refuse(path: string, why: string): AppError {
  return new AppError("Forbidden", `${path} ${why}; nothing is mounted`);
}

/** For a message only: whether `name` is a symbolic link itself (`lstat` does not follow it). */
function isLink(name: string): boolean {
  try {
    return lstatSync(name).isSymbolicLink();
  } catch {
    return false;
  }
}

/** The mount a descriptor's file is on (`mnt_id` in `/proc/self/fdinfo`), read without touching it. */
function mountIdOf(fd: number): number {
  const m = /^mnt_id:\s*(\d+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"));
  if (m === null) throw new AppError("Internal", `no mnt_id in /proc/self/fdinfo/${fd}`);
  return Number(m[1]);
}

/**
 * Opens `name` (a path, or `/proc/self/fd/<parent>/<component>`) without following a symbolic link
 * in its last component, and checks that it is a directory owned by root that neither group nor
 * others may write to; `shown` is its path for the message. Returns an `O_PATH` descriptor.
 */
function openChecked(name: string, shown: string, parentMount?: number): number {
  let fd: number;
  try {
    fd = openSync(name, WALK_FLAGS);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // With O_PATH, O_NOFOLLOW opens a link itself, which O_DIRECTORY then refuses as ENOTDIR.
    if (code === "ELOOP" || (code === "ENOTDIR" && isLink(name))) throw refuse(shown, "is a symbolic link");
    if (code === "ENOTDIR") throw refuse(shown, "is not a directory");
    if (code === "ENOENT") throw refuse(shown, "does not exist");
    throw new AppError("Internal", `cannot open ${shown}: ${code ?? String(e)}`, { cause: e });
  }
  try {
    // Something mounted there already: a stat would ask its file system (a FUSE client, which may
    // not answer), and it is no place for a new mount anyway.
    if (parentMount !== undefined && mountIdOf(fd) !== parentMount)
      throw new AppError("Conflict", `${shown} is already a mount point; nothing is mounted`);
    const st = fstatSync(fd);
    if (!st.isDirectory()) throw refuse(shown, "is not a directory");
    if (st.uid !== 0) throw refuse(shown, `is owned by uid ${st.uid}, not root`);
    if ((st.mode & 0o022) !== 0)
      throw refuse(shown, `is writable by group or others (mode ${(st.mode & 0o7777).toString(8)})`);
    return fd;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

/**
 * Walks from `root` to `path` (below it) one component at a time, each opened through the
 * descriptor of its parent (`/proc/self/fd/<parent>/<name>`) without following a symbolic link, and
 * checks each, the root included, to be a real directory owned by root and not writable by group or
 * others. The last component is created (`mode`, 0755 by default) when missing; when it exists it
 * must pass the same checks and not be a mount point already. Returns an `O_PATH` descriptor of the
 * last component, for the caller to close. Throws `AppError("Forbidden")` naming the component and
 * the reason (or `"Conflict"` for a mount point); nothing is created then but, possibly, the last
 * component. Synchronous: a handful of metadata operations on the host's own file system.
 */
export function openMountPoint(root: string, path: string, mode = 0o755): number {
  const rel = relative(root, path);
  if (rel === "" || rel.startsWith("..") || rel.startsWith("/"))
    throw new AppError("Internal", `${path} is not below the root ${root}`);
  const parts = rel.split("/");
  let fd = openChecked(root, root);
  try {
    let at = root;
    for (const [i, part] of parts.entries()) {
      at = `${at}/${part}`;
      const name = `/proc/self/fd/${fd}/${part}`;
      const last = i === parts.length - 1;
      if (last) {
        try {
          mkdirSync(name, { mode });
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
        }
      }
      const next = openChecked(name, at, last ? mountIdOf(fd) : undefined);
      closeSync(fd);
      fd = next;
    }
    return fd;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

/**
 * An `O_PATH` descriptor of the mount on `path`, a staging directory only the agent writes to:
 * after a client mounted there, it names that mount's root wherever the mount is moved.
 */
export function openMountRoot(path: string): number {
  return openSync(path, WALK_FLAGS);
}

/**
 * The id of the mount that `path` lies in (`mnt_id`), found without following a link in its last
 * component and without asking any file system: a directory with a mount on it reads as the
 * mount's id, so this tells in two small reads whether something was mounted there. Undefined when
 * `path` cannot be opened.
 */
export function mountIdAt(path: string): number | undefined {
  let fd: number;
  try {
    fd = openSync(path, O_PATH | constants.O_NOFOLLOW);
  } catch {
    return undefined;
  }
  try {
    return mountIdOf(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Makes directory `path` when its parent exists, and says whether `path` is there now (made, or
 * found: anything in the way counts). A plain mkdir never enters a mount on its last component: it
 * stops at EEXIST, so even a stale FUSE mount there cannot block it, and it can be synchronous. A
 * missing parent gives false; the recursive mkdir that makes parents also stats what exists, which
 * could wait on a FUSE client, so the caller decides how to run that one.
 */
export function makeDirAt(path: string, mode: number): boolean {
  try {
    mkdirSync(path, { mode });
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EEXIST") return true;
    if (code === "ENOENT") return false;
    throw e;
  }
}

/**
 * Removes the empty directory `path` (below `root`), reaching its parent without following a
 * symbolic link on the way, as {@link openMountPoint} does; `rmdir` itself never follows one in the
 * last component. Rejects with the errno of `rmdir` (`ENOTEMPTY`, `EBUSY` for a mount point,
 * `ENOTDIR` for a link, `ENOENT`) or `AppError("Forbidden")` for an unsafe parent.
 */
export async function removeEmptyDir(root: string, path: string): Promise<void> {
  const rel = relative(root, path);
  if (rel === "" || rel.startsWith("..") || rel.startsWith("/"))
    throw new AppError("Internal", `${path} is not below the root ${root}`);
  const parts = rel.split("/");
  const last = parts.pop()!;
  let fd = openChecked(root, root);
  try {
    let at = root;
    for (const part of parts) {
      at = `${at}/${part}`;
      const next = openChecked(`/proc/self/fd/${fd}/${part}`, at);
      closeSync(fd);
      fd = next;
    }
    await rmdir(`/proc/self/fd/${fd}/${last}`);
  } finally {
    closeSync(fd);
  }
}
