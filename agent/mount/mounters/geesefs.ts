/**
 * GeeseFS (https://github.com/yandex-cloud/geesefs), per its documented CLI
 * `geesefs [global options] bucket[:prefix] mountpoint`, in the foreground (`-f`, logs to stderr),
 * with the keys in `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`:
 *
 *     geesefs -f --endpoint URL --region REGION -o allow_other [-o ro] [--uid N --gid N]
 *             [user flags] BUCKET[:PREFIX] MOUNTPOINT
 *
 * GeeseFS is not packaged for Debian or npm; the agent image installs a pinned release. Note that,
 * started as root with a non-zero `--uid`/`--gid`, GeeseFS drops to that user after mounting
 * (its `--setuid`/`--setgid` default to them), so it gets no on-disk cache directory here.
 */
import type { BuildOptions, MountCommand, MounterBuilder, MountRequest } from "./types.js";
import {
  checkOptions,
  checkRequest,
  cleanBaseEnv,
  programOf,
  regionOf,
  type OptionAllowlist,
} from "./validate.js";

/** GeeseFS flags a user may set (without the leading `--`). */
export const GEESEFS_OPTIONS: OptionAllowlist = Object.freeze({
  uid: { kind: "uint" },
  gid: { kind: "uint" },
  "dir-mode": { kind: "octal" },
  "file-mode": { kind: "octal" },
  "memory-limit": { kind: "uint" },
  "entry-limit": { kind: "uint" },
  "stat-cache-ttl": { kind: "duration" },
  "http-timeout": { kind: "duration" },
  "retry-interval": { kind: "duration" },
  "max-flushers": { kind: "uint", max: 1024 },
  "max-parallel-parts": { kind: "uint", max: 1024 },
  "max-parallel-copy": { kind: "uint", max: 1024 },
  "read-ahead": { kind: "uint" },
  "read-ahead-large": { kind: "uint" },
  "single-part": { kind: "uint" },
  "list-type": { kind: "enum", values: ["1", "2"] },
  cheap: { kind: "switch" },
  "no-checksum": { kind: "switch" },
  "no-implicit-dir": { kind: "switch" },
  "no-dir-object": { kind: "switch" },
  "fsync-on-close": { kind: "switch" },
  "enable-mtime": { kind: "switch" },
});

function build(req: MountRequest, opts: BuildOptions = {}): MountCommand {
  checkRequest(req);
  const user = checkOptions("geesefs", req.options, GEESEFS_OPTIONS);
  const env = cleanBaseEnv(opts.baseEnv, opts.clientPath);
  env.AWS_ACCESS_KEY_ID = req.credentials.accessKeyID;
  env.AWS_SECRET_ACCESS_KEY = req.credentials.secretAccessKey;
  const userNames = new Set(user.map((o) => o.name));
  const argv = ["-f", "--endpoint", req.endpoint, "--region", regionOf(req), "-o", "allow_other"];
  if (req.readOnly) argv.push("-o", "ro");
  if (req.uid !== undefined && !userNames.has("uid")) argv.push("--uid", String(req.uid));
  if (req.gid !== undefined && !userNames.has("gid")) argv.push("--gid", String(req.gid));
  for (const u of user) {
    if (u.value === undefined) {
      argv.push(`--${u.name}`);
      continue;
    }
    // GeeseFS parses integers with base 0: "755" would be decimal, "0755" is octal.
    const kind = GEESEFS_OPTIONS[u.name]?.kind;
    argv.push(`--${u.name}`, kind === "octal" && !u.value.startsWith("0") ? `0${u.value}` : u.value);
  }
  argv.push(req.prefix === "" ? req.bucket : `${req.bucket}:${req.prefix}`, req.mountPoint);
  return { command: programOf("geesefs", opts), argv, env, files: [], daemonizes: false };
}

export const geesefs: MounterBuilder = Object.freeze({
  name: "geesefs",
  allowedOptions: Object.keys(GEESEFS_OPTIONS).sort(),
  build,
});
