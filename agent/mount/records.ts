/**
 * The record of each mount, kept in the mounter's private state so that the agent, after a restart it
 * can tell a healthy mount it may adopt from one made from an older spec. One directory per mount,
 * `<root>/agent/mounts/<id>/<name>/`, which also holds the client's credential files and cache.
 *
 * A directory whose client cache may hold writes not yet in S3 is never removed whole (see
 * `agent/mount/write-back.ts`): its cache stays where the next mount of the same pod and name finds it,
 * with the record (which bucket, prefix and Secret it was) and the client's log; everything else,
 * credential files first, goes. When the pod is gone, the directory stays until an operator has
 * uploaded or discarded the writes (docs/troubleshooting.md).
 */
import { mkdir, readFile, readdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { agentDir } from "../../shared/names.js";
import {
  CACHE_DIR_NAME,
  cacheVerdict,
  RCLONE_DATA_DIR,
  RCLONE_META_DIR,
  type CacheFile,
  type CacheListing,
  type CacheVerdict,
} from "./write-back.js";

/** Entries of a state directory that stay with a cache that may hold unuploaded writes. */
const KEPT_WITH_CACHE = new Set([CACHE_DIR_NAME, "spec.json", "client.log"]);

/** A walk of a cache stops after this many files and then counts as incomplete (so pending). */
const MAX_CACHE_FILES = 100_000;

/** A state directory kept because its cache may hold writes not yet in S3. */
export interface KeptCache {
  readonly stateDir: string;
  readonly cacheDir: string;
  readonly verdict: CacheVerdict;
}

/**
 * Lists the files of the client cache in `cacheDir` (rclone's data and metadata trees), reading
 * every metadata file. A missing cache is an empty, complete listing; any other error makes the
 * listing incomplete.
 */
export async function readCache(cacheDir: string): Promise<CacheListing> {
  const files: CacheFile[] = [];
  let complete = true;
  const walk = async (dir: string, rel: string, tree: CacheFile["tree"]): Promise<void> => {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== "ENOENT" && code !== "ENOTDIR") complete = false;
      return;
    }
    for (const entry of entries) {
      if (files.length >= MAX_CACHE_FILES) {
        complete = false;
        return;
      }
      const path = rel === "" ? entry.name : `${rel}/${entry.name}`;
      if (entry.isDirectory()) {
        await walk(join(dir, entry.name), path, tree);
      } else if (tree === "meta") {
        const text = await readFile(join(dir, entry.name), "utf8").catch(() => undefined);
        files.push(text === undefined ? { path, tree } : { path, tree, text });
      } else {
        files.push({ path, tree });
      }
    }
  };
  await walk(join(cacheDir, RCLONE_META_DIR), "", "meta");
  await walk(join(cacheDir, RCLONE_DATA_DIR), "", "data");
  return { files, complete };
}

/** The verdict on the cache of the state directory `stateDir`. */
export async function stateDirCache(stateDir: string): Promise<KeptCache> {
  const cacheDir = join(stateDir, CACHE_DIR_NAME);
  return { stateDir, cacheDir, verdict: cacheVerdict(await readCache(cacheDir)) };
}

/**
 * Removes a mount's private directory, unless its cache may hold writes not yet in S3: then only
 * the cache, the record and the client's log stay (credential files go), and the kept cache is
 * returned.
 */
export async function removeStateDir(stateDir: string): Promise<KeptCache | undefined> {
  const kept = await stateDirCache(stateDir);
  if (!kept.verdict.pending) {
    await rm(stateDir, { recursive: true, force: true });
    return undefined;
  }
  const names = await readdir(stateDir).catch(() => [] as string[]);
  for (const n of names)
    if (!KEPT_WITH_CACHE.has(n)) await rm(join(stateDir, n), { recursive: true, force: true });
  return kept;
}

/** What the agent recorded about a mount (its spec); the mounter keeps it without reading it. */
export type MountRecord = Readonly<Record<string, unknown>>;

export class MountRecords {
  constructor(private readonly root: string) {}

  /** `<root>/agent/mounts`. */
  get base(): string {
    return join(agentDir(this.root), "mounts");
  }

  podStateDir(id: string): string {
    return join(this.base, id);
  }

  /** Private directory of one mount: credential files, cache, and the record. */
  stateDir(id: string, name: string): string {
    return join(this.base, id, name);
  }

  async read(id: string, name: string): Promise<MountRecord | undefined> {
    try {
      return JSON.parse(await readFile(join(this.stateDir(id, name), "spec.json"), "utf8")) as MountRecord;
    } catch {
      return undefined;
    }
  }

  async write(id: string, name: string, spec: MountRecord): Promise<void> {
    const dir = this.stateDir(id, name);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const tmp = join(dir, "spec.json.tmp");
    await writeFile(tmp, JSON.stringify(spec), { mode: 0o600 });
    await rename(tmp, join(dir, "spec.json"));
  }

  /**
   * Removes a mount's private directory (credentials and cache with it), except a cache that may
   * hold writes not yet in S3, which is returned. Never under `<root>/pods`.
   */
  async remove(id: string, name: string): Promise<KeptCache | undefined> {
    return removeStateDir(this.stateDir(id, name));
  }

  /** Removes every mount's private directory of pod `id`, except kept caches, which are returned. */
  async removePod(id: string): Promise<KeptCache[]> {
    const kept: KeptCache[] = [];
    for (const name of await readdir(this.podStateDir(id)).catch(() => [] as string[])) {
      const k = await removeStateDir(join(this.podStateDir(id), name));
      if (k !== undefined) kept.push(k);
    }
    if (kept.length === 0) await rm(this.podStateDir(id), { recursive: true, force: true });
    return kept;
  }

  /** Ids that have private state. */
  async ids(): Promise<string[]> {
    try {
      return await readdir(this.base);
    } catch {
      return [];
    }
  }
}
