/**
 * s3fs-fuse (https://github.com/s3fs-fuse/s3fs-fuse), run in the foreground (`-f`) so that the
 * agent owns the process. Credentials go in a 0600 `passwd_file` in the mount's state directory.
 *
 *     s3fs -f -o url=…,use_path_request_style,endpoint=REGION,passwd_file=STATE/passwd-s3fs,
 *          logfile=STATE/s3fs.log,allow_other,umask=0022[,uid=N,gid=N][,ro][,user options]
 *          BUCKET[:/PREFIX] MOUNTPOINT
 *
 * s3fs exits 0 even when it cannot reach the bucket (in the foreground as well): it mounts, fails
 * its service check in the FUSE init callback, and unmounts. Never trust its exit code; readiness
 * is decided by `agent/mount/fuse-mount.ts`. In the foreground it logs to stdout, fully buffered when
 * that is not a terminal, and it ignores SIGTERM while the service check retries (about 20 s for
 * an unreachable endpoint), so a killed s3fs loses its last words: `logfile` is flushed per line.
 */
import { AppError } from "../../../shared/errors.js";
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

/** s3fs `-o` options a user may set. */
export const S3FS_OPTIONS: OptionAllowlist = Object.freeze({
  uid: { kind: "uint" },
  gid: { kind: "uint" },
  umask: { kind: "octal" },
  max_stat_cache_size: { kind: "uint" },
  stat_cache_expire: { kind: "uint" },
  multipart_size: { kind: "uint" },
  parallel_count: { kind: "uint", max: 1024 },
  connect_timeout: { kind: "uint" },
  readwrite_timeout: { kind: "uint" },
  enable_noobj_cache: { kind: "switch" },
});

/** Name of the credentials file inside the state directory. */
export const S3FS_PASSWD_FILE = "passwd-s3fs";
/** Name of the log file inside the state directory. */
export const S3FS_LOG_FILE = "s3fs.log";

function build(req: MountRequest, opts: BuildOptions = {}): MountCommand {
  checkRequest(req);
  const user = checkOptions("s3fs", req.options, S3FS_OPTIONS);
  const { accessKeyID, secretAccessKey } = req.credentials;
  // passwd_file lines are `KEY:SECRET` or `BUCKET:KEY:SECRET`: a ':' would change the meaning.
  if (accessKeyID.includes(":") || secretAccessKey.includes(":")) {
    throw new AppError(
      "InvalidArgument",
      "s3fs cannot use credentials that contain ':'; use the rclone or geesefs mounter for this Secret",
    );
  }
  const passwdFile = inStateDir(req, S3FS_PASSWD_FILE);
  const logFile = inStateDir(req, S3FS_LOG_FILE);
  const userNames = new Set(user.map((o) => o.name));
  const o: string[] = [
    `url=${req.endpoint}`,
    "use_path_request_style",
    `endpoint=${regionOf(req)}`,
    `passwd_file=${passwdFile}`,
    `logfile=${logFile}`,
    "allow_other",
  ];
  if (!userNames.has("umask")) o.push("umask=0022");
  if (req.uid !== undefined && !userNames.has("uid")) o.push(`uid=${req.uid}`);
  if (req.gid !== undefined && !userNames.has("gid")) o.push(`gid=${req.gid}`);
  if (req.readOnly) o.push("ro");
  for (const u of user) o.push(u.value === undefined ? u.name : `${u.name}=${u.value}`);
  const source = req.prefix === "" ? req.bucket : `${req.bucket}:/${req.prefix}`;
  return {
    command: programOf("s3fs", opts),
    argv: ["-f", "-o", o.join(","), source, req.mountPoint],
    env: cleanBaseEnv(opts.baseEnv, opts.clientPath),
    files: [{ path: passwdFile, content: `${accessKeyID}:${secretAccessKey}\n`, mode: 0o600 }],
    daemonizes: false,
    logFile,
  };
}

export const s3fs: MounterBuilder = Object.freeze({
  name: "s3fs",
  allowedOptions: Object.keys(S3FS_OPTIONS).sort(),
  build,
});
