/**
 * The public names of dynamic-volumes: labels, annotations, volume name, paths and Secret keys.
 * Everything that a user, a manifest or another component can see is spelled here once.
 */

/** Prefix shared by every label and annotation key. */
export const PREFIX = "dynamic-volumes";

/** Namespace label that opts a namespace in: `dynamic-volumes/injection=enabled`. */
export const LABEL_INJECTION = `${PREFIX}/injection`;
export const LABEL_INJECTION_ENABLED = "enabled";

/** Pod annotations. */
export const ANNOTATIONS = Object.freeze({
  /** `"false"` opts a pod out in an opted-in namespace. */
  inject: `${PREFIX}/inject`,
  /** Desired mounts, see {@link parseBuckets}. */
  buckets: `${PREFIX}/buckets`,
  /** Name of the credentials Secret in the pod's namespace. */
  secret: `${PREFIX}/secret`,
  /** FUSE client: geesefs | s3fs | rclone. */
  mounter: `${PREFIX}/mounter`,
  /** User options for the FUSE client, `key[=value]` comma list, checked against its allowlist. */
  mountOptions: `${PREFIX}/mount-options`,
  /** Where buckets appear in the containers; read at admission, written back resolved. */
  mountPath: `${PREFIX}/mount-path`,
  /** Comma list of container names that get the mount; read at admission. */
  containers: `${PREFIX}/containers`,
  /** Per-pod id minted by the webhook. */
  id: `${PREFIX}/id`,
  /** Hex HMAC-SHA256 of `<namespace>/<id>`. */
  idSignature: `${PREFIX}/id-signature`,
  /** JSON status written by the agent. */
  status: `${PREFIX}/status`,
});

/** Name of the injected volume. */
export const VOLUME_NAME = PREFIX;

/**
 * Name of the CSI driver (and of its CSIDriver object) that serves the injected volume in CSI mode:
 * `csi: {driver: CSI_DRIVER_NAME, readOnly: true}`, one `<root>/pods/<pod uid>` per pod.
 */
export const CSI_DRIVER_NAME = "csi.dynamic-volumes.io";

/** Host root that holds every pod's directory and the agent's private state. */
export const DEFAULT_ROOT = "/var/lib/dynamic-volumes";

/** Default mount path inside the containers. */
export const DEFAULT_MOUNT_PATH = "/datasets";

/** Default credentials Secret name, in the pod's namespace. */
export const DEFAULT_SECRET_NAME = "dynamic-volumes-credentials";

/** Keys of the credentials Secret. */
export const SECRET_KEYS = Object.freeze({
  endpoint: "endpoint",
  region: "region",
  accessKeyID: "accessKeyID",
  secretAccessKey: "secretAccessKey",
});

/** Key, inside the signing-key Secret, that holds the key shared by webhook replicas and agents. */
export const SIGNING_KEY_SECRET_KEY = "signing-key";

/** The FUSE clients the agent knows how to run. */
export const MOUNTERS = ["geesefs", "s3fs", "rclone"] as const;
export type MounterName = (typeof MOUNTERS)[number];

/** Mount states reported in the status annotation. */
export const MOUNT_STATES = ["mounting", "mounted", "failed", "unmounting"] as const;
export type MountState = (typeof MOUNT_STATES)[number];

/** Directory, under the root, that holds one directory per pod. */
export function podsDir(root: string): string {
  return `${trimSlash(root)}/pods`;
}

/** The host directory of one pod: `<root>/pods/<id>`. */
export function podDir(root: string, id: string): string {
  return `${podsDir(root)}/${id}`;
}

/** Agent-private state (credential files, caches): `<root>/agent`. */
export function agentDir(root: string): string {
  return `${trimSlash(root)}/agent`;
}

function trimSlash(p: string): string {
  return p.length > 1 ? p.replace(/\/+$/, "") : p;
}

/** Whether `s` is a pod id minted by the webhook (hostPath mode): 128 bits as 32 lowercase hex digits. */
export function isPodId(s: string): boolean {
  return /^[0-9a-f]{32}$/.test(s);
}

/**
 * Whether `s` is a pod's `metadata.uid` in the form the API server writes it, a lowercase UUID
 * (`8-4-4-4-12` hex digits): the name of a pod's directory in CSI mode.
 */
export function isPodUid(s: string): boolean {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(s);
}

/**
 * Whether `s` names a pod's directory `<root>/pods/<s>`: a webhook-minted id ({@link isPodId},
 * hostPath mode) or a pod uid ({@link isPodUid}, CSI mode). The two forms cannot be confused.
 */
export function isPodDirName(s: string): boolean {
  return isPodId(s) || isPodUid(s);
}
