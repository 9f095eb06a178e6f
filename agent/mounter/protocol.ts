/**
 * The agent ↔ mounter protocol on `<root>/run/mounter.sock`: one JSON object per line each way.
 *
 * A request is `{"seq": N, "op": …, …fields}`. The mounter answers each with
 * `{"seq": N, "ok": true, "result": …}` or `{"seq": N, "ok": false, "error": {"code", "message"}}`,
 * and a `mount` also with `{"seq": N, "started": true}` as soon as its client runs. Unasked, it sends
 * `{"event": "clientExited", "mountPoint": …}` when a client dies while its mount is in use.
 *
 * Requests name a mount by pod id and entry name, never by path, and carry data, never an argv:
 * the mounter derives every path and builds every command itself. {@link parseRequest} is the
 * whole of the mounter's input check on the wire; the builders check the mount's fields again.
 */
import { checkMountName } from "../../shared/buckets.js";
import { AppError, describeValue, ERROR_CODES, type ErrorCode } from "../../shared/errors.js";
import { nestsDeeperThan } from "../../shared/json-depth.js";
import { isPodDirName, MOUNTERS, type MounterName } from "../../shared/names.js";
import type { MountOptionValue } from "../mount/mounters/types.js";

/** Longest line either side accepts: a mount request with credentials is well under 8 KiB. */
export const MAX_LINE_BYTES = 64 * 1024;

/** Deepest nesting accepted in a request; the deepest real one (a record) nests 3. */
export const MAX_DEPTH = 8;

/** The largest record the mounter keeps for a mount, serialized. */
export const MAX_RECORD_BYTES = 16 * 1024;

export interface MountOp {
  readonly op: "mount";
  readonly podId: string;
  readonly name: string;
  readonly mounter: MounterName;
  readonly bucket: string;
  readonly prefix: string;
  readonly readOnly: boolean;
  readonly endpoint: string;
  readonly region: string;
  readonly accessKeyID: string;
  readonly secretAccessKey: string;
  readonly options: Readonly<Record<string, MountOptionValue>>;
  readonly uid?: number;
  readonly gid?: number;
  /** See `listBeforePlacing` in agent/mount/mounters/types.ts. */
  readonly listBeforePlacing?: boolean;
}

/**
 * Unmounts `<root>/pods/<podId>/<path…>`: `path` is the entry name, or deeper components for a
 * mount found below an entry. The entry's private state goes with it (a cache that may hold writes
 * not yet in S3 excepted).
 */
export interface UnmountOp {
  readonly op: "unmount";
  readonly podId: string;
  readonly path: readonly string[];
}

/** Removes an empty directory: `<root>/pods/<podId>`, or one component below it. */
export interface RmdirOp {
  readonly op: "rmdir";
  readonly podId: string;
  readonly path: readonly string[];
}

/** The agent's record of what a mount is (bucket, prefix, Secret…), kept beside its state. */
export interface ReadRecordOp {
  readonly op: "readRecord";
  readonly podId: string;
  readonly name: string;
}

export interface WriteRecordOp {
  readonly op: "writeRecord";
  readonly podId: string;
  readonly name: string;
  readonly record: Readonly<Record<string, unknown>>;
}

/** Removes a mount's private state (not its mount), keeping a cache with unuploaded writes. */
export interface ForgetOp {
  readonly op: "forget";
  readonly podId: string;
  readonly name: string;
}

export interface ForgetPodOp {
  readonly op: "forgetPod";
  readonly podId: string;
}

/** Pod ids that have private state. */
export interface IdsOp {
  readonly op: "ids";
}

/** The clients the mounter runs: `{clients: [{mountPoint, pid}]}`. */
export interface ListOp {
  readonly op: "list";
}

export interface PingOp {
  readonly op: "ping";
}

export type MounterOp =
  | MountOp
  | UnmountOp
  | RmdirOp
  | ReadRecordOp
  | WriteRecordOp
  | ForgetOp
  | ForgetPodOp
  | IdsOp
  | ListOp
  | PingOp;

export type MounterRequest = MounterOp & { readonly seq: number };

export interface MounterError {
  readonly code: ErrorCode;
  readonly message: string;
}

export type MounterReply =
  | { readonly seq: number; readonly ok: true; readonly result: unknown }
  | { readonly seq: number; readonly ok: false; readonly error: MounterError }
  | { readonly seq: number; readonly started: true };

export interface ClientExitedEvent {
  readonly event: "clientExited";
  readonly mountPoint: string;
}

const OPS = [
  "mount",
  "unmount",
  "rmdir",
  "readRecord",
  "writeRecord",
  "forget",
  "forgetPod",
  "ids",
  "list",
  "ping",
] as const;

const FIELDS: Readonly<Record<MounterOp["op"], readonly string[]>> = {
  mount: [
    "podId",
    "name",
    "mounter",
    "bucket",
    "prefix",
    "readOnly",
    "endpoint",
    "region",
    "accessKeyID",
    "secretAccessKey",
    "options",
    "uid",
    "gid",
    "listBeforePlacing",
  ],
  unmount: ["podId", "path"],
  rmdir: ["podId", "path"],
  readRecord: ["podId", "name"],
  writeRecord: ["podId", "name", "record"],
  forget: ["podId", "name"],
  forgetPod: ["podId"],
  ids: [],
  list: [],
  ping: [],
};

const KNOWN_CODES: ReadonlySet<string> = new Set(ERROR_CODES);

function bad(message: string): AppError {
  return new AppError("BadRequest", message);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Fields whose value never goes into a message, not even a number sent in a string's place. */
const SECRET_FIELDS: ReadonlySet<string> = new Set(["accessKeyID", "secretAccessKey"]);

function str(o: Record<string, unknown>, key: string, max = 4096): string {
  const v = o[key];
  if (typeof v !== "string") {
    // describeValue prints numbers and booleans as they are.
    const what =
      SECRET_FIELDS.has(key) && typeof v !== "object" && v !== undefined ? `a ${typeof v}` : describeValue(v);
    throw bad(`${key} must be a string, not ${what}`);
  }
  if (v.length > max) throw bad(`${key} is longer than ${max} characters`);
  return v;
}

function podId(o: Record<string, unknown>): string {
  const v = str(o, "podId", 64);
  if (!isPodDirName(v))
    throw bad(
      `podId ${describeValue(v)} is not a pod id (32 lowercase hex digits, or a pod uid in CSI mode)`,
    );
  return v;
}

function entryName(o: Record<string, unknown>): string {
  const v = str(o, "name", 63);
  const problem = checkMountName(v);
  if (problem !== undefined) throw bad(`name: ${problem}`);
  return v;
}

/** One path component below a pod's directory: no `/`, no NUL, not `.` or `..`. */
function component(v: unknown): string {
  if (typeof v !== "string" || v === "" || v === "." || v === ".." || v.length > 255 || /[/\0]/.test(v))
    throw bad(`path component ${describeValue(v)} is not a single directory name`);
  return v;
}

function path(o: Record<string, unknown>, min: number, max: number): string[] {
  const v = o.path;
  if (!Array.isArray(v) || v.length < min || v.length > max)
    throw bad(`path must be a list of ${min} to ${max} directory names`);
  return v.map(component);
}

function optionalId(o: Record<string, unknown>, key: "uid" | "gid"): { uid?: number } | { gid?: number } {
  const v = o[key];
  if (v === undefined) return {};
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xfffffffe)
    throw bad(`${key} must be a non-negative integer`);
  return { [key]: v };
}

function options(o: Record<string, unknown>): Record<string, MountOptionValue> {
  const v = o.options;
  if (!isObject(v)) throw bad("options must be an object");
  const keys = Object.keys(v);
  if (keys.length > 64) throw bad("options has more than 64 entries");
  const out: Record<string, MountOptionValue> = {};
  for (const k of keys) {
    const x = v[k];
    if (x !== true && typeof x !== "string") throw bad(`option ${describeValue(k)} must be a string or true`);
    out[k] = x;
  }
  return out;
}

function parseOp(o: Record<string, unknown>): MounterOp {
  const op = o.op;
  if (typeof op !== "string" || !(OPS as readonly string[]).includes(op))
    throw bad(`op ${describeValue(op)} is not one of ${OPS.join(", ")}`);
  const allowed = new Set(["seq", "op", ...FIELDS[op as MounterOp["op"]]]);
  for (const k of Object.keys(o)) if (!allowed.has(k)) throw bad(`${op} takes no field ${describeValue(k)}`);
  switch (op as MounterOp["op"]) {
    case "mount": {
      const mounter = str(o, "mounter", 16);
      if (!(MOUNTERS as readonly string[]).includes(mounter))
        throw bad(`mounter ${describeValue(mounter)} is not one of ${MOUNTERS.join(", ")}`);
      if (typeof o.readOnly !== "boolean") throw bad("readOnly must be true or false");
      if (o.listBeforePlacing !== undefined && typeof o.listBeforePlacing !== "boolean")
        throw bad("listBeforePlacing must be true or false");
      return {
        op: "mount",
        podId: podId(o),
        name: entryName(o),
        mounter: mounter as MounterName,
        bucket: str(o, "bucket", 255),
        prefix: str(o, "prefix", 1024),
        readOnly: o.readOnly,
        endpoint: str(o, "endpoint", 2048),
        region: str(o, "region", 128),
        accessKeyID: str(o, "accessKeyID"),
        secretAccessKey: str(o, "secretAccessKey"),
        options: options(o),
        ...optionalId(o, "uid"),
        ...optionalId(o, "gid"),
        ...(o.listBeforePlacing === true ? { listBeforePlacing: true } : {}),
      };
    }
    case "unmount":
      return { op: "unmount", podId: podId(o), path: path(o, 1, 16) };
    case "rmdir":
      return { op: "rmdir", podId: podId(o), path: path(o, 0, 1) };
    case "readRecord":
      return { op: "readRecord", podId: podId(o), name: entryName(o) };
    case "writeRecord": {
      if (!isObject(o.record)) throw bad("record must be an object");
      if (JSON.stringify(o.record).length > MAX_RECORD_BYTES)
        throw bad(`record is larger than ${MAX_RECORD_BYTES} bytes`);
      return { op: "writeRecord", podId: podId(o), name: entryName(o), record: o.record };
    }
    case "forget":
      return { op: "forget", podId: podId(o), name: entryName(o) };
    case "forgetPod":
      return { op: "forgetPod", podId: podId(o) };
    case "ids":
      return { op: "ids" };
    case "list":
      return { op: "list" };
    case "ping":
      return { op: "ping" };
  }
}

/**
 * Parses one request line. Throws `AppError("BadRequest")` (or `"PayloadTooLarge"`) naming the
 * first problem; the sequence number, when one could be read, is on the error as `seq`.
 */
export function parseRequest(line: Buffer): MounterRequest {
  if (line.length > MAX_LINE_BYTES)
    throw new AppError("PayloadTooLarge", `request is longer than ${MAX_LINE_BYTES} bytes`);
  if (nestsDeeperThan(line, MAX_DEPTH)) throw bad(`request nests deeper than ${MAX_DEPTH} levels`);
  let v: unknown;
  try {
    v = JSON.parse(line.toString("utf8"));
  } catch {
    throw bad("request is not JSON");
  }
  if (!isObject(v)) throw bad("request must be a JSON object");
  const seq = v.seq;
  if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 0)
    throw bad("seq must be a non-negative integer");
  try {
    return { ...parseOp(v), seq };
  } catch (e) {
    throw Object.assign(e as Error, { seq });
  }
}

/** The `seq` a {@link parseRequest} error belongs to, if it was readable. */
export function seqOf(e: unknown): number | undefined {
  const seq = (e as { seq?: unknown }).seq;
  return typeof seq === "number" ? seq : undefined;
}

/** An error as sent on the wire: an AppError's code and message, anything else "Internal". */
export function wireError(e: unknown): MounterError {
  if (e instanceof AppError) return { code: e.code, message: e.message };
  return { code: "Internal", message: "internal error in the mounter; its log has the details" };
}

/** The AppError a wire error stands for; an unknown code counts as Internal. */
export function fromWireError(v: unknown): AppError {
  if (!isObject(v) || typeof v.message !== "string")
    return new AppError("Internal", "the mounter answered with a malformed error");
  const code = typeof v.code === "string" && KNOWN_CODES.has(v.code) ? (v.code as ErrorCode) : "Internal";
  return new AppError(code, v.message);
}

/** Splits a byte stream into lines; a line longer than `max` is reported and the stream refused. */
export class LineReader {
  private parts: Buffer[] = [];
  private length = 0;

  constructor(private readonly max: number = MAX_LINE_BYTES) {}

  /** The complete lines in `chunk` (after what came before). Throws PayloadTooLarge on a long line. */
  push(chunk: Buffer): Buffer[] {
    const lines: Buffer[] = [];
    let from = 0;
    for (let nl = chunk.indexOf(0x0a, from); nl !== -1; nl = chunk.indexOf(0x0a, from)) {
      const piece = chunk.subarray(from, nl);
      const line = this.parts.length === 0 ? piece : Buffer.concat([...this.parts, piece]);
      this.parts = [];
      this.length = 0;
      if (line.length > this.max)
        throw new AppError("PayloadTooLarge", `line is longer than ${this.max} bytes`);
      if (line.length > 0) lines.push(line);
      from = nl + 1;
    }
    if (from < chunk.length) {
      this.length += chunk.length - from;
      if (this.length > this.max)
        throw new AppError("PayloadTooLarge", `line is longer than ${this.max} bytes`);
      this.parts.push(chunk.subarray(from));
    }
    return lines;
  }
}
