/**
 * AdmissionReview v1 in and out. Pure: decoding with clear errors, and constructors for every
 * kind of response (allowed, patched, denied, errored), each echoing the request uid.
 * See https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/
 */
import { AppError, describeValue } from "../shared/errors.js";
export { nestsDeeperThan } from "../shared/json-depth.js";

export const ADMISSION_API_VERSION = "admission.k8s.io/v1";

export interface GroupVersionKind {
  group: string;
  version: string;
  kind: string;
}

export interface GroupVersionResource {
  group: string;
  version: string;
  resource: string;
}

/** The part of `request` that the webhook reads. Other fields pass through untouched. */
export interface AdmissionRequest {
  uid: string;
  kind: GroupVersionKind;
  resource: GroupVersionResource;
  subResource?: string;
  namespace?: string;
  name?: string;
  operation: "CREATE" | "UPDATE" | "DELETE" | "CONNECT";
  object?: unknown;
  dryRun?: boolean;
  userInfo?: { username?: string };
}

export interface JsonPatchOp {
  op: "add" | "replace" | "remove" | "test";
  path: string;
  value?: unknown;
}

export interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  status?: { code: number; message: string; reason?: string };
  patchType?: "JSONPatch";
  patch?: string;
  warnings?: string[];
}

export interface AdmissionReview {
  apiVersion: typeof ADMISSION_API_VERSION;
  kind: "AdmissionReview";
  response: AdmissionResponse;
}

const OPERATIONS = new Set(["CREATE", "UPDATE", "DELETE", "CONNECT"]);

/**
 * Deepest nesting of arrays and objects accepted in a review body. A pod's review nests about 20
 * deep (`managedFields[].fieldsV1` mirrors the pod's own structure), so 100 leaves room for any real
 * review, while a body of millions of nested brackets is refused before it costs a parse.
 */
export const MAX_JSON_DEPTH = 100;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function bad(message: string): AppError {
  return new AppError("BadRequest", message);
}

/**
 * The uid of a review, when it can be found, so that even a rejected review's reply echoes it.
 */
export function findUid(body: unknown): string | undefined {
  if (!isObject(body) || !isObject(body.request)) return undefined;
  const uid = body.request.uid;
  return typeof uid === "string" && uid !== "" && uid.length <= 256 ? uid : undefined;
}

function gvk(v: unknown, field: string): GroupVersionKind {
  if (!isObject(v) || typeof v.kind !== "string" || typeof v.version !== "string")
    throw bad(`request.${field} must be an object with group, version and kind`);
  return { group: typeof v.group === "string" ? v.group : "", version: v.version, kind: v.kind };
}

function gvr(v: unknown, field: string): GroupVersionResource {
  if (!isObject(v) || typeof v.resource !== "string" || typeof v.version !== "string")
    throw bad(`request.${field} must be an object with group, version and resource`);
  return { group: typeof v.group === "string" ? v.group : "", version: v.version, resource: v.resource };
}

/** Decodes and checks an AdmissionReview v1 body. Throws AppError("BadRequest") with a readable message. */
export function decodeAdmissionReview(body: unknown): AdmissionRequest {
  if (!isObject(body)) throw bad("body must be a JSON object holding an AdmissionReview");
  if (body.apiVersion !== ADMISSION_API_VERSION)
    throw bad(
      `apiVersion must be "${ADMISSION_API_VERSION}", got ${describeValue(body.apiVersion)}; register the webhook with admissionReviewVersions: ["v1"]`,
    );
  if (body.kind !== "AdmissionReview")
    throw bad(`kind must be "AdmissionReview", got ${describeValue(body.kind)}`);
  const r = body.request;
  if (!isObject(r)) throw bad("request is missing: an AdmissionReview sent to a webhook carries a request");
  if (typeof r.uid !== "string" || r.uid === "") throw bad("request.uid must be a non-empty string");
  if (r.uid.length > 256) throw bad("request.uid is longer than 256 characters");
  if (typeof r.operation !== "string" || !OPERATIONS.has(r.operation))
    throw bad("request.operation must be one of CREATE, UPDATE, DELETE, CONNECT");
  const req: AdmissionRequest = {
    uid: r.uid,
    kind: gvk(r.kind, "kind"),
    resource: gvr(r.resource, "resource"),
    operation: r.operation as AdmissionRequest["operation"],
  };
  if (typeof r.subResource === "string" && r.subResource !== "") req.subResource = r.subResource;
  if (r.namespace !== undefined) {
    if (typeof r.namespace !== "string") throw bad("request.namespace must be a string");
    req.namespace = r.namespace;
  }
  if (typeof r.name === "string") req.name = r.name;
  if (r.dryRun !== undefined) {
    if (typeof r.dryRun !== "boolean") throw bad("request.dryRun must be a boolean");
    req.dryRun = r.dryRun;
  }
  if (isObject(r.userInfo) && typeof r.userInfo.username === "string")
    req.userInfo = { username: r.userInfo.username };
  if (req.operation === "CREATE" || req.operation === "UPDATE") {
    if (!isObject(r.object))
      throw bad(`request.object is missing: a ${req.operation} review carries the object`);
    req.object = r.object;
  }
  return req;
}

function review(response: AdmissionResponse): AdmissionReview {
  return { apiVersion: ADMISSION_API_VERSION, kind: "AdmissionReview", response };
}

function withWarnings(r: AdmissionResponse, warnings: readonly string[]): AdmissionResponse {
  return warnings.length > 0 ? { ...r, warnings: [...warnings] } : r;
}

/** Admit unchanged. */
export function allowed(uid: string, warnings: readonly string[] = []): AdmissionReview {
  return review(withWarnings({ uid, allowed: true }, warnings));
}

/** Admit with a JSON patch. An empty patch is the same as {@link allowed}. */
export function patched(
  uid: string,
  patch: readonly JsonPatchOp[],
  warnings: readonly string[] = [],
): AdmissionReview {
  if (patch.length === 0) return allowed(uid, warnings);
  const response: AdmissionResponse = {
    uid,
    allowed: true,
    patchType: "JSONPatch",
    patch: Buffer.from(JSON.stringify(patch)).toString("base64"),
  };
  if (warnings.length > 0) response.warnings = warnings.slice();
  return review(response);
}

/** Refuse admission with a message the user can act on (HTTP-like `code`, 403 by default). */
export function denied(
  uid: string,
  message: string,
  code = 403,
  warnings: readonly string[] = [],
): AdmissionReview {
  return review(
    withWarnings({ uid, allowed: false, status: { code, message, reason: "Forbidden" } }, warnings),
  );
}

/** The review could not be processed; `uid` is empty when the request had none. */
export function errored(uid: string | undefined, code: number, message: string): AdmissionReview {
  return review({
    uid: uid ?? "",
    allowed: false,
    status: { code, message, reason: code >= 500 ? "InternalError" : "BadRequest" },
  });
}
