/**
 * Temporary working directories that know who made them, so that a run which crashed (SIGKILL,
 * OOM, a CI timeout) can be cleaned up by the next one without touching a run still in progress.
 * A directory's owner is `pid:starttime` (proc(5) field 22): a pid alone can be reused.
 */
import { mkdtemp, readdir, readFile, realpath, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mountsUnder } from "../../agent/mount/mountinfo.js";
import { readMountinfo, unmountTree } from "./namespaces.js";

const OWNER_FILE = ".owner";

/** `pid:starttime` of `pid` (default this process), or undefined when it is not running. */
export async function ownerToken(pid = process.pid): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    // Fields after "(comm)" start at field 3; comm may contain spaces, so cut after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return `${pid}:${rest[19]}`;
  } catch {
    return undefined;
  }
}

/** True when the process named by an {@link ownerToken} is still the one running. */
export async function ownerAlive(token: string | undefined): Promise<boolean> {
  const pid = Number(token?.split(":")[0]);
  if (!Number.isInteger(pid) || pid <= 0) return false;
  return (await ownerToken(pid)) === token;
}

/** `mkdtemp(<tmpdir>/<prefix>XXXXXX)`, canonical, with this process recorded as its owner. */
export async function createWorkDir(prefix: string, parent = tmpdir()): Promise<string> {
  const dir = await realpath(await mkdtemp(join(parent, prefix)));
  await writeFile(join(dir, OWNER_FILE), `${(await ownerToken()) ?? ""}\n`);
  return dir;
}

/**
 * Removes a work directory: unmounts everything below it (and itself) deepest first, then deletes
 * it, but never while a mount remains (`rm -r` through a live FUSE mount deletes bucket objects).
 */
export async function removeWorkDir(dir: string): Promise<void> {
  await unmountTree(dir, { includeSelf: true });
  const left = mountsUnder(await readMountinfo(), dir);
  if (left.length > 0) throw new Error(`not removing ${dir}: still mounted: ${left[0]?.mountPoint}`);
  await rm(dir, { recursive: true, force: true });
}

/**
 * Removes the `<parent>/<prefix>*` work directories whose owner is gone (see
 * {@link removeWorkDir}). FUSE clients of their mounts exit once unmounted. Returns the paths.
 */
export async function cleanupStaleWorkDirs(prefix: string, parent = tmpdir()): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(parent).catch(() => [] as string[])) {
    if (!name.startsWith(prefix)) continue;
    const dir = join(parent, name);
    const owner = await readFile(join(dir, OWNER_FILE), "utf8").catch(() => undefined);
    // No owner file: not ours, or created before it was written; leave it.
    if (owner === undefined || (await ownerAlive(owner.trim()))) continue;
    await removeWorkDir(dir);
    removed.push(dir);
  }
  return removed;
}
