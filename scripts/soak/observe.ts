/**
 * How the soak looks at the machine without ever touching a FUSE mount from its own event loop: a
 * read through a dead or hung mount blocks the thread that makes it, so everything that goes
 * through one (`stat`, `cat`) runs as a child process with a timeout. Everything else here reads
 * procfs, the pod files and the agent's private state, which are local files.
 */
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { run } from "../../agent/mount/exec.js";
import { stateDirCache, type KeptCache } from "../../agent/mount/records.js";
import { isFuse, mountsUnder, type MountInfo } from "../../agent/mount/mountinfo.js";
import { readMountinfo } from "../lib/namespaces.js";
import { ANNOTATIONS } from "../../shared/names.js";
import type { RecordedSpec } from "./catalog.js";

export { readMountinfo };

/** FUSE mounts strictly below `dir`. */
export function fuseBelow(infos: readonly MountInfo[], dir: string): MountInfo[] {
  return mountsUnder(infos, dir).filter((m) => m.mountPoint !== dir && isFuse(m));
}

/** Every mount strictly below `dir`, FUSE or not. */
export function mountsBelow(infos: readonly MountInfo[], dir: string): MountInfo[] {
  return mountsUnder(infos, dir).filter((m) => m.mountPoint !== dir);
}

/** The `dynamic-volumes/buckets` value in a pod file; undefined when absent, null when unreadable. */
export async function readBucketsAnnotation(file: string): Promise<string | undefined | null> {
  try {
    const pod = JSON.parse(await readFile(file, "utf8")) as {
      metadata?: { annotations?: Record<string, string> };
    };
    return pod.metadata?.annotations?.[ANNOTATIONS.buckets];
  } catch {
    return null;
  }
}

export async function readRecord(root: string, id: string, name: string): Promise<RecordedSpec | undefined> {
  try {
    return JSON.parse(
      await readFile(join(root, "agent", "mounts", id, name, "spec.json"), "utf8"),
    ) as RecordedSpec;
  } catch {
    return undefined;
  }
}

/**
 * The agent's state directories of pod `id` whose caches may hold writes not yet in S3 (kept by
 * the agent for the next mount, or for an operator when the pod is gone), and how many others.
 */
export async function keptCaches(root: string, id: string): Promise<{ kept: KeptCache[]; others: number }> {
  const kept: KeptCache[] = [];
  let others = 0;
  for (const name of await listDir(join(root, "agent", "mounts", id))) {
    const k = await stateDirCache(join(root, "agent", "mounts", id, name));
    if (k.verdict.pending) kept.push(k);
    else others++;
  }
  return { kept, others };
}

export async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

export async function listDir(path: string): Promise<string[]> {
  return readdir(path).catch(() => [] as string[]);
}

/** A running FUSE client: its pid, program and the mount point named in its argv. */
export interface FuseProcess {
  readonly pid: number;
  readonly comm: string;
  readonly mountPoint: string | undefined;
  readonly args: readonly string[];
}

const FUSE_COMMS = new Set(["s3fs", "rclone"]);

/**
 * The pod mount point a client's argument stands for: the agent starts each client on a staging
 * directory, `<root>/agent/staging/pods.<id>.<name>` (`stagingPathOf` in agent/mount/host.ts), and moves
 * the finished mount to `<root>/pods/<id>/<name>`. Any other argument stands for itself.
 */
export function servedPath(arg: string): string {
  const m = /^(.*)\/agent\/staging\/pods\.([^./]+)\.([^./]+)$/.exec(arg);
  return m === null ? arg : `${m[1]}/pods/${m[2]}/${m[3]}`;
}

/**
 * FUSE clients (s3fs, rclone) whose argv names a path below `dir`, or the staging directory of a
 * mount point below it; zombies excluded.
 */
export async function fuseProcesses(dir: string): Promise<FuseProcess[]> {
  const out: FuseProcess[] = [];
  for (const entry of await listDir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const comm = (await readFile(`/proc/${entry}/comm`, "utf8").catch(() => "")).trim();
    if (!FUSE_COMMS.has(comm)) continue;
    const statLine = await readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
    if (statLine === "" || statLine.slice(statLine.lastIndexOf(")") + 2).startsWith("Z")) continue;
    const args = (await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "")).split("\0");
    const paths = args.map(servedPath);
    if (!paths.some((a) => a.includes(`${dir}/`))) continue;
    out.push({ pid: Number(entry), comm, mountPoint: paths.find((a) => a.startsWith(`${dir}/`)), args });
  }
  return out;
}

export interface ProcessStats {
  readonly fds: number;
  readonly rssKiB: number;
}

/** Open descriptors and resident memory of `pid`, or undefined when it is gone. */
export async function processStats(pid: number): Promise<ProcessStats | undefined> {
  try {
    const fds = (await readdir(`/proc/${pid}/fd`)).length;
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const rss = /VmRSS:\s+(\d+)\s+kB/.exec(status);
    return { fds, rssKiB: Number(rss?.[1] ?? 0) };
  } catch {
    return undefined;
  }
}

/** Outcome of a probe through a mount, from a child process. */
export type Probe = { ok: true; text: string } | { ok: false; error: string };

const ERRNO_TEXT: ReadonlyArray<[RegExp, string]> = [
  [/Transport endpoint is not connected/i, "ENOTCONN"],
  [/Input\/output error/i, "EIO"],
  [/No such file or directory/i, "ENOENT"],
  [/Permission denied/i, "EACCES"],
  [/Software caused connection abort/i, "ECONNABORTED"],
];

function errorOf(stderr: string, timedOut: boolean, code: number | null): string {
  if (timedOut) return "TIMEOUT";
  for (const [re, name] of ERRNO_TEXT) if (re.test(stderr)) return name;
  return stderr.trim().split("\n")[0]?.slice(0, 120) || `exit ${code}`;
}

/** `cat path` in a child process (from the host, so `/proc/<pid>/root/...` reaches a container's view). */
export async function catFile(path: string, timeoutMs = 5000): Promise<Probe> {
  const r = await run("cat", [path], { timeoutMs, killGraceMs: 200 });
  if (r.code === 0 && !r.timedOut) return { ok: true, text: r.stdout };
  return { ok: false, error: errorOf(r.stderr, r.timedOut, r.code) };
}

/** `stat path` in a child process: "ENOTCONN" for a dead FUSE client's mount. */
export async function statPath(path: string, timeoutMs = 5000): Promise<Probe> {
  const r = await run("stat", ["-c", "%i", path], { timeoutMs, killGraceMs: 200 });
  if (r.code === 0 && !r.timedOut) return { ok: true, text: r.stdout };
  return { ok: false, error: errorOf(r.stderr, r.timedOut, r.code) };
}
