/**
 * The `dynamic-volumes/buckets` annotation grammar:
 *
 *     entries := entry ("," entry)*
 *     entry   := [name "="] bucket ["/" prefix] [":ro" | ":rw"]
 *
 * - `name` defaults to the bucket and must be a DNS-1123 label, unique within the pod.
 * - Access defaults to `rw`. Whitespace anywhere is ignored; empty entries are skipped.
 * - A malformed entry never blocks the others: it is returned in `errors`, the rest in `entries`.
 *
 * Pure: no I/O. Used by the webhook (warnings at admission), the agent (desired state) and the
 * console (editing the annotation).
 */

export interface BucketEntry {
  /** Directory name under the pod's directory, and the key in the status annotation. */
  readonly name: string;
  readonly bucket: string;
  /** Key prefix inside the bucket without leading or trailing slash; `""` for the whole bucket. */
  readonly prefix: string;
  readonly readOnly: boolean;
}

export interface BucketEntryError {
  /** Zero-based position of the entry in the annotation (empty entries count). */
  readonly index: number;
  /** The entry as written, whitespace removed. */
  readonly raw: string;
  /** The name the entry would have had, when it could be told; lets status key the failure. */
  readonly name?: string;
  readonly message: string;
}

export interface ParsedBuckets {
  readonly entries: readonly BucketEntry[];
  readonly errors: readonly BucketEntryError[];
}

/** At most this many entries per pod; later ones are reported as errors. */
export const MAX_BUCKET_ENTRIES = 64;
/** Longest accepted annotation value, in characters. */
export const MAX_BUCKETS_ANNOTATION_LENGTH = 16 * 1024;
export const MAX_PREFIX_LENGTH = 512;

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
// S3 bucket naming rules (lowercase, digits, dots, hyphens; 3-63; alphanumeric at both ends),
// plus underscores, which GCS and several S3-compatible stores allow.
const BUCKET = /^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$/;
// Prefix segments stay within characters that are inert in every FUSE client's option syntax
// and in a shell, so that no value can be read as an option or a path escape.
const PREFIX_SEGMENT = /^[A-Za-z0-9_.+@][A-Za-z0-9_.+@-]*$/;

/** Returns why `name` is not a DNS-1123 label, or undefined when it is one. */
export function checkMountName(name: string): string | undefined {
  if (name.length === 0) return "name is empty";
  if (name.length > 63) return `name "${clip(name)}" is longer than 63 characters`;
  if (!DNS1123_LABEL.test(name))
    return `name "${clip(name)}" must be a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)`;
  return undefined;
}

/** Returns why `bucket` is not an acceptable bucket name, or undefined. */
export function checkBucketName(bucket: string): string | undefined {
  if (bucket.length === 0) return "bucket name is empty";
  if (!BUCKET.test(bucket) || bucket.includes(".."))
    return `bucket "${clip(bucket)}" is not a valid bucket name (3-63 lowercase letters, digits, '.', '-' or '_', starting and ending with a letter or digit)`;
  return undefined;
}

/** Returns why `prefix` (already without leading/trailing slashes) is unacceptable, or undefined. */
export function checkPrefix(prefix: string): string | undefined {
  if (prefix === "") return undefined;
  if (prefix.length > MAX_PREFIX_LENGTH) return `prefix is longer than ${MAX_PREFIX_LENGTH} characters`;
  for (const seg of prefix.split("/")) {
    if (seg === "") return `prefix "${clip(prefix)}" contains an empty path segment`;
    if (seg === "." || seg === "..") return `prefix "${clip(prefix)}" must not contain "." or ".." segments`;
    if (!PREFIX_SEGMENT.test(seg))
      return `prefix segment "${clip(seg)}" may contain only letters, digits and "_.+@-", and must not start with "-"`;
  }
  return undefined;
}

/** Parses one entry (whitespace already removed). Throws EntryError. */
function parseEntry(raw: string): BucketEntry {
  let rest = raw;
  let readOnly = false;
  const colon = rest.lastIndexOf(":");
  if (colon >= 0) {
    const access = rest.slice(colon + 1);
    if (access === "ro") readOnly = true;
    else if (access !== "rw") throw new EntryError(`access "${clip(access)}" must be "ro" or "rw"`);
    rest = rest.slice(0, colon);
    if (rest.includes(":")) throw new EntryError(`only one ":ro" or ":rw" suffix is allowed`);
  }
  let name: string | undefined;
  const eq = rest.indexOf("=");
  if (eq >= 0) {
    name = rest.slice(0, eq);
    rest = rest.slice(eq + 1);
    if (rest.includes("=")) throw new EntryError(`only one "=" is allowed`);
  }
  const slash = rest.indexOf("/");
  const bucket = slash >= 0 ? rest.slice(0, slash) : rest;
  const prefix = slash >= 0 ? rest.slice(slash + 1).replace(/\/+$/, "") : "";
  const resolvedName = name ?? bucket;
  const problem =
    checkBucketName(bucket) ??
    checkPrefix(prefix) ??
    (name === undefined && checkMountName(bucket) !== undefined
      ? `bucket "${clip(bucket)}" is not a valid mount name; give the entry a name, as in "data=${clip(bucket)}"`
      : checkMountName(resolvedName));
  if (problem !== undefined) throw new EntryError(problem, name !== undefined ? name : undefined);
  return { name: resolvedName, bucket, prefix, readOnly };
}

/** Internal: one entry's problem, caught by {@link parseBuckets}. */
class EntryError extends Error {
  constructor(
    message: string,
    readonly entryName?: string,
  ) {
    super(message);
  }
}

/** Parses the annotation value. Never throws. */
export function parseBuckets(value: string | undefined | null): ParsedBuckets {
  const entries: BucketEntry[] = [];
  const errors: BucketEntryError[] = [];
  if (value === undefined || value === null) return { entries, errors };
  if (value.length > MAX_BUCKETS_ANNOTATION_LENGTH) {
    errors.push({
      index: 0,
      raw: clip(value),
      message: `annotation is longer than ${MAX_BUCKETS_ANNOTATION_LENGTH} characters; nothing was read`,
    });
    return { entries, errors };
  }
  const seen = new Set<string>();
  value.split(",").forEach((part, index) => {
    const raw = part.replace(/\s+/g, "");
    if (raw === "") return;
    if (entries.length >= MAX_BUCKET_ENTRIES) {
      errors.push({ index, raw: clip(raw), message: `more than ${MAX_BUCKET_ENTRIES} entries` });
      return;
    }
    try {
      const entry = parseEntry(raw);
      if (seen.has(entry.name)) {
        errors.push({
          index,
          raw: clip(raw),
          message: `name "${entry.name}" is used by an earlier entry; names must be unique within the pod`,
        });
        return;
      }
      seen.add(entry.name);
      entries.push(entry);
    } catch (e) {
      if (!(e instanceof EntryError)) throw e;
      const err: BucketEntryError =
        e.entryName !== undefined && checkMountName(e.entryName) === undefined
          ? { index, raw: clip(raw), name: e.entryName, message: e.message }
          : { index, raw: clip(raw), message: e.message };
      errors.push(err);
    }
  });
  return { entries, errors };
}

/** Canonical text of one entry: the name only when it differs from the bucket, `:ro` only when read-only. */
export function formatBucketEntry(e: BucketEntry): string {
  const target = e.prefix ? `${e.bucket}/${e.prefix}` : e.bucket;
  return `${e.name === e.bucket ? "" : `${e.name}=`}${target}${e.readOnly ? ":ro" : ""}`;
}

/** Canonical annotation value for a list of entries. */
export function formatBuckets(entries: readonly BucketEntry[]): string {
  return entries.map(formatBucketEntry).join(",");
}

/** A human description of an entry error, for warnings and Events. */
export function describeBucketError(e: BucketEntryError): string {
  return `entry ${e.index + 1} "${e.raw}": ${e.message}`;
}

function clip(s: string, max = 80): string {
  return s.length > max ? `${s.slice(0, max)}…` : s;
}
