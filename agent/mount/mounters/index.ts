/**
 * The mounter registry: pick a builder by name, build the command, and scrub credentials out of
 * whatever a client prints before it reaches a log, a status or an Event. Pure.
 */
import { AppError } from "../../../shared/errors.js";
import { MOUNTERS, type MounterName } from "../../../shared/names.js";
import { geesefs } from "./geesefs.js";
import { rclone } from "./rclone.js";
import { s3fs } from "./s3fs.js";
import type { BuildOptions, MountCommand, MounterBuilder, MountRequest, S3Credentials } from "./types.js";

export type * from "./types.js";
export { checkOptions, checkRequest, type OptionAllowlist, type OptionKind } from "./validate.js";
export { GEESEFS_OPTIONS } from "./geesefs.js";
export { RCLONE_OPTIONS, RCLONE_REMOTE } from "./rclone.js";
export { S3FS_LOG_FILE, S3FS_OPTIONS, S3FS_PASSWD_FILE } from "./s3fs.js";
export { DEFAULT_CLIENT_PATH, DEFAULT_PROGRAMS, type ProgramPaths } from "./programs.js";

/** Every builder, by mounter name. */
export const MOUNTER_BUILDERS: Readonly<Record<MounterName, MounterBuilder>> = Object.freeze({
  geesefs,
  s3fs,
  rclone,
});

/** Narrows a string (an annotation, a flag) to a mounter name, or throws `AppError("InvalidArgument")`. */
export function mounterName(value: string): MounterName {
  if ((MOUNTERS as readonly string[]).includes(value)) return value as MounterName;
  throw new AppError(
    "InvalidArgument",
    `mounter "${value.slice(0, 40)}" is unknown; use one of ${MOUNTERS.join(", ")}`,
  );
}

/**
 * Builds the command that mounts `req` with the named client. Throws `AppError("InvalidArgument")`
 * for an unknown mounter, a request that fails validation, or a user option off the allowlist.
 */
export function buildMount(mounter: MounterName, req: MountRequest, opts?: BuildOptions): MountCommand {
  return MOUNTER_BUILDERS[mounterName(mounter)].build(req, opts);
}

/** The strings that must never be shown: both keys. */
export function secretsOf(credentials: S3Credentials): string[] {
  return [credentials.secretAccessKey, credentials.accessKeyID];
}

/**
 * The timestamps the clients put on their log lines: rclone and GeeseFS `2026/12/02 16:23:29` (GeeseFS
 * and rclone's `--log-format microseconds` add `.123456`), s3fs `2026-12-02T16:23:29.123Z`.
 */
const CLIENT_TIMESTAMP =
  /\b\d{4}(?:\/\d{2}\/\d{2} |-\d{2}-\d{2}T)\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}\b)?/g;

/**
 * A failure message without the clients' timestamps, for telling whether two failures are the same:
 * a client that fails the same way on every retry prints new timestamps each time.
 */
export function withoutTimestamps(message: string): string {
  return message.replace(CLIENT_TIMESTAMP, "");
}

/** Text shown in place of a removed secret. */
export const SCRUBBED = "[REDACTED]";

/**
 * Replaces every occurrence of each secret in `text` (as is, and percent-encoded as it would appear
 * in a URL) with `[REDACTED]`. Empty secrets are ignored; longer secrets are replaced first so that
 * one secret containing another is removed whole.
 */
export function scrubSecrets(text: string, secrets: readonly string[]): string {
  const variants = new Set<string>();
  for (const s of secrets) {
    if (typeof s !== "string" || s === "") continue;
    variants.add(s);
    variants.add(encodeURIComponent(s));
  }
  let out = text;
  for (const v of [...variants].sort((a, b) => b.length - a.length)) out = out.split(v).join(SCRUBBED);
  return out;
}
