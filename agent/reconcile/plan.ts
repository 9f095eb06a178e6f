/**
 * Desired minus actual gives actions (pure). Desired comes from the pod's annotations; actual from
 * mountinfo, the agent's record of what each mount was made from, and a health probe.
 */
import type { BucketEntry } from "../../shared/buckets.js";
import type { MounterName } from "../../shared/names.js";

/** Everything that defines one mount; when any of it changes, the mount is made again. */
export interface MountSpec {
  readonly name: string;
  readonly bucket: string;
  readonly prefix: string;
  readonly readOnly: boolean;
  readonly mounter: MounterName;
  readonly secretName: string;
  readonly options: Readonly<Record<string, string | true>>;
}

export function specOf(
  entry: BucketEntry,
  pod: { mounter: MounterName; secretName: string; options: Record<string, string | true> },
): MountSpec {
  return {
    name: entry.name,
    bucket: entry.bucket,
    prefix: entry.prefix,
    readOnly: entry.readOnly,
    mounter: pod.mounter,
    secretName: pod.secretName,
    options: pod.options,
  };
}

/** A stable text form of a spec, for comparing and for the agent's record. */
export function specKey(s: MountSpec): string {
  const options = Object.keys(s.options)
    .sort()
    .map((k) => [k, s.options[k]]);
  return JSON.stringify([s.name, s.bucket, s.prefix, s.readOnly, s.mounter, s.secretName, options]);
}

export type Health = "ok" | "stale";

/** One mount found under the pod's directory. */
export interface ActualMount {
  /** Path relative to the pod's directory; a plain name for our own mounts. */
  readonly name: string;
  /** What the agent recorded when it made the mount; undefined when it has no record. */
  readonly recorded: MountSpec | undefined;
  readonly health: Health;
}

export type Action =
  | {
      readonly kind: "unmount";
      readonly name: string;
      readonly reason: "removed" | "changed" | "stale" | "unknown";
    }
  | { readonly kind: "mount"; readonly name: string; readonly spec: MountSpec };

/**
 * Actions that take a pod's directory from `actual` to `desired`: every unmount first (deepest
 * first, as given), then mounts in the order the annotation lists them.
 */
export function planPod(desired: readonly MountSpec[], actual: readonly ActualMount[]): Action[] {
  const want = new Map(desired.map((s) => [s.name, s]));
  const unmounts: Action[] = [];
  const keep = new Set<string>();
  for (const a of actual) {
    const spec = want.get(a.name);
    if (spec === undefined) {
      unmounts.push({ kind: "unmount", name: a.name, reason: a.name.includes("/") ? "unknown" : "removed" });
    } else if (a.recorded === undefined) {
      unmounts.push({ kind: "unmount", name: a.name, reason: "unknown" });
    } else if (specKey(a.recorded) !== specKey(spec)) {
      unmounts.push({ kind: "unmount", name: a.name, reason: "changed" });
    } else if (a.health === "stale") {
      unmounts.push({ kind: "unmount", name: a.name, reason: "stale" });
    } else {
      keep.add(a.name);
    }
  }
  const mounts: Action[] = desired
    .filter((s) => !keep.has(s.name))
    .map((spec) => ({ kind: "mount", name: spec.name, spec }));
  return [...unmounts, ...mounts];
}
