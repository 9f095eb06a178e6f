/**
 * What an operator does with a client cache the agent kept for a pod that is gone
 * (docs/troubleshooting.md, "Writes kept after an unmount"): upload every file whose rclone
 * metadata does not say it is uploaded to its bucket and key, then remove the directory. The soak
 * and the end-to-end tests play the operator with it.
 */
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { readCache } from "../../agent/mount/records.js";
import { CACHE_DIR_NAME, dirtyFlag, RCLONE_DATA_DIR } from "../../agent/mount/write-back.js";

export interface KeptObject {
  readonly bucket: string;
  readonly key: string;
  /** The cached data on the node. */
  readonly file: string;
}

/** Files of the cache in `stateDir` that may not be in S3: dirty or of unknown state, with data. */
export async function keptObjects(stateDir: string): Promise<KeptObject[]> {
  const cacheDir = join(stateDir, CACHE_DIR_NAME);
  const listing = await readCache(cacheDir);
  const data = new Set(listing.files.filter((f) => f.tree === "data").map((f) => f.path));
  const out: KeptObject[] = [];
  for (const f of listing.files) {
    if (f.tree !== "meta" || !data.has(f.path)) continue;
    if (f.text !== undefined && dirtyFlag(f.text) === false) continue;
    // <remote>/<bucket>/<key…>
    const [, bucket, ...key] = f.path.split("/");
    if (bucket === undefined || key.length === 0) continue;
    out.push({ bucket, key: key.join("/"), file: join(cacheDir, RCLONE_DATA_DIR, f.path) });
  }
  return out;
}

/** Uploads {@link keptObjects} with `client`, then removes `stateDir`; returns what it uploaded. */
export async function recoverKeptCache(client: S3Client, stateDir: string): Promise<KeptObject[]> {
  const objects = await keptObjects(stateDir);
  for (const o of objects)
    await client.send(new PutObjectCommand({ Bucket: o.bucket, Key: o.key, Body: await readFile(o.file) }));
  await rm(stateDir, { recursive: true, force: true });
  return objects;
}
