/**
 * The console protocol's messages (docs/design.md "Websocket console protocol"): types, error codes and
 * encoders. Import `shared/protocol.ts`, which re-exports this file and adds the runtime validation.
 * Pure: no I/O.
 */
import { AppError, isAppError } from "./errors.js";
import type { MountState } from "./names.js";

/** The path of the console on the agent's HTTPS server. */
export const CONSOLE_PATH = "/console";

export type RequestId = string | number;

/** Longest `id`, as a string or as the decimal text of a number. */
export const MAX_ID_LENGTH = 64;
/** Longest bearer token accepted in an `auth` frame. */
export const MAX_TOKEN_LENGTH = 16 * 1024;
/** Longest `timeoutSeconds` of a `mount` or `unmount`. Default {@link DEFAULT_TIMEOUT_SECONDS}. */
export const MAX_TIMEOUT_SECONDS = 3600;
export const DEFAULT_TIMEOUT_SECONDS = 60;

export const OPS = ["list", "status", "mount", "unmount", "watch", "auth"] as const;
export type Op = (typeof OPS)[number];

/** `list`: the pods of this node, in one namespace or in every namespace the caller may read. */
export interface ListRequest {
  readonly id: RequestId;
  readonly op: "list";
  readonly namespace?: string;
}

/** `status`: one pod. A pod on another node gets `WrongNode`. */
export interface StatusRequest {
  readonly id: RequestId;
  readonly op: "status";
  readonly namespace: string;
  readonly pod: string;
}

/**
 * `mount`: adds (or replaces) the entry `name=bucket/prefix:ro|rw` in the pod's
 * `dynamic-volumes/buckets` annotation, then replies once it is `mounted` or `failed`.
 * `name` defaults to the bucket; `readOnly` to false; `timeoutSeconds` to 60.
 */
export interface MountRequest {
  readonly id: RequestId;
  readonly op: "mount";
  readonly namespace: string;
  readonly pod: string;
  readonly bucket: string;
  /** Key prefix without leading or trailing slashes; `""` (the default) for the whole bucket. */
  readonly prefix?: string;
  readonly name?: string;
  readonly readOnly?: boolean;
  /** Replace an entry of the same name that differs; without it that is a `Conflict`. Default false. */
  readonly replace?: boolean;
  readonly timeoutSeconds?: number;
}

/** `unmount`: removes the entry `name` from the annotation, then replies once it is unmounted. */
export interface UnmountRequest {
  readonly id: RequestId;
  readonly op: "unmount";
  readonly namespace: string;
  readonly pod: string;
  readonly name: string;
  readonly timeoutSeconds?: number;
}

/** `watch`: replies with a snapshot, then pushes state events; `pod` needs `namespace`. */
export interface WatchRequest {
  readonly id: RequestId;
  readonly op: "watch";
  readonly namespace?: string;
  readonly pod?: string;
}

/** `auth`: the bearer token, as the first frame when the upgrade request had no `Authorization`. */
export interface AuthRequest {
  readonly id: RequestId;
  readonly op: "auth";
  readonly token: string;
}

export type ConsoleRequest =
  ListRequest | StatusRequest | MountRequest | UnmountRequest | WatchRequest | AuthRequest;
export type { ConsoleRequest as Request };

/** A mount as the console shows it: the status annotation's entry, or `pending` before the agent got to it. */
export interface MountSummary {
  readonly name: string;
  readonly state: MountState | "pending";
  readonly bucket: string;
  readonly prefix: string;
  readonly readOnly: boolean;
  /** Where the mount appears inside the containers: `<mount-path>/<name>`. */
  readonly path: string;
  /** ISO 8601 time the mount entered this state; absent while `pending`. */
  readonly since?: string;
  readonly error?: string;
}

export interface PodSummary {
  readonly namespace: string;
  readonly pod: string;
  readonly node: string;
  readonly mountPath: string;
  /** Why the agent mounts nothing for this pod (a forged or duplicate claim, an unknown mounter...). */
  readonly problem?: string;
  readonly mounts: readonly MountSummary[];
}

/** Result of `list` and the snapshot that answers `watch`. */
export interface ListResult {
  readonly node: string;
  readonly pods: readonly PodSummary[];
}

/** Result of `mount`: the final state, `mounted` or `failed` (a failed mount is a result, not an error). */
export interface MountResult {
  readonly namespace: string;
  readonly pod: string;
  readonly mount: MountSummary;
}

export interface UnmountResult {
  readonly namespace: string;
  readonly pod: string;
  readonly name: string;
  readonly state: "removed";
}

export interface AuthResult {
  readonly user: string;
}

export interface ResultOf {
  list: ListResult;
  status: PodSummary;
  mount: MountResult;
  unmount: UnmountResult;
  watch: ListResult;
  auth: AuthResult;
}

/** Stable error codes of `{ok: false}` replies. */
export const CONSOLE_ERROR_CODES = [
  "BadRequest",
  "Unauthenticated",
  "Forbidden",
  "NotFound",
  "WrongNode",
  "Conflict",
  "Timeout",
  "RateLimited",
  "TooLarge",
  "Unavailable",
  "Internal",
] as const;
export type ConsoleErrorCode = (typeof CONSOLE_ERROR_CODES)[number];

export interface ErrorBody {
  readonly code: ConsoleErrorCode;
  readonly message: string;
}

export type Reply<R = unknown> =
  | { readonly id: RequestId; readonly ok: true; readonly result: R }
  | { readonly id: RequestId | null; readonly ok: false; readonly error: ErrorBody };

/** A mount's new state: what progress frames and watch events carry, and what the agent emits. */
export interface MountChange {
  readonly name: string;
  readonly state: MountState | "removed";
  readonly bucket?: string;
  readonly prefix?: string;
  readonly readOnly?: boolean;
  readonly error?: string;
}

/** Progress of an in-flight `mount` or `unmount`, keyed by the request's id. */
export interface ProgressFrame {
  readonly id: RequestId;
  readonly progress: MountChange;
}

/** A state change pushed to a `watch`; `watch` is the id of the `watch` request it answers. */
export interface StateEvent extends MountChange {
  readonly event: "state";
  readonly watch: RequestId;
  readonly namespace: string;
  readonly pod: string;
}

export type ServerFrame = Reply | ProgressFrame | StateEvent;

/** An error that the console sends as `{ok: false, error: {code, message}}`; the message is for users. */
export class ConsoleError extends Error {
  constructor(
    readonly code: ConsoleErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "ConsoleError";
  }
}

/** A request that cannot be served as sent; carries the id when one could be read. */
export class RequestError extends AppError {
  constructor(
    readonly id: RequestId | null,
    message: string,
  ) {
    super("BadRequest", message);
    this.name = "RequestError";
  }
}

const APP_CODES: Readonly<Record<string, ConsoleErrorCode>> = {
  InvalidArgument: "BadRequest",
  InvalidConfig: "BadRequest",
  BadRequest: "BadRequest",
  PayloadTooLarge: "TooLarge",
  Unauthenticated: "Unauthenticated",
  Forbidden: "Forbidden",
  NotFound: "NotFound",
  Conflict: "Conflict",
  Timeout: "Timeout",
  Unavailable: "Unavailable",
};

/** The reply body for any thrown value: user-written messages pass, anything else is `Internal`. */
export function toErrorBody(e: unknown): ErrorBody {
  if (e instanceof ConsoleError) return { code: e.code, message: e.message };
  if (isAppError(e)) return { code: APP_CODES[e.code] ?? "Internal", message: e.message };
  return { code: "Internal", message: "internal error; see the agent's log" };
}

/** The annotation entry a `mount` request asks for. */
export function mountEntryOf(req: MountRequest): {
  name: string;
  bucket: string;
  prefix: string;
  readOnly: boolean;
} {
  return {
    name: req.name ?? req.bucket,
    bucket: req.bucket,
    prefix: req.prefix ?? "",
    readOnly: req.readOnly ?? false,
  };
}

/** Encodes a request (for clients); the same object that {@link parseRequest} returns. */
export function encodeRequest(req: ConsoleRequest): string {
  return JSON.stringify(req);
}

export function encodeResult(id: RequestId, result: unknown): string {
  return JSON.stringify({ id, ok: true, result });
}

export function encodeError(id: RequestId | null, error: ErrorBody): string {
  return JSON.stringify({ id, ok: false, error: { code: error.code, message: error.message } });
}

export function encodeProgress(id: RequestId, progress: ProgressFrame["progress"]): string {
  return JSON.stringify({ id, progress });
}

export function encodeEvent(event: Omit<StateEvent, "event">): string {
  return JSON.stringify({ event: "state", ...event });
}
