/**
 * The data invariant at the end of the run: every write that a writer inside a container saw
 * acknowledged (exit 0 after `dd conv=fsync`) is in S3 with its SHA-256, wherever it landed. A
 * missing write is explained, when possible, by what happened to its mount afterwards.
 *
 * Writes an unmount could not upload stay in the client's cache, which the agent keeps and
 * announces (WriteBackPending). A user uploads them by adding the entry back; what no mount will
 * upload (the pod is gone, or the entry was not added back) an operator uploads by hand, as
 * docs/troubleshooting.md says. Before the check the soak plays that operator, and counts the writes
 * that reached S3 only that way; a kept cache nobody was told about is a violation.
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from "@aws-sdk/client-s3";
import { keptObjects, recoverKeptCache } from "../lib/kept-cache.js";
import { WRITE_BACK_NAMESPACE } from "./write-back.js";
import { BUCKETS } from "./catalog.js";
import { keptCaches, listDir, readMountinfo } from "./observe.js";
import { locationOf, type WriteRecord } from "./writers.js";
import type { World } from "./world.js";

/** Failure signatures the data check recognizes: bugs the soak found before (now regressions). */
export const SIGNATURES: Readonly<Record<string, string>> = {
  "rclone-unmount-drops-writeback":
    "Found by this soak and fixed in 8ff97aa. rclone with --vfs-cache-mode writes acknowledged a write, even " +
    "fsync, before uploading it (--vfs-write-back 5 s); when the agent unmounted within that window (annotation " +
    "change, pod deletion, remount of a stale mount), rclone exited without uploading and the agent deleted its " +
    "cache directory, so the write was lost.",
};

export interface WriteSummary {
  readonly acknowledged: number;
  readonly verified: number;
  readonly lost: number;
  readonly corrupted: number;
  /** Found, but not where the marker read just before the write said (the mount changed in between). */
  readonly misplaced: number;
  /** Verified only after the soak, as an operator, uploaded the caches the agent kept. */
  readonly recovered: number;
}

async function allKeys(w: World): Promise<Map<string, Array<{ bucket: string; key: string }>>> {
  const byFile = new Map<string, Array<{ bucket: string; key: string }>>();
  for (const bucket of BUCKETS) {
    let token: string | undefined;
    do {
      const r = await w.node.s3.client.send(
        new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }),
      );
      for (const o of r.Contents ?? []) {
        const key = o.Key ?? "";
        const file = key.split("/").pop() ?? key;
        byFile.set(file, [...(byFile.get(file) ?? []), { bucket, key }]);
      }
      token = r.IsTruncated === true ? r.NextContinuationToken : undefined;
    } while (token !== undefined);
  }
  return byFile;
}

async function sha256Of(w: World, bucket: string, key: string): Promise<string | undefined> {
  try {
    const r = await w.node.s3.client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    const bytes = await r.Body?.transformToByteArray();
    return bytes === undefined ? undefined : createHash("sha256").update(bytes).digest("hex");
  } catch {
    return undefined;
  }
}

/** Every write whose writer exited 0 is in S3 with its checksum. */
export async function checkWrites(
  w: World,
  writes: readonly WriteRecord[],
  fuseKills: ReadonlyArray<{ t: number; mountPoint: string }>,
): Promise<WriteSummary> {
  const L = w.ledger;
  const acked = writes.filter((x) => x.code === 0);
  // rclone uploads after --vfs-write-back (5 s): give the last writes time to land.
  const last = Math.max(0, ...acked.map((x) => x.t));
  await w.sleep(last + 12_000 - Date.now());
  const events = await readEvents(w);
  const inS3 = async (x: WriteRecord, keys: Map<string, Array<{ bucket: string; key: string }>>) => {
    for (const loc of keys.get(x.file) ?? [])
      if ((await sha256Of(w, loc.bucket, loc.key)) === x.sha256) return true;
    return false;
  };
  const before = await allKeys(w);
  const uploadedByClients = new Set<WriteRecord>();
  for (const x of acked) if (await inS3(x, before)) uploadedByClients.add(x);
  await recoverKeptCaches(w, events);
  const keys = await allKeys(w);
  let verified = 0;
  let lost = 0;
  let corrupted = 0;
  let misplaced = 0;
  let recovered = 0;
  for (const x of acked) {
    L.checked("data");
    const where = locationOf(`${x.marker}\n`, x.file);
    const found = keys.get(x.file) ?? [];
    let ok = false;
    for (const loc of found) if ((await sha256Of(w, loc.bucket, loc.key)) === x.sha256) ok = true;
    if (ok) {
      verified++;
      if (!uploadedByClients.has(x)) {
        recovered++;
        L.count(`writes.recoveredFromKeptCache.${x.mounter}`);
      }
      if (where === undefined || !found.some((f) => f.bucket === where.bucket && f.key === where.key))
        misplaced++;
      continue;
    }
    const context = lossContext(w, x, events, fuseKills);
    const at = `acknowledged at +${((x.t - w.loadStart) / 1000).toFixed(1)} s`;
    if (found.length === 0) {
      lost++;
      const detail = `lost: ${x.pod}/${x.name}/${x.file} (${x.mounter}, ${x.bytes} B, ${at}); ${context}`;
      if (rcloneUnmountedSoon(w, x, events, fuseKills))
        L.violateMatching("data", "rclone-unmount-drops-writeback", detail);
      else L.violate("data", detail);
    } else {
      corrupted++;
      L.violate(
        "data",
        `corrupted: ${x.pod}/${x.name}/${x.file} (${x.mounter}, ${x.bytes} B, ${at}) in ${found.map((f) => `${f.bucket}/${f.key}`).join(", ")}; ${context}`,
      );
    }
  }
  return { acknowledged: acked.length, verified, lost, corrupted, misplaced, recovered };
}

/**
 * The operator's part: every cache the agent kept that no mount is uploading now is uploaded by
 * hand and removed (docs/troubleshooting.md, "Writes kept after an unmount"). Each must have been
 * announced: a WriteBackPending event on its pod naming the mount, or, for a pod that was gone
 * already, the agent's log naming the cache.
 */
async function recoverKeptCaches(w: World, events: readonly PodEvent[]): Promise<void> {
  const L = w.ledger;
  const base = join(w.node.root, "agent", "mounts");
  const mounted = new Set((await readMountinfo()).map((m) => m.mountPoint));
  const logs = (
    await Promise.all(w.incarnations.map((i) => readFile(i.logFile, "utf8").catch(() => "")))
  ).join("\n");
  let removed = false;
  for (const id of await listDir(base)) {
    const { kept } = await keptCaches(w.node.root, id);
    if (kept.length === 0) continue;
    const live = [...w.pods.values()].find((p) => p.id === id);
    const pod = live ?? w.deleted.find((d) => d.id === id);
    for (const k of kept) {
      const name = k.stateDir.slice(base.length + 1).split("/")[1] ?? "?";
      L.checked("writeBack");
      L.count("writeBack.keptCachesAtEnd");
      const announced =
        events.some(
          (e) => e.name === pod?.name && e.reason === "WriteBackPending" && e.message.startsWith(`${name}: `),
        ) || logs.includes(k.cacheDir);
      if (!announced)
        L.violate(
          "writeBack",
          `the cache of ${pod?.name ?? id}/${name} was kept without a WriteBackPending event or log line (${k.verdict.dirty.length} dirty)`,
        );
      // The write-back faults' pods use a server of their own.
      const client =
        live?.namespace === WRITE_BACK_NAMESPACE && w.writeBackS3 !== undefined
          ? w.writeBackS3.client
          : w.node.s3.client;
      if (pod !== undefined && mounted.has(`${pod.hostDir}/${name}`)) {
        // Mounted again: its client uploads what belongs to its own bucket and prefix. Items of an
        // earlier spec of the same name only an operator uploads; the directory stays the client's.
        for (const o of await keptObjects(k.stateDir)) {
          await client.send(
            new PutObjectCommand({ Bucket: o.bucket, Key: o.key, Body: await readFile(o.file) }),
          );
          L.count("writeBack.objectsUploadedByOperator");
        }
        continue;
      }
      const objects = await recoverKeptCache(client, k.stateDir);
      L.count("writeBack.objectsUploadedByOperator", objects.length);
      L.count("writeBack.keptCachesRemovedByOperator");
      removed = true;
    }
  }
  // The agent collects the emptied directories at its next garbage collection (every resync).
  if (removed) await w.sleep(5000);
}

interface PodEvent {
  time: string;
  name: string;
  reason: string;
  message: string;
}

async function readEvents(w: World): Promise<PodEvent[]> {
  const text = await readFile(join(w.node.podsDir, "events.jsonl"), "utf8").catch(() => "");
  return text
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as PodEvent);
}

/** What happened to the mount after a write that went missing: the likely cause, for the report. */
function lossContext(
  w: World,
  x: WriteRecord,
  events: readonly PodEvent[],
  fuseKills: ReadonlyArray<{ t: number; mountPoint: string }>,
): string {
  const after = (t: number): string => `+${((t - x.t) / 1000).toFixed(1)}s`;
  const hints: string[] = [];
  const pod = w.pods.get(x.pod);
  const deleted = w.deleted.find((d) => d.name === x.pod);
  const mp = `${(pod ?? deleted)?.hostDir ?? "?"}/${x.name}`;
  for (const k of fuseKills)
    if (k.mountPoint === mp && k.t >= x.t && k.t - x.t < 60_000) hints.push(`client killed -9 ${after(k.t)}`);
  for (const e of unmountEvents(x, events, 60_000))
    hints.push(`${after(Date.parse(e.time))}: ${e.message.slice(0, 80)}`);
  if (deleted !== undefined && deleted.deletedAt >= x.t)
    hints.push(`pod deleted ${after(deleted.deletedAt)}`);
  for (const win of w.windows)
    if (win.from >= x.t && win.from - x.t < 60_000) hints.push(`${win.kind} down ${after(win.from)}`);
  return hints.length === 0 ? "no fault touched the mount afterwards" : hints.slice(0, 4).join("; ");
}

/** The pod's Unmounted events for the bucket and prefix the write went to, within `ms` after it. */
function unmountEvents(x: WriteRecord, events: readonly PodEvent[], ms: number): PodEvent[] {
  const [bucket, prefix] = x.marker.trim().split(":");
  if (bucket === undefined || bucket === "") return [];
  const text = `unmounted ${bucket}${prefix ? `/${prefix}` : ""} (rw, ${x.mounter})`;
  return events.filter((e) => {
    const t = Date.parse(e.time);
    return (
      e.name === x.pod && e.reason === "Unmounted" && t >= x.t && t - x.t <= ms && e.message.startsWith(text)
    );
  });
}

/**
 * The signature of rclone-unmount-drops-writeback ({@link SIGNATURES}): an rclone write that vanished, and
 * the mount it went to was unmounted (event), torn down with its pod, or its client killed before
 * rclone could upload it: within 10 s (write-back 5 s, plus slack), or, when the S3 server went
 * down in that time, within the outage plus 20 s (rclone retries a failed upload with a backoff).
 */
function rcloneUnmountedSoon(
  w: World,
  x: WriteRecord,
  events: readonly PodEvent[],
  fuseKills: ReadonlyArray<{ t: number; mountPoint: string }>,
): boolean {
  if (x.mounter !== "rclone") return false;
  let window = 10_000;
  for (const o of w.windows)
    if (o.kind === "s3" && o.from <= x.t + 10_000 && (o.to ?? Infinity) >= x.t)
      window = Math.max(window, (o.to ?? Date.now()) - x.t + 20_000);
  const soon = (t: number): boolean => t >= x.t && t - x.t <= window;
  if (unmountEvents(x, events, window).length > 0) return true;
  const deleted = w.deleted.find((d) => d.name === x.pod);
  if (deleted !== undefined && soon(deleted.deletedAt)) return true;
  const hostDir = (w.pods.get(x.pod) ?? deleted)?.hostDir;
  return fuseKills.some((k) => k.mountPoint === `${hostDir}/${x.name}` && soon(k.t));
}
