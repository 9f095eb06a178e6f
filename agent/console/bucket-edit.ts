/**
 * Edits of the `dynamic-volumes/buckets` annotation value made by the console (pure). Only the entry
 * with the given name changes; every other entry, malformed ones included, is kept as written
 * (whitespace trimmed), so that a console edit never destroys what a user typed.
 */
import {
  MAX_BUCKETS_ANNOTATION_LENGTH,
  formatBucketEntry,
  parseBuckets,
  type BucketEntry,
} from "../../shared/buckets.js";
import { ConsoleError } from "../../shared/protocol.js";

function parts(value: string | undefined): string[] {
  return (value ?? "")
    .split(",")
    .map((p) => p.trim())
    .filter((p) => p.replace(/\s+/g, "") !== "");
}

/** The name under which the agent keys one raw entry (valid or not), when it can be told. */
function nameOf(raw: string): string | undefined {
  const p = parseBuckets(raw);
  return p.entries[0]?.name ?? p.errors[0]?.name;
}

export interface UpsertResult {
  readonly value: string;
  /** The valid entry that had the name before, if any. */
  readonly previous: BucketEntry | undefined;
  /** The annotation already held exactly this entry, once. */
  readonly unchanged: boolean;
}

/**
 * Sets the entry named `entry.name`: replaces the first entry with that name (dropping later
 * duplicates), or appends it. Throws ConsoleError when the result would not hold the entry (too
 * many entries, too long).
 */
export function upsertBucketEntry(current: string | undefined, entry: BucketEntry): UpsertResult {
  const text = formatBucketEntry(entry);
  const out: string[] = [];
  let previous: BucketEntry | undefined;
  let seen = 0;
  for (const raw of parts(current)) {
    if (nameOf(raw) !== entry.name) {
      out.push(raw);
      continue;
    }
    if (seen++ === 0) {
      previous ??= parseBuckets(raw).entries[0];
      out.push(text);
    }
  }
  if (seen === 0) out.push(text);
  const value = out.join(",");
  const unchanged = seen === 1 && previous !== undefined && formatBucketEntry(previous) === text;
  if (value.length > MAX_BUCKETS_ANNOTATION_LENGTH)
    throw new ConsoleError(
      "TooLarge",
      `the buckets annotation would be longer than ${MAX_BUCKETS_ANNOTATION_LENGTH} characters; unmount something first`,
    );
  const parsed = parseBuckets(value);
  if (!parsed.entries.some((e) => formatBucketEntry(e) === text)) {
    const why =
      parsed.errors.find((e) => e.raw === text.replace(/\s+/g, ""))?.message ?? "it would not be read";
    throw new ConsoleError("Conflict", `cannot add "${text}" to the pod: ${why}`);
  }
  return { value, previous, unchanged };
}

/** Removes every entry named `name`. `found` is false when there was none (and `value` is unchanged). */
export function removeBucketEntry(
  current: string | undefined,
  name: string,
): { value: string; found: boolean } {
  const all = parts(current);
  const kept = all.filter((raw) => nameOf(raw) !== name);
  return { value: kept.join(","), found: kept.length !== all.length };
}

/** Whether the annotation value names an entry (valid or not) `name`. */
export function hasBucketEntry(current: string | undefined, name: string): boolean {
  return parts(current).some((raw) => nameOf(raw) === name);
}
