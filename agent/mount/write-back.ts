/**
 * Writes a FUSE client acknowledged but has not uploaded yet (pure): whether a client's on-disk
 * cache may still hold some, and what an unmount that ends a client means for them.
 *
 * The three clients differ:
 * - **s3fs** uploads in `flush`/`fsync`, so `close()` returns only once the object is in S3 (or
 *   fails, and the writer sees the error). An acknowledged write is never pending.
 * - **rclone** with `--vfs-cache-mode writes` (or `full`) acknowledges from its cache and uploads
 *   afterwards. It keeps each file under `<cache-dir>/vfs/<remote>/<path>` and its metadata under
 *   `<cache-dir>/vfsMeta/<remote>/<path>`, a JSON object whose `Dirty` is true from the first write
 *   until the upload has succeeded. At start-up rclone queues every dirty item of its cache for
 *   upload again (https://rclone.org/commands/rclone_mount/#vfs-file-caching), so a cache kept for
 *   the next mount of the same entry uploads what an earlier client could not. `<remote>` carries
 *   a hash of the remote's settings (`dv{9Xz1a}` with rclone 1.60), so only a client with the same
 *   bucket, prefix, endpoint and keys picks the items up.
 * - **geesefs** acknowledges `close()` before uploading and holds the data in memory: once its
 *   process is gone, whatever it had not uploaded is gone with it.
 *
 * "May hold" is decided conservatively: unreadable metadata, data without metadata, or a cache that
 * could not be read to the end all count as pending. Keeping a clean cache costs disk space until
 * the next mount or an operator removes it; deleting a dirty one loses acknowledged writes.
 */
import type { MounterName } from "../../shared/names.js";

/** How a client makes an acknowledged write durable. */
export type WriteBackMode = "on-close" | "cache" | "memory";

export const WRITE_BACK_MODE: Readonly<Record<MounterName, WriteBackMode>> = Object.freeze({
  s3fs: "on-close",
  rclone: "cache",
  geesefs: "memory",
});

/** The cache directory inside a mount's state directory (what the rclone builder passes as `--cache-dir`). */
export const CACHE_DIR_NAME = "cache";
/** rclone's data and metadata trees inside its cache directory. */
export const RCLONE_DATA_DIR = "vfs";
export const RCLONE_META_DIR = "vfsMeta";

/** One file found in a client's cache directory. */
export interface CacheFile {
  /** Path relative to the data or the metadata tree (`<remote>/<bucket>/<key>`). */
  readonly path: string;
  readonly tree: "data" | "meta";
  /** The metadata's text; undefined for data files and for metadata that could not be read. */
  readonly text?: string;
}

/** What a walk of a cache directory found. */
export interface CacheListing {
  readonly files: readonly CacheFile[];
  /** False when part of the cache could not be read, or the walk stopped at its bound. */
  readonly complete: boolean;
}

export interface CacheVerdict {
  /** True when the cache may hold writes that are not in S3. */
  readonly pending: boolean;
  /** Objects (`<bucket>/<key>`) whose metadata says they are not uploaded, sorted. */
  readonly dirty: readonly string[];
  /** Objects whose state could not be told (unreadable metadata, data without metadata), sorted. */
  readonly unsure: readonly string[];
  /** The walk did not see the whole cache. */
  readonly incomplete: boolean;
}

/**
 * `Dirty` from one rclone metadata file: true or false, or undefined when the text is not the
 * JSON object rclone writes (truncated by a crash, say).
 */
export function dirtyFlag(text: string): boolean | undefined {
  let meta: unknown;
  try {
    meta = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof meta !== "object" || meta === null || Array.isArray(meta)) return undefined;
  const dirty = (meta as { Dirty?: unknown }).Dirty;
  // rclone 1.60 always writes the field; an older or newer layout without it is not understood.
  return typeof dirty === "boolean" ? dirty : undefined;
}

/** `<remote>/<bucket>/<key>` → `<bucket>/<key>`: the remote's name means nothing to a user. */
export function objectPath(cachePath: string): string {
  const parts = cachePath.split("/").filter((p) => p !== "");
  return parts.length > 1 ? parts.slice(1).join("/") : parts.join("/");
}

/** Decides from a walk of the cache whether it may hold writes not yet in S3. */
export function cacheVerdict(listing: CacheListing): CacheVerdict {
  const dirty = new Set<string>();
  const unsure = new Set<string>();
  const described = new Set<string>();
  for (const f of listing.files) {
    if (f.tree !== "meta") continue;
    described.add(f.path);
    const flag = f.text === undefined ? undefined : dirtyFlag(f.text);
    if (flag === true) dirty.add(objectPath(f.path));
    else if (flag === undefined) unsure.add(objectPath(f.path));
  }
  // rclone writes the metadata when it opens an item; data without any may be an item whose
  // metadata was lost in a crash, and rclone's own start-up then decides what it is.
  for (const f of listing.files)
    if (f.tree === "data" && !described.has(f.path)) unsure.add(objectPath(f.path));
  const incomplete = !listing.complete;
  return {
    pending: dirty.size > 0 || unsure.size > 0 || incomplete,
    dirty: [...dirty].sort(),
    unsure: [...unsure].filter((p) => !dirty.has(p)).sort(),
    incomplete,
  };
}

/** How the client of an unmounted mount ended. */
export type ClientEnd =
  /** It exited by itself after the unmount, within the upload grace. */
  | "exited"
  /** It was still running when the upload grace ran out, and was stopped. */
  | "stopped"
  /** It had died before the unmount (the mount was stale). */
  | "died"
  /** Not a client this process started (adopted after a restart): its end is not known. */
  | "unknown";

/** What an unmount did about writes its client had not uploaded; absent when there were none. */
export type WriteBackReport =
  | {
      /** The cache may hold writes not yet in S3 and was kept for the next mount of the entry. */
      readonly outcome: "kept";
      readonly mounter: MounterName | undefined;
      readonly client: ClientEnd;
      /** The upload grace the unmount waited within, in ms. */
      readonly graceMs: number;
      readonly stateDir: string;
      readonly cacheDir: string;
      readonly verdict: CacheVerdict;
    }
  | {
      /** The client held unuploaded writes in memory and is gone: they may be lost. */
      readonly outcome: "maybe-lost";
      readonly mounter: MounterName;
      readonly client: "stopped" | "died";
      readonly graceMs: number;
    };

/**
 * For a client without an on-disk cache: whether its end may have lost acknowledged writes. Only a
 * client that holds them in memory (geesefs) and did not exit by itself after the unmount.
 */
export function mayHaveLostWrites(mounter: MounterName | undefined, end: ClientEnd): boolean {
  return (
    mounter !== undefined && WRITE_BACK_MODE[mounter] === "memory" && (end === "stopped" || end === "died")
  );
}

/** The first objects of a verdict, for a message: `outbox/a.bin, outbox/b.bin and 3 more`. */
export function describeObjects(v: CacheVerdict, max = 3): string {
  const all = [...v.dirty, ...v.unsure];
  if (all.length === 0) return v.incomplete ? "files the agent could not list" : "no file";
  const shown = all.slice(0, max).join(", ");
  return all.length > max ? `${shown} and ${all.length - max} more` : shown;
}

/** How many files a verdict names, as words: "1 file", "4 files". */
export function countFiles(v: CacheVerdict): string {
  const n = v.dirty.length + v.unsure.length;
  if (n === 0) return "files";
  return n === 1 ? "1 file" : `${n} files`;
}

/** What follows the unmount for the entry, which decides what a user can do about kept writes. */
export type WriteBackNext =
  /** The same entry is mounted again now (the client died): the new mount uploads them. */
  | "remount"
  /** The entry stays but with another bucket, prefix, mounter or Secret. */
  | "changed"
  /** The entry left the pod's annotation. */
  | "removed"
  /** The pod finished or was deleted: nothing will mount the entry again. */
  | "pod-done";

export interface WriteBackEvent {
  readonly reason: "WriteBackPending" | "WriteBackLost";
  readonly message: string;
}

/** Kubernetes' events.k8s.io/v1 limit for a note; older clients show no more either. */
const MAX_MESSAGE = 1024;

/**
 * The Warning Event for an unmount that ended with writes not in S3: what was not uploaded, why,
 * where it is kept and what to do. `entry` is the annotation entry that mounted it
 * (`name=bucket/prefix:rw`), for the user to add back.
 */
export function writeBackEvent(
  name: string,
  r: WriteBackReport,
  next: WriteBackNext,
  entry: string | undefined,
): WriteBackEvent {
  const client = r.mounter ?? "the client";
  const grace = `${Math.round(r.graceMs / 1000)} s`;
  if (r.outcome === "maybe-lost") {
    const how =
      r.client === "stopped"
        ? `${client} had not finished uploading ${grace} after the unmount and was stopped`
        : `${client} died`;
    return {
      reason: "WriteBackLost",
      message: clip(
        `${name}: ${how}; writes it had acknowledged but not uploaded yet were held in its memory and may be lost. ` +
          `Check the objects written last through this mount.`,
      ),
    };
  }
  const v = r.verdict;
  const why: Record<ClientEnd, string> = {
    stopped: `${client} had not finished uploading ${grace} after the unmount (is the S3 endpoint reachable?) and was stopped`,
    exited: `${client} exited without uploading them`,
    died: `${client} died before uploading them`,
    unknown:
      r.graceMs > 0
        ? `they were not uploaded within ${grace} of the unmount`
        : "they were not uploaded when the mount went",
  };
  const again = entry !== undefined ? `"${entry}"` : `"${name}" with the same bucket, prefix and mounter`;
  const what: Record<WriteBackNext, string> = {
    remount: `The cache is kept in ${r.cacheDir} and the new mount of ${name} uploads them once S3 answers.`,
    changed: `The cache is kept in ${r.cacheDir}; only a mount like the previous one uploads it: set the entry back to ${again} (same Secret) to upload them.`,
    removed: `The cache is kept in ${r.cacheDir}; add ${again} back to dynamic-volumes/buckets (same Secret) to upload them.`,
    "pod-done": `The pod has finished, so no mount will upload them: the cache stays in ${r.cacheDir} on this node until an operator uploads or removes it (docs/troubleshooting.md, "Writes kept after an unmount").`,
  };
  const head = `${name}: ${countFiles(v)} written through this mount ${v.dirty.length + v.unsure.length === 1 ? "is" : "are"} not in S3 yet`;
  const tail = `: ${why[r.client]}. ${what[next]}`;
  // The object names go last into the budget: the path and what to do matter more.
  const room = MAX_MESSAGE - head.length - tail.length - 3;
  const objects = describeObjects(v);
  const named = room > 20 ? ` (${objects.length > room ? `${objects.slice(0, room - 1)}…` : objects})` : "";
  return { reason: "WriteBackPending", message: clip(`${head}${named}${tail}`) };
}

function clip(text: string): string {
  return text.length > MAX_MESSAGE ? `${text.slice(0, MAX_MESSAGE - 1)}…` : text;
}
