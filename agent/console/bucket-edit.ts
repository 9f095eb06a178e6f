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
import { AppError } from "../../shared/errors.js";
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

export interface UpsertOptions {
  /** Replace an entry of that name that differs; without it such an entry is a Conflict. */
  readonly replace?: boolean;
  /** `namespace/pod`, for the Conflict's message. */
  readonly pod?: string;
}

/**
 * Sets the entry named `entry.name`: appends it, or, when an entry with that name exists, leaves an
 * identical one as it is and refuses a different one with AppError("Conflict") showing it, unless
 * `replace` is set: then the first entry with that name is replaced (later duplicates dropped).
 * Throws ConsoleError when the result would not hold the entry (too many entries, too long).
 */
export function upsertBucketEntry(
  current: string | undefined,
  entry: BucketEntry,
  opts: UpsertOptions = {},
): UpsertResult {
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
      const existing = previous !== undefined ? formatBucketEntry(previous) : raw.replace(/\s+/g, "");
      if (existing !== text && opts.replace !== true) throw nameTaken(entry.name, existing, opts.pod);
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

/** The Conflict for a name that is taken by a different entry. */
function nameTaken(name: string, existing: string, pod: string | undefined): AppError {
  const where = pod !== undefined ? `pod ${pod}` : "the pod";
  const umount = `dvctl umount ${pod ?? "NAMESPACE/POD"} ${name}`;
  return new AppError(
    "Conflict",
    `${where} already has a mount named "${name}": ${existing}. Mount under another name (--name), ` +
      `replace it (dvctl mount --replace; "replace": true in the request), or remove it first (${umount})`,
  );
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
