/**
 * The `dynamic-volumes/status` annotation (pure): `{name: {state, bucket, prefix, readOnly, since, error?}}`.
 */
import type { MountState } from "../../shared/names.js";

export interface MountStatus {
  readonly state: MountState;
  readonly bucket: string;
  readonly prefix: string;
  readonly readOnly: boolean;
  /** ISO 8601 time the mount entered this state. */
  readonly since: string;
  readonly error?: string;
}

export type PodStatus = Record<string, MountStatus>;

/** Returns `status` with `name` set to `next`, keeping `since` when the state and error did not change. */
export function setMountStatus(
  status: PodStatus,
  name: string,
  next: Omit<MountStatus, "since">,
  now: Date,
): PodStatus {
  const prev = status[name];
  const same =
    prev !== undefined &&
    prev.state === next.state &&
    prev.error === next.error &&
    prev.bucket === next.bucket &&
    prev.prefix === next.prefix &&
    prev.readOnly === next.readOnly;
  const entry: MountStatus = { ...next, since: same ? prev.since : now.toISOString() };
  if (entry.error === undefined) delete (entry as { error?: string }).error;
  return { ...status, [name]: entry };
}

export function removeMountStatus(status: PodStatus, name: string): PodStatus {
  const { [name]: _gone, ...rest } = status;
  return rest;
}

/** Canonical JSON text, keys in insertion order. */
export function renderStatus(status: PodStatus): string {
  return JSON.stringify(status);
}
