/**
 * rclone mount (https://rclone.org/commands/rclone_mount/), configured through environment
 * variables only (`RCLONE_CONFIG_DV_*`, https://rclone.org/docs/#config-file) with `--config
 * /dev/null`, so that no config file holds the keys and nothing is in argv:
 *
 *     rclone --config /dev/null mount dv:BUCKET[/PREFIX] MOUNTPOINT --allow-other
 *            --vfs-cache-mode writes --vfs-write-back 0s --cache-dir STATE/cache [--read-only] [--uid N --gid N] [user flags]
 *
 * rclone stays in the foreground and logs to stderr. Caveats seen with rclone 1.60: it dies with
 * `LoadCustomCABundleError` when `AWS_CA_BUNDLE` is set, so that variable is removed; a missing
 * bucket mounts as an empty directory; uploads start when a file is closed (`--vfs-write-back 0s`).
 */
import type { BuildOptions, MountCommand, MounterBuilder, MountRequest } from "./types.js";
import {
  checkOptions,
  checkRequest,
  cleanBaseEnv,
  programOf,
  inStateDir,
  regionOf,
  type OptionAllowlist,
} from "./validate.js";

/** rclone mount flags a user may set (without the leading `--`). */
export const RCLONE_OPTIONS: OptionAllowlist = Object.freeze({
  "vfs-cache-mode": { kind: "enum", values: ["off", "minimal", "writes", "full"] },
  "vfs-cache-max-size": { kind: "size" },
  "vfs-cache-max-age": { kind: "duration" },
  "vfs-write-back": { kind: "duration" },
  "dir-cache-time": { kind: "duration" },
  "attr-timeout": { kind: "duration" },
  "buffer-size": { kind: "size" },
  uid: { kind: "uint" },
  gid: { kind: "uint" },
  umask: { kind: "octal" },
});

/** Name of the on-the-fly remote. */
export const RCLONE_REMOTE = "dv";

function build(req: MountRequest, opts: BuildOptions = {}): MountCommand {
  checkRequest(req);
  const user = checkOptions("rclone", req.options, RCLONE_OPTIONS);
  const cacheDir = inStateDir(req, "cache");
  const prefix = `RCLONE_CONFIG_${RCLONE_REMOTE.toUpperCase()}_`;
  const env = cleanBaseEnv(opts.baseEnv, opts.clientPath);
  delete env.AWS_CA_BUNDLE;
  Object.assign(env, {
    [`${prefix}TYPE`]: "s3",
    [`${prefix}PROVIDER`]: "Other",
    [`${prefix}ENV_AUTH`]: "false",
    [`${prefix}ENDPOINT`]: req.endpoint,
    [`${prefix}REGION`]: regionOf(req),
    [`${prefix}FORCE_PATH_STYLE`]: "true",
    [`${prefix}ACCESS_KEY_ID`]: req.credentials.accessKeyID,
    [`${prefix}SECRET_ACCESS_KEY`]: req.credentials.secretAccessKey,
  });
  const userNames = new Set(user.map((o) => o.name));
  const remote = `${RCLONE_REMOTE}:${req.bucket}${req.prefix === "" ? "" : `/${req.prefix}`}`;
  const argv = ["--config", "/dev/null", "mount", remote, req.mountPoint, "--allow-other"];
  if (!userNames.has("vfs-cache-mode")) argv.push("--vfs-cache-mode", "writes");
  // rclone exits on unmount without uploading files still waiting out --vfs-write-back (5 s by
  // default), so a write acknowledged just before an unmount was lost; upload on close instead.
  // Uploads already running are finished before rclone exits.
  if (!userNames.has("vfs-write-back")) argv.push("--vfs-write-back", "0s");
  argv.push("--cache-dir", cacheDir);
  if (req.readOnly) argv.push("--read-only");
  if (req.uid !== undefined && !userNames.has("uid")) argv.push("--uid", String(req.uid));
  if (req.gid !== undefined && !userNames.has("gid")) argv.push("--gid", String(req.gid));
  for (const u of user) argv.push(`--${u.name}`, ...(u.value === undefined ? [] : [u.value]));
  return { command: programOf("rclone", opts), argv, env, files: [], daemonizes: false, cacheDir };
}

export const rclone: MounterBuilder = Object.freeze({
  name: "rclone",
  allowedOptions: Object.keys(RCLONE_OPTIONS).sort(),
  build,
});
