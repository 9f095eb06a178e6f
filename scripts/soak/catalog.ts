/**
 * What the soak mounts and how it recognizes it, pure: the buckets and prefixes with a marker
 * object in each (so a read through any mount says which bucket and prefix it shows), random
 * `dynamic-volumes/buckets` values, and the state the agent must reach for a given value.
 */
import type { MountInfo } from "../../agent/mount/mountinfo.js";
import { isReadOnly } from "../../agent/mount/mountinfo.js";
import type { PodStatus } from "../../agent/reconcile/status.js";
import { formatBucketEntry, parseBuckets, type BucketEntry } from "../../shared/buckets.js";
import type { Prng } from "./prng.js";

export const BUCKETS = ["alpha", "beta", "gamma"] as const;
export const PREFIXES = ["", "p1", "p2"] as const;
/** Mount names the flipper uses; the console uses {@link CONSOLE_NAMES}. */
export const FLIP_NAMES = ["a", "b", "c", "d"] as const;
export const CONSOLE_NAMES = ["c1", "c2"] as const;
export const NAMESPACES = ["team-a", "team-b"] as const;
/** The object at the root of every bucket and prefix. */
export const MARKER = "marker.txt";

/**
 * Malformed entries: each must end up `failed` in status and mounted nowhere, without blocking the
 * valid entries next to it. None shares a name with a valid entry.
 */
export const BAD_ENTRIES = [
  "../x",
  "y=alpha/-o",
  "-o allow_root",
  "Bad_Name=alpha",
  "z=alpha:rx",
  "w=al..pha",
  "v=alpha/p1/../../etc",
] as const;

/** What a mount of `bucket`/`prefix` shows in its marker. */
export function markerText(bucket: string, prefix: string): string {
  return `${bucket}:${prefix}\n`;
}

/** Buckets with a marker at the root and in every prefix, plus a little data. */
export function seedObjects(): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  for (const b of BUCKETS) {
    const objects: Record<string, string> = {};
    for (const p of PREFIXES) {
      objects[p === "" ? MARKER : `${p}/${MARKER}`] = markerText(b, p);
      objects[p === "" ? "data.txt" : `${p}/data.txt`] = `data of ${b}/${p}\n`.repeat(8);
    }
    out[b] = objects;
  }
  return out;
}

/** The S3 key that a file named `file` at the root of a mount of `prefix` becomes. */
export function keyOf(prefix: string, file: string): string {
  return prefix === "" ? file : `${prefix}/${file}`;
}

export function randomEntry(rng: Prng, name: string): BucketEntry {
  return { name, bucket: rng.pick(BUCKETS), prefix: rng.pick(PREFIXES), readOnly: rng.chance(0.5) };
}

/** A random annotation value of 0 to 3 valid entries, sometimes with one malformed entry. */
export function randomBuckets(rng: Prng, badChance: number): { value: string; bad: string | undefined } {
  const names = rng.shuffle(FLIP_NAMES).slice(0, rng.int(0, 3));
  const parts = names.map((n) => formatBucketEntry(randomEntry(rng, n)));
  let bad: string | undefined;
  if (rng.chance(badChance)) {
    bad = rng.pick(BAD_ENTRIES);
    parts.splice(rng.int(0, parts.length), 0, bad);
  }
  return { value: parts.join(", "), bad };
}

/** The state the agent must reach for an annotation value. */
export interface Expected {
  readonly valid: readonly BucketEntry[];
  /** Status keys of malformed entries: the entry's name, or `#<position>`. */
  readonly failed: readonly string[];
}

export function expectedOf(value: string | undefined): Expected {
  const parsed = parseBuckets(value ?? "");
  return {
    valid: parsed.entries,
    failed: parsed.errors.map((e) => e.name ?? `#${e.index + 1}`),
  };
}

/** Identity of a mount's contents: `bucket:prefix:ro|rw`. */
export function specText(e: { bucket: string; prefix: string; readOnly: boolean }): string {
  return `${e.bucket}:${e.prefix}:${e.readOnly ? "ro" : "rw"}`;
}

/** What the agent recorded for a mount (`<root>/agent/mounts/<id>/<name>/spec.json`). */
export interface RecordedSpec {
  readonly bucket: string;
  readonly prefix: string;
  readonly readOnly: boolean;
}

/**
 * Why a pod's observed state does not match `expected` yet, or undefined when it does. `mounts`
 * are the host's mounts strictly below the pod's directory; `records` the agent's record per
 * valid name (read only when everything else already matches, hence a function).
 */
export function mismatch(
  expected: Expected,
  hostDir: string,
  status: PodStatus,
  mounts: readonly MountInfo[],
): string | undefined {
  const keys = new Set([...expected.valid.map((e) => e.name), ...expected.failed]);
  for (const k of Object.keys(status)) if (!keys.has(k)) return `status has ${k}, not desired`;
  for (const e of expected.valid) {
    const s = status[e.name];
    if (s === undefined) return `status lacks ${e.name}`;
    if (s.state !== "mounted") return `${e.name} is ${s.state}`;
    if (specText(s) !== specText(e)) return `${e.name} status shows ${specText(s)}, want ${specText(e)}`;
  }
  for (const k of expected.failed) {
    const s = status[k];
    if (s?.state !== "failed") return `malformed entry ${k} is ${s?.state ?? "absent"}, want failed`;
  }
  const byPoint = new Map<string, MountInfo[]>();
  for (const m of mounts) byPoint.set(m.mountPoint, [...(byPoint.get(m.mountPoint) ?? []), m]);
  const wanted = new Set(expected.valid.map((e) => `${hostDir}/${e.name}`));
  for (const [point, list] of byPoint) {
    if (!wanted.has(point)) return `${point.slice(hostDir.length + 1)} is mounted, not desired`;
    if (list.length > 1) return `${list.length} mounts stacked on ${point.slice(hostDir.length + 1)}`;
  }
  for (const e of expected.valid) {
    const m = byPoint.get(`${hostDir}/${e.name}`)?.[0];
    if (m === undefined) return `${e.name} is not in mountinfo`;
    if (isReadOnly(m) !== e.readOnly) return `${e.name} is mounted ${isReadOnly(m) ? "ro" : "rw"}`;
  }
  return undefined;
}

/** The second half of {@link mismatch}: the agent's records say each mount shows the right bucket. */
export function recordMismatch(
  expected: Expected,
  records: ReadonlyMap<string, RecordedSpec | undefined>,
): string | undefined {
  for (const e of expected.valid) {
    const r = records.get(e.name);
    if (r === undefined) return `no record for ${e.name}`;
    if (specText(r) !== specText(e)) return `${e.name} was made from ${specText(r)}, want ${specText(e)}`;
  }
  return undefined;
}

/** Nearest-rank percentile of `values` (0 < p <= 100); undefined for no values. */
export function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}
