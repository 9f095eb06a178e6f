/**
 * The CSI Node requests this driver accepts, checked (pure): what the kubelet sends for an
 * ephemeral inline volume of a CSIDriver with `podInfoOnMount: true`, and nothing else. Every
 * problem of a request is reported at once, with the gRPC status code the CSI specification gives
 * for it (INVALID_ARGUMENT for a missing or unsupported field).
 *
 * Messages arrive as `@grpc/proto-loader` decodes them with `keepCase`, `defaults` and `oneofs`:
 * absent strings are `""`, absent maps `{}`, absent messages `null`, and a oneof names its set
 * field (`access_type: "mount"`).
 */
import { isAbsolute, normalize } from "node:path/posix";
import { isPodUid } from "../../../shared/names.js";

/** gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html) used here. */
export const GRPC_CODE = Object.freeze({
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  FAILED_PRECONDITION: 9,
  INTERNAL: 13,
  UNAVAILABLE: 14,
});
export type GrpcCode = (typeof GRPC_CODE)[keyof typeof GRPC_CODE];

/** A refusal: the code and a message for the kubelet's Events. */
export interface CsiError {
  readonly code: GrpcCode;
  readonly message: string;
}

/** Keys of the volume context the kubelet fills with `podInfoOnMount: true`. */
export const POD_INFO = Object.freeze({
  name: "csi.storage.k8s.io/pod.name",
  namespace: "csi.storage.k8s.io/pod.namespace",
  uid: "csi.storage.k8s.io/pod.uid",
  serviceAccount: "csi.storage.k8s.io/serviceAccount.name",
  ephemeral: "csi.storage.k8s.io/ephemeral",
});

/** Longest `volume_id` and path accepted: the specification's 128 bytes, and PATH_MAX. */
const MAX_VOLUME_ID = 128;
const MAX_PATH = 4096;

export interface VolumeCapabilityMessage {
  access_type?: string | null;
  mount?: { fs_type?: string; mount_flags?: string[] } | null;
  block?: object | null;
  access_mode?: { mode?: string | number } | null;
}

export interface NodePublishVolumeMessage {
  volume_id?: string;
  target_path?: string;
  staging_target_path?: string;
  volume_capability?: VolumeCapabilityMessage | null;
  readonly?: boolean;
  volume_context?: Record<string, string>;
  /** Never read nor logged. */
  secrets?: Record<string, string>;
}

export interface NodeUnpublishVolumeMessage {
  volume_id?: string;
  target_path?: string;
}

/** A checked publish: the pod the kubelet publishes the volume for. */
export interface PublishRequest {
  readonly volumeId: string;
  readonly targetPath: string;
  readonly podUid: string;
  readonly podNamespace: string;
  readonly podName: string;
  readonly serviceAccount: string;
}

export interface UnpublishRequest {
  readonly volumeId: string;
  readonly targetPath: string;
}

export type Checked<T> = { readonly ok: T } | { readonly error: CsiError };

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/**
 * The kubelet's publish target of a CSI volume: `<kubelet dir>/pods/<pod uid>/volumes/kubernetes.io~csi/<volume name>/mount`.
 * Returns the pod uid in it, or undefined.
 */
export function podUidOfTarget(target: string): string | undefined {
  const m = /\/pods\/([^/]+)\/volumes\/kubernetes\.io~csi\/[^/]+\/mount$/.exec(target);
  return m !== null && isPodUid(m[1]!) ? m[1] : undefined;
}

function checkVolumeId(v: string | undefined, problems: string[]): string {
  const id = v ?? "";
  if (id === "") problems.push("volume_id is missing");
  else if (id.length > MAX_VOLUME_ID) problems.push(`volume_id is longer than ${MAX_VOLUME_ID} characters`);
  return id;
}

/**
 * A target path: absolute, clean (no `.`, `..`, `//` or trailing `/`), outside the driver's root,
 * and the kubelet's CSI publish directory of a pod.
 */
function checkTarget(v: string | undefined, root: string, problems: string[]): string {
  const t = v ?? "";
  if (t === "") {
    problems.push("target_path is missing");
    return t;
  }
  if (t.length > MAX_PATH || t.includes("\0")) problems.push("target_path is not a usable path");
  else if (!isAbsolute(t) || normalize(t) !== t || (t.length > 1 && t.endsWith("/")))
    problems.push(`target_path ${JSON.stringify(t.slice(0, 200))} must be an absolute, clean path`);
  else if (t === root || t.startsWith(`${root}/`))
    problems.push(`target_path ${JSON.stringify(t.slice(0, 200))} is inside the driver's root ${root}`);
  else if (podUidOfTarget(t) === undefined)
    problems.push(
      `target_path ${JSON.stringify(t.slice(0, 200))} is not a kubelet CSI target (<kubelet dir>/pods/<pod uid>/volumes/kubernetes.io~csi/<volume>/mount)`,
    );
  return t;
}

function refused(problems: readonly string[]): { error: CsiError } {
  return { error: { code: GRPC_CODE.INVALID_ARGUMENT, message: problems.join("; ") } };
}

/**
 * Checks a NodePublishVolume request against what this driver serves: a mount volume (not block),
 * published read-only, for an ephemeral inline volume with the pod's identity in the volume
 * context, at the kubelet's target of that very pod. `root` is the driver's root (no trailing `/`).
 */
export function checkPublish(req: NodePublishVolumeMessage, root: string): Checked<PublishRequest> {
  const problems: string[] = [];
  const volumeId = checkVolumeId(req.volume_id, problems);
  const targetPath = checkTarget(req.target_path, root, problems);
  const cap = req.volume_capability;
  if (cap === null || cap === undefined) problems.push("volume_capability is missing");
  else {
    const type = cap.access_type ?? (cap.mount ? "mount" : cap.block ? "block" : undefined);
    if (type === "block") problems.push("block volumes are not supported: the volume is a directory");
    else if (type !== "mount") problems.push("volume_capability names no access type (mount)");
    else if ((cap.mount?.mount_flags ?? []).length > 0)
      problems.push("volume_capability.mount.mount_flags are not supported");
    if (cap.access_mode === null || cap.access_mode === undefined)
      problems.push("volume_capability.access_mode is missing");
    else if (cap.access_mode.mode === "UNKNOWN" || cap.access_mode.mode === 0)
      problems.push("volume_capability.access_mode.mode is UNKNOWN");
  }
  if (req.readonly !== true)
    problems.push(
      "readonly must be true: the pod's directory is published read-only (the volume's csi.readOnly: true); its buckets keep their own access",
    );
  const ctx = req.volume_context ?? {};
  if (ctx[POD_INFO.ephemeral] !== "true")
    problems.push(
      `volume_context["${POD_INFO.ephemeral}"] is not "true": only ephemeral inline volumes are served (a CSIDriver with volumeLifecycleModes [Ephemeral])`,
    );
  const podUid = ctx[POD_INFO.uid] ?? "";
  const podNamespace = ctx[POD_INFO.namespace] ?? "";
  const podName = ctx[POD_INFO.name] ?? "";
  const serviceAccount = ctx[POD_INFO.serviceAccount] ?? "";
  const podInfoHint = "(the CSIDriver object needs podInfoOnMount: true)";
  if (podUid === "") problems.push(`volume_context["${POD_INFO.uid}"] is missing ${podInfoHint}`);
  else if (!isPodUid(podUid))
    problems.push(
      `volume_context["${POD_INFO.uid}"] ${JSON.stringify(podUid.slice(0, 60))} is not a pod uid`,
    );
  if (podNamespace === "") problems.push(`volume_context["${POD_INFO.namespace}"] is missing ${podInfoHint}`);
  else if (!DNS_LABEL.test(podNamespace))
    problems.push(`volume_context["${POD_INFO.namespace}"] is not a namespace name`);
  if (podName === "") problems.push(`volume_context["${POD_INFO.name}"] is missing ${podInfoHint}`);
  else if (!DNS_SUBDOMAIN.test(podName))
    problems.push(`volume_context["${POD_INFO.name}"] is not a pod name`);
  if (serviceAccount !== "" && !DNS_SUBDOMAIN.test(serviceAccount))
    problems.push(`volume_context["${POD_INFO.serviceAccount}"] is not a service account name`);
  const targetUid = podUidOfTarget(targetPath);
  if (targetUid !== undefined && isPodUid(podUid) && targetUid !== podUid)
    problems.push(`target_path belongs to pod ${targetUid}, not to ${POD_INFO.uid} ${podUid}`);
  if (problems.length > 0) return refused(problems);
  return { ok: { volumeId, targetPath, podUid, podNamespace, podName, serviceAccount } };
}

/** Checks a NodeUnpublishVolume request: a volume id and a target path of the same form as at publish. */
export function checkUnpublish(req: NodeUnpublishVolumeMessage, root: string): Checked<UnpublishRequest> {
  const problems: string[] = [];
  const volumeId = checkVolumeId(req.volume_id, problems);
  const targetPath = checkTarget(req.target_path, root, problems);
  if (problems.length > 0) return refused(problems);
  return { ok: { volumeId, targetPath } };
}
