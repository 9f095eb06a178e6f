/**
 * Defensive checks shared by the mounter builders: the request (bucket, prefix, paths, endpoint,
 * credentials) and the user options against a per-mounter allowlist. Everything that reaches an
 * argv or an option list passes here first. Pure; failures are `AppError("InvalidArgument")`.
 */
import { checkBucketName, checkPrefix } from "../../../shared/buckets.js";
import { AppError } from "../../../shared/errors.js";
import { DEFAULT_CLIENT_PATH, DEFAULT_PROGRAMS } from "./programs.js";
import type { BaseEnv, BuildOptions, MounterName, MountOptionValue, MountRequest } from "./types.js";

/** How a user option's value is checked. */
export type OptionKind =
  /** Decimal digits, at most `max`. */
  | { readonly kind: "uint"; readonly max?: number }
  /** Permission bits or a umask: 3 or 4 octal digits (`022`, `0022`, `0755`). */
  | { readonly kind: "octal" }
  /** One of a few words. */
  | { readonly kind: "enum"; readonly values: readonly string[] }
  /** A byte size: digits with an optional `K`/`M`/`G`/`T` suffix (`512`, `16M`, `10G`). */
  | { readonly kind: "size" }
  /** A duration: digits with units `ms`/`s`/`m`/`h`, possibly chained (`30s`, `1h30m`). */
  | { readonly kind: "duration" }
  /** A switch that takes no value (`true`). */
  | { readonly kind: "switch" };

export type OptionAllowlist = Readonly<Record<string, OptionKind>>;

/** A user option after validation: name and value (`undefined` for a switch). */
export interface CheckedOption {
  readonly name: string;
  readonly value?: string;
}

const MAX_OPTION_VALUE = 64;
const MAX_PATH = 4096;
const MAX_CREDENTIAL = 1024;
// Paths end up inside FUSE option lists (`-o passwd_file=...`), so commas, '=' and whitespace are out.
const SAFE_PATH = /^\/[A-Za-z0-9._@+/-]*$/;
// No leading "-": the region lands in an argv position where it must never read as a flag.
const REGION = /^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$/;

function invalid(message: string): AppError {
  return new AppError("InvalidArgument", message);
}

function show(s: string): string {
  return JSON.stringify(s.length > 64 ? `${s.slice(0, 64)}…` : s);
}

function checkValueSyntax(mounter: MounterName, name: string, value: string): void {
  const bad =
    value === ""
      ? "is empty"
      : value.length > MAX_OPTION_VALUE
        ? `is longer than ${MAX_OPTION_VALUE} characters`
        : value.startsWith("-")
          ? 'must not start with "-"'
          : value.includes("..")
            ? 'must not contain ".."'
            : /[,=\s]/.test(value)
              ? "must not contain ',', '=' or whitespace"
              : /[^A-Za-z0-9._]/.test(value)
                ? "may contain only letters, digits, '.' and '_'"
                : undefined;
  if (bad !== undefined) throw invalid(`${mounter} option "${name}": value ${show(value)} ${bad}`);
}

function checkValueKind(mounter: MounterName, name: string, kind: OptionKind, value: string): void {
  const fail = (what: string): never => {
    throw invalid(`${mounter} option "${name}": value ${show(value)} must be ${what}`);
  };
  switch (kind.kind) {
    case "uint": {
      if (!/^\d{1,10}$/.test(value)) fail("a whole number");
      if (kind.max !== undefined && Number(value) > kind.max) fail(`a whole number up to ${kind.max}`);
      return;
    }
    case "octal":
      if (!/^[0-7]{3,4}$/.test(value)) fail("3 or 4 octal digits, such as 0022");
      return;
    case "enum":
      if (!kind.values.includes(value)) fail(`one of ${kind.values.join(", ")}`);
      return;
    case "size":
      if (!/^\d{1,12}[KMGT]?$/.test(value)) fail("a size such as 512, 16M or 10G");
      return;
    case "duration":
      if (!/^(\d{1,9}(ms|s|m|h))+$/.test(value)) fail("a duration such as 500ms, 30s, 5m or 1h30m");
      return;
    case "switch":
      fail("absent: it is a switch and takes no value");
  }
}

/**
 * Checks user options against the mounter's allowlist. Returns them sorted by name, so that the
 * argv is the same for the same options. An unknown name, a value of the wrong shape, a value on a
 * switch or a switch without a value is `AppError("InvalidArgument")` naming the option.
 */
export function checkOptions(
  mounter: MounterName,
  options: Readonly<Record<string, MountOptionValue>>,
  allowlist: OptionAllowlist,
): CheckedOption[] {
  const allowed = Object.keys(allowlist).sort();
  const out: CheckedOption[] = [];
  for (const name of Object.keys(options).sort()) {
    const kind = Object.hasOwn(allowlist, name) ? allowlist[name] : undefined;
    if (kind === undefined) {
      throw invalid(`${mounter} option ${show(name)} is not allowed; allowed options: ${allowed.join(", ")}`);
    }
    const value = options[name];
    if (kind.kind === "switch") {
      if (value !== true && value !== "true") {
        throw invalid(`${mounter} option "${name}" is a switch and takes no value`);
      }
      out.push({ name });
      continue;
    }
    if (typeof value !== "string") throw invalid(`${mounter} option "${name}" needs a value`);
    checkValueSyntax(mounter, name, value);
    checkValueKind(mounter, name, kind, value);
    out.push({ name, value });
  }
  return out;
}

/** Checks an absolute path that goes into an argv or an option list. */
export function checkAbsolutePath(what: string, path: string): void {
  if (typeof path !== "string" || !path.startsWith("/"))
    throw invalid(`${what} ${show(path)} must be absolute`);
  if (path.length > MAX_PATH) throw invalid(`${what} is longer than ${MAX_PATH} characters`);
  const segments = path.split("/");
  if (segments.includes("..") || segments.includes("."))
    throw invalid(`${what} ${show(path)} must not contain "." or ".." segments`);
  if (!SAFE_PATH.test(path))
    throw invalid(`${what} ${show(path)} may contain only letters, digits and "._@+/-"`);
}

/** Checks the endpoint URL: http(s), no user info (it would land in argv), no ',' or whitespace. */
export function checkEndpoint(endpoint: string): void {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw invalid(`endpoint ${show(endpoint)} is not a URL; use http(s)://host[:port]`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw invalid(`endpoint ${show(endpoint)} must start with http:// or https://`);
  if (url.username !== "" || url.password !== "")
    throw invalid(
      "endpoint must not contain credentials; put them in the Secret's accessKeyID and secretAccessKey",
    );
  if (url.search !== "" || url.hash !== "" || /[\s,'"\\]/.test(endpoint))
    throw invalid(
      `endpoint ${show(endpoint)} must be a plain URL without query, fragment, ',' or whitespace`,
    );
}

function checkCredential(what: string, value: string): void {
  if (typeof value !== "string" || value === "") throw invalid(`${what} is empty`);
  if (value.length > MAX_CREDENTIAL) throw invalid(`${what} is longer than ${MAX_CREDENTIAL} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) throw invalid(`${what} contains control characters`);
}

function checkId(what: string, id: number | undefined): void {
  if (id === undefined) return;
  if (!Number.isInteger(id) || id < 0 || id > 0xfffffffe) throw invalid(`${what} ${id} is not a valid id`);
}

/** The request checks every mounter shares. Throws `AppError("InvalidArgument")`. */
export function checkRequest(req: MountRequest): void {
  const bucketProblem = checkBucketName(req.bucket) ?? checkPrefix(req.prefix);
  if (bucketProblem !== undefined) throw invalid(bucketProblem);
  checkAbsolutePath("mount point", req.mountPoint);
  checkAbsolutePath("state directory", req.stateDir);
  if (req.stateDir === "/" || req.mountPoint === "/")
    throw invalid("mount point and state directory must not be /");
  checkEndpoint(req.endpoint);
  if (req.region !== "" && !REGION.test(req.region))
    throw invalid(`region ${show(req.region)} may contain only letters, digits, '-' and '_'`);
  checkCredential("accessKeyID", req.credentials.accessKeyID);
  checkCredential("secretAccessKey", req.credentials.secretAccessKey);
  checkId("uid", req.uid);
  checkId("gid", req.gid);
}

/** The region to sign with. */
export function regionOf(req: MountRequest): string {
  return req.region === "" ? "us-east-1" : req.region;
}

/** `stateDir` joined with a file name. */
export function inStateDir(req: MountRequest, name: string): string {
  return `${req.stateDir.replace(/\/+$/, "")}/${name}`;
}

/**
 * The base environment minus variables that could hand the client other credentials or config
 * (`AWS_*` except the CA bundle, `RCLONE_*`, `AWSACCESSKEYID`/`AWSSECRETACCESSKEY` for s3fs), with
 * the client's own `PATH` in place of whatever `PATH` the base environment had.
 */
export function cleanBaseEnv(
  baseEnv: BaseEnv | undefined,
  clientPath: string = DEFAULT_CLIENT_PATH,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(baseEnv ?? {})) {
    if (v === undefined) continue;
    const upper = k.toUpperCase();
    if (upper === "PATH") continue;
    if (upper.startsWith("RCLONE_") || upper === "AWSACCESSKEYID" || upper === "AWSSECRETACCESSKEY") continue;
    if (upper.startsWith("AWS_") && upper !== "AWS_CA_BUNDLE") continue;
    out[k] = v;
  }
  checkClientPath(clientPath);
  out.PATH = clientPath;
  return out;
}

/** A client's `PATH`: absolute directories only, so that no lookup depends on a working directory. */
export function checkClientPath(clientPath: string): void {
  const dirs = clientPath.split(":");
  if (dirs.some((d) => !d.startsWith("/") || d.split("/").includes("..")))
    throw invalid(`client PATH ${show(clientPath)} must list absolute directories only`);
}

/** The absolute path of the client a builder runs. */
export function programOf(mounter: MounterName, opts: BuildOptions): string {
  const program = opts.program ?? DEFAULT_PROGRAMS[mounter];
  if (!program.startsWith("/"))
    throw invalid(
      `${mounter} program ${show(program)} must be an absolute path; programs are never looked up through PATH`,
    );
  return program;
}
