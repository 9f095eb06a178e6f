/**
 * The REST vocabulary of the fake Kubernetes API server: objects, where they live (api path,
 * resource, namespace), kinds, URL paths and `Status` objects.
 */

/** A Kubernetes object as JSON. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
  [field: string]: unknown;
}

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [field: string]: unknown;
}

/**
 * Where objects of one resource live. `apiPath` is `/api/v1` for the core group or
 * `/apis/<group>/<version>`; `namespace` is undefined for cluster-scoped resources, and, for
 * `KubeObjectStore.list`, for "all namespaces".
 */
export interface ResourceRef {
  readonly apiPath: string;
  readonly resource: string;
  readonly namespace?: string | undefined;
}

export const CORE_V1 = "/api/v1";
export const ADMISSIONREGISTRATION_V1 = "/apis/admissionregistration.k8s.io/v1";

/** A failure with the HTTP status and Kubernetes `reason` the server returns for it. */
export class StoreError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: { name?: string; group?: string; kind?: string },
  ) {
    super(message);
    this.name = "StoreError";
  }
}

const KINDS: Record<string, string> = {
  pods: "Pod",
  secrets: "Secret",
  configmaps: "ConfigMap",
  events: "Event",
  namespaces: "Namespace",
  nodes: "Node",
  services: "Service",
  endpoints: "Endpoints",
  serviceaccounts: "ServiceAccount",
  persistentvolumeclaims: "PersistentVolumeClaim",
  persistentvolumes: "PersistentVolume",
  deployments: "Deployment",
  daemonsets: "DaemonSet",
  replicasets: "ReplicaSet",
  statefulsets: "StatefulSet",
  leases: "Lease",
  mutatingwebhookconfigurations: "MutatingWebhookConfiguration",
  validatingwebhookconfigurations: "ValidatingWebhookConfiguration",
  validatingadmissionpolicies: "ValidatingAdmissionPolicy",
  validatingadmissionpolicybindings: "ValidatingAdmissionPolicyBinding",
  tokenreviews: "TokenReview",
  subjectaccessreviews: "SubjectAccessReview",
  selfsubjectaccessreviews: "SelfSubjectAccessReview",
  localsubjectaccessreviews: "LocalSubjectAccessReview",
  customresourcedefinitions: "CustomResourceDefinition",
};

/** The kind of a resource (`secrets` → `Secret`); unknown plurals lose their `s` and are capitalised. */
export function kindOf(resource: string): string {
  return KINDS[resource] ?? resource.replace(/s$/, "").replace(/^./, (c) => c.toUpperCase());
}

/** Adds or overrides the kind of a resource, e.g. for a custom resource. */
export function registerKind(resource: string, kind: string): void {
  KINDS[resource] = kind;
}

/** `v1` for `/api/v1`, `<group>/<version>` for `/apis/<group>/<version>`. */
export function apiVersionOf(apiPath: string): string {
  return apiPath.replace(/^\/api\//, "").replace(/^\/apis\//, "");
}

/** The API group (`""` for core). */
export function groupOf(apiPath: string): string {
  return apiPath.startsWith("/apis/") ? (apiPath.split("/")[2] ?? "") : "";
}

export interface Route {
  readonly ref: ResourceRef;
  readonly name: string | undefined;
  readonly subresource: string | undefined;
}

/**
 * `/api/v1/...` or `/apis/<g>/<v>/...` followed by `[namespaces/<ns>/]<resource>[/<name>[/<sub>]]`.
 * `namespaces/<ns>` alone, or with `status` or `finalize`, is the Namespace object itself.
 */
export function parseRoute(path: string): Route | undefined {
  const segs = path
    .split("/")
    .filter((s) => s !== "")
    .map(decodeURIComponent);
  let apiPath: string;
  let rest: string[];
  if (segs[0] === "api" && segs.length >= 3) {
    apiPath = `/api/${segs[1]}`;
    rest = segs.slice(2);
  } else if (segs[0] === "apis" && segs.length >= 4) {
    apiPath = `/apis/${segs[1]}/${segs[2]}`;
    rest = segs.slice(3);
  } else return undefined;
  let namespace: string | undefined;
  if (rest[0] === "namespaces" && rest.length >= 3 && rest[2] !== "status" && rest[2] !== "finalize") {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  const [resource, name, subresource, ...more] = rest;
  if (resource === undefined || more.length > 0) return undefined;
  return { ref: { apiPath, resource, namespace }, name, subresource };
}

/** A `Status` object as the API server returns it for a failure. */
export function statusObject(
  code: number,
  reason: string,
  message: string,
  details?: Record<string, unknown>,
): KubeObject {
  return {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message,
    reason,
    ...(details ? { details } : {}),
    code,
  };
}

/** The Status `reason` upstream uses with an HTTP status code. */
export function reasonFor(code: number): string {
  const reasons: Record<number, string> = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Gone",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
  };
  return reasons[code] ?? "Unknown";
}
