/**
 * The websocket console protocol (docs/design.md "Websocket console protocol"), typed once and validated
 * at runtime; the agent's console and the `dvctl` client both import this file. Pure: no I/O.
 *
 * JSON text frames only.
 * - Request: `{id, op, ...}`; `id` is a string or a number, at most 64 characters either way.
 * - Reply: `{id, ok: true, result}` or `{id, ok: false, error: {code, message}}`; `id` is `null`
 *   when the frame was too broken to read one.
 * - Progress of an in-flight `mount`/`unmount`: `{id, progress: {name, state, ...}}`, before its reply.
 * - Event pushed after a `watch`: `{event: "state", watch, namespace, pod, name, state, ...}`.
 *
 * Authentication is a bearer token in the `Authorization` header of the upgrade request, or an
 * `auth` request as the first frame.
 */
import { checkBucketName, checkMountName, checkPrefix, formatBucketEntry, parseBuckets } from "./buckets.js";
import {
  ConsoleError,
  MAX_ID_LENGTH,
  MAX_TIMEOUT_SECONDS,
  MAX_TOKEN_LENGTH,
  OPS,
  RequestError,
  mountEntryOf,
  type ConsoleRequest,
  type MountRequest,
  type Op,
  type ProgressFrame,
  type Reply,
  type RequestId,
  type ServerFrame,
  type StateEvent,
} from "./protocol-messages.js";

export * from "./protocol-messages.js";

function clip(s: string, max = 60): string {
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Why `ns` is not a namespace name (a DNS-1123 label), or undefined. */
export function checkNamespace(ns: string): string | undefined {
  const problem = checkMountName(ns);
  return problem === undefined ? undefined : `namespace: ${problem.replace(/^name /, "")}`;
}

/** Why `pod` is not a pod name (a DNS-1123 subdomain of at most 253 characters), or undefined. */
export function checkPodName(pod: string): string | undefined {
  if (pod.length === 0) return "pod name is empty";
  if (pod.length > 253) return `pod name "${clip(pod)}" is longer than 253 characters`;
  if (!DNS1123_SUBDOMAIN.test(pod))
    return `pod name "${clip(pod)}" must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')`;
  return undefined;
}

/** The fields each request may carry besides `id` and `op`; any other field is refused. */
export const REQUEST_FIELDS: Readonly<Record<Op, readonly string[]>> = {
  list: ["namespace"],
  status: ["namespace", "pod"],
  mount: ["namespace", "pod", "bucket", "prefix", "name", "readOnly", "replace", "timeoutSeconds"],
  unmount: ["namespace", "pod", "name", "timeoutSeconds"],
  watch: ["namespace", "pod"],
  auth: ["token"],
};

type Obj = Record<string, unknown>;

/** Reads the id of a decoded frame; throws RequestError (id null) when it is missing or malformed. */
function readId(o: Obj): RequestId {
  const id = o.id;
  if (id === undefined || id === null)
    throw new RequestError(null, `"id" is required (a string or a number)`);
  if (typeof id === "string") {
    if (id.length === 0 || id.length > MAX_ID_LENGTH)
      throw new RequestError(null, `"id" must be 1 to ${MAX_ID_LENGTH} characters`);
    return id;
  }
  if (typeof id === "number") {
    if (!Number.isFinite(id) || String(id).length > MAX_ID_LENGTH)
      throw new RequestError(null, `"id" must be a finite number of at most ${MAX_ID_LENGTH} characters`);
    return id;
  }
  throw new RequestError(null, `"id" must be a string or a number, not ${typeName(id)}`);
}

function typeName(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "an array" : `a ${typeof v}`;
}

/** Parses and validates one text frame. Throws {@link RequestError} (code BadRequest) with a clear message. */
export function parseRequest(text: string): ConsoleRequest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new RequestError(
      null,
      `the frame is not JSON (${clip((e as Error).message, 80)}); send one JSON object per text frame`,
    );
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw))
    throw new RequestError(null, `a request must be a JSON object, not ${typeName(raw)}`);
  const o = raw as Obj;
  const id = readId(o);
  const bad = (message: string): RequestError => new RequestError(id, message);
  if (typeof o.op !== "string") throw bad(`"op" is required: one of ${OPS.join(", ")}`);
  const op = o.op as Op;
  if (!(OPS as readonly string[]).includes(op))
    throw bad(`unknown op "${clip(o.op)}"; expected one of ${OPS.join(", ")}`);
  const known = REQUEST_FIELDS[op];
  for (const k of Object.keys(o))
    if (k !== "id" && k !== "op" && !known.includes(k))
      throw bad(`unknown field "${clip(k)}" for op ${op}; known fields: ${known.join(", ") || "none"}`);

  const str = (field: string, required: boolean, max: number): string | undefined => {
    const v = o[field];
    if (v === undefined) {
      if (required) throw bad(`"${field}" is required for op ${op}`);
      return undefined;
    }
    if (typeof v !== "string") throw bad(`"${field}" must be a string, not ${typeName(v)}`);
    // A length cap before any pattern, so that hostile input costs nothing and is not echoed back.
    if (v.length > max) throw bad(`"${field}" is longer than ${max} characters`);
    return v;
  };
  const check = (problem: string | undefined): void => {
    if (problem !== undefined) throw bad(problem);
  };
  const namespace = (required: boolean): string | undefined => {
    const ns = str("namespace", required, 63);
    if (ns !== undefined) check(checkNamespace(ns));
    return ns;
  };
  const pod = (required: boolean): string | undefined => {
    const p = str("pod", required, 253);
    if (p !== undefined) check(checkPodName(p));
    return p;
  };
  const timeout = (): number | undefined => {
    const t = o.timeoutSeconds;
    if (t === undefined) return undefined;
    if (typeof t !== "number" || !Number.isInteger(t) || t < 1 || t > MAX_TIMEOUT_SECONDS)
      throw bad(`"timeoutSeconds" must be a whole number from 1 to ${MAX_TIMEOUT_SECONDS}`);
    return t;
  };
  const opt = <T>(value: T | undefined, key: string): Record<string, T> =>
    value === undefined ? {} : { [key]: value };

  switch (op) {
    case "auth": {
      const token = str("token", true, MAX_TOKEN_LENGTH)!;
      if (token.trim() === "") throw bad(`"token" is empty`);
      return { id, op, token };
    }
    case "list":
      return { id, op, ...opt(namespace(false), "namespace") };
    case "status":
      return { id, op, namespace: namespace(true)!, pod: pod(true)! };
    case "watch": {
      const ns = namespace(false);
      const p = pod(false);
      if (p !== undefined && ns === undefined) throw bad(`"pod" needs "namespace"`);
      return { id, op, ...opt(ns, "namespace"), ...opt(p, "pod") };
    }
    case "unmount": {
      const ns = namespace(true)!;
      const p = pod(true)!;
      const name = str("name", true, 63)!;
      check(checkMountName(name));
      return { id, op, namespace: ns, pod: p, name, ...opt(timeout(), "timeoutSeconds") };
    }
    case "mount": {
      const ns = namespace(true)!;
      const p = pod(true)!;
      const bucket = str("bucket", true, 63)!;
      check(checkBucketName(bucket));
      const rawPrefix = str("prefix", false, 1024);
      const prefix = rawPrefix === undefined ? undefined : rawPrefix.replace(/^\/+|\/+$/g, "");
      if (prefix !== undefined) check(checkPrefix(prefix));
      const name = str("name", false, 63);
      if (name !== undefined) check(checkMountName(name));
      else if (checkMountName(bucket) !== undefined)
        throw bad(`bucket "${bucket}" is not a valid mount name; give the mount a "name" (a DNS-1123 label)`);
      const readOnly = o.readOnly;
      if (readOnly !== undefined && typeof readOnly !== "boolean")
        throw bad(`"readOnly" must be true or false, not ${typeName(readOnly)}`);
      const replace = o.replace;
      if (replace !== undefined && typeof replace !== "boolean")
        throw bad(`"replace" must be true or false, not ${typeName(replace)}`);
      const req: MountRequest = {
        id,
        op,
        namespace: ns,
        pod: p,
        bucket,
        ...opt(prefix, "prefix"),
        ...opt(name, "name"),
        ...opt(readOnly, "readOnly"),
        ...opt(replace, "replace"),
        ...opt(timeout(), "timeoutSeconds"),
      };
      // The entry must read back as itself, so that the annotation never holds what the agent rejects.
      const entry = mountEntryOf(req);
      const back = parseBuckets(formatBucketEntry(entry));
      const got = back.entries[0];
      if (back.errors.length > 0 || got === undefined || formatBucketEntry(got) !== formatBucketEntry(entry))
        throw bad("the mount cannot be written as a dynamic-volumes/buckets entry");
      return req;
    }
  }
}

/**
 * Parses a frame from the agent (for clients). Throws ConsoleError("BadRequest") when it is not one
 * of the three shapes; fields inside `result` are not checked.
 */
export function parseServerFrame(text: string): ServerFrame {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new ConsoleError("BadRequest", "the agent sent a frame that is not JSON");
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw))
    throw new ConsoleError("BadRequest", "the agent sent a frame that is not a JSON object");
  const o = raw as Obj;
  const isId = (v: unknown): v is RequestId => typeof v === "string" || typeof v === "number";
  if (
    o.event === "state" &&
    typeof o.pod === "string" &&
    typeof o.name === "string" &&
    typeof o.state === "string"
  )
    return o as unknown as StateEvent;
  if (isId(o.id) && typeof o.progress === "object" && o.progress !== null)
    return o as unknown as ProgressFrame;
  if (o.ok === true && isId(o.id)) return o as unknown as Reply;
  if (o.ok === false && (isId(o.id) || o.id === null)) {
    const err = o.error as Obj | undefined;
    if (typeof err?.code === "string" && typeof err.message === "string") return o as unknown as Reply;
  }
  throw new ConsoleError("BadRequest", "the agent sent a frame of unknown shape");
}
