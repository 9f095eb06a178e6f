/**
 * What the agent reads from a pod (pure). The pod's directory comes only from its `dynamic-volumes`
 * volume, which is immutable. In hostPath mode it is the hostPath, and the id annotation and its
 * signature must agree with it and verify for the pod's namespace (docs/design.md "Forgery"), or
 * the pod gets nothing. In CSI mode (a `csi` volume of driver `csi.dynamic-volumes.io`) it is
 * `<root>/pods/<metadata.uid>`: the kubelet publishes that directory for that pod only, so no
 * signature is needed.
 */
import { parseBuckets, type ParsedBuckets } from "../../shared/buckets.js";
import {
  ANNOTATIONS,
  CSI_DRIVER_NAME,
  DEFAULT_MOUNT_PATH,
  DEFAULT_SECRET_NAME,
  MOUNTERS,
  VOLUME_NAME,
  isPodId,
  isPodUid,
  podDir,
  podsDir,
  type MounterName,
} from "../../shared/names.js";
import { verifyPodId, type SigningKey } from "../../shared/signing.js";

/** The subset of a Kubernetes Pod that the agent reads. */
export interface PodObject {
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    creationTimestamp?: string | Date;
    annotations?: Record<string, string>;
  };
  spec?: {
    nodeName?: string;
    volumes?: Array<{ name?: string; hostPath?: { path?: string }; csi?: { driver?: string } }>;
  };
  status?: { phase?: string };
}

export interface PodView {
  /** `<namespace>/<name>`. */
  readonly key: string;
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  /** Milliseconds since the epoch; orders claims on one directory (the oldest pod owns it). */
  readonly createdAt: number;
  /**
   * The id taken from the hostPath (undefined when it is not `<root>/pods/<32 hex>`), or in CSI mode
   * the pod's uid (undefined when it has none yet).
   */
  readonly id: string | undefined;
  /** `<root>/pods/<id>`, when `id` is set. */
  readonly dir: string | undefined;
  /** Why the pod may not mount anything (bad hostPath, signature), or undefined. */
  readonly refusal: string | undefined;
  readonly buckets: ParsedBuckets;
  readonly secretName: string;
  readonly mounter: MounterName;
  readonly mountPath: string;
  /** User mount options (`dynamic-volumes/mount-options`), checked later against the mounter's allowlist. */
  readonly options: Record<string, string | true>;
  /** Why no entry can be mounted (unknown mounter, unreadable options), or undefined. */
  readonly problem: string | undefined;
  /**
   * The pod's containers have all stopped for good (phase Succeeded or Failed): its mounts are torn
   * down. A pod that is merely terminating keeps them until it is gone, as the kubelet keeps volumes.
   */
  readonly finished: boolean;
}

export interface PodReadConfig {
  readonly root: string;
  readonly signingKey: SigningKey;
  readonly defaultMounter: MounterName;
}

function toMillis(t: string | Date | undefined): number {
  if (t === undefined) return Number.MAX_SAFE_INTEGER;
  const ms = t instanceof Date ? t.getTime() : Date.parse(t);
  return Number.isFinite(ms) ? ms : Number.MAX_SAFE_INTEGER;
}

/** Annotation `dynamic-volumes/mount-options`: comma list of `key[=value]`, checked later by the mounter. */
export const MOUNT_OPTIONS_ANNOTATION = ANNOTATIONS.mountOptions;

export function parseMountOptions(
  value: string | undefined,
): { options: Record<string, string | true> } | { error: string } {
  const out: Record<string, string | true> = {};
  if (value === undefined) return { options: out };
  if (value.length > 4096) return { error: `${MOUNT_OPTIONS_ANNOTATION} is longer than 4096 characters` };
  for (const part of value.split(",")) {
    const item = part.trim();
    if (item === "") continue;
    const eq = item.indexOf("=");
    const key = eq >= 0 ? item.slice(0, eq).trim() : item;
    if (!/^[a-z][a-z0-9_-]{0,63}$/.test(key))
      return { error: `${MOUNT_OPTIONS_ANNOTATION}: "${key.slice(0, 40)}" is not an option name` };
    out[key] = eq >= 0 ? item.slice(eq + 1).trim() : true;
  }
  return { options: out };
}

/**
 * Reads a pod. Returns undefined for pods that do not carry the `dynamic-volumes` volume (not ours).
 */
export function readPod(pod: PodObject, cfg: PodReadConfig): PodView | undefined {
  const md = pod.metadata ?? {};
  const vol = (pod.spec?.volumes ?? []).find((v) => v?.name === VOLUME_NAME);
  if (vol === undefined) return undefined;
  const namespace = md.namespace ?? "";
  const name = md.name ?? "";
  const annotations = md.annotations ?? {};
  const hostPath = vol.hostPath?.path;
  const prefix = `${podsDir(cfg.root)}/`;
  let id: string | undefined;
  let refusal: string | undefined;
  if (vol.csi !== undefined && vol.csi !== null && vol.hostPath === undefined) {
    const uid = md.uid ?? "";
    if (vol.csi.driver !== CSI_DRIVER_NAME)
      refusal = `volume "${VOLUME_NAME}" is a CSI volume of driver "${String(vol.csi.driver).slice(0, 63)}", not ${CSI_DRIVER_NAME}; recreate the pod so that the webhook injects it`;
    else if (!isPodUid(uid)) refusal = `the pod has no uid yet; nothing is mounted`;
    else id = uid;
  } else if (typeof hostPath !== "string" || !hostPath.startsWith(prefix)) {
    refusal = `volume "${VOLUME_NAME}" is not a hostPath under ${podsDir(cfg.root)}; recreate the pod so that the webhook injects it`;
  } else {
    const candidate = hostPath.slice(prefix.length).replace(/\/+$/, "");
    if (!isPodId(candidate)) {
      refusal = `hostPath ${hostPath} does not name a pod directory; recreate the pod so that the webhook injects it`;
    } else {
      id = candidate;
      const annId = annotations[ANNOTATIONS.id];
      const sig = annotations[ANNOTATIONS.idSignature] ?? "";
      if (annId !== candidate || !verifyPodId(cfg.signingKey, namespace, candidate, sig))
        refusal = `the pod's directory claim does not verify for namespace "${namespace}" (${ANNOTATIONS.id} and ${ANNOTATIONS.idSignature} must match the injected hostPath); nothing is mounted. Recreate the pod so that the webhook injects it`;
    }
  }
  const mounterRaw = annotations[ANNOTATIONS.mounter];
  const knownMounter = mounterRaw === undefined || (MOUNTERS as readonly string[]).includes(mounterRaw);
  const options = parseMountOptions(annotations[MOUNT_OPTIONS_ANNOTATION]);
  const problem = !knownMounter
    ? `${ANNOTATIONS.mounter} "${String(mounterRaw).slice(0, 40)}" is not one of ${MOUNTERS.join(", ")}`
    : "error" in options
      ? options.error
      : undefined;
  const phase = pod.status?.phase;
  return {
    key: `${namespace}/${name}`,
    namespace,
    name,
    uid: md.uid ?? "",
    createdAt: toMillis(md.creationTimestamp),
    id,
    dir: id !== undefined ? podDir(cfg.root, id) : undefined,
    refusal,
    buckets: parseBuckets(annotations[ANNOTATIONS.buckets]),
    secretName: annotations[ANNOTATIONS.secret] || DEFAULT_SECRET_NAME,
    mounter: knownMounter && mounterRaw !== undefined ? (mounterRaw as MounterName) : cfg.defaultMounter,
    mountPath: annotations[ANNOTATIONS.mountPath] || DEFAULT_MOUNT_PATH,
    options: "options" in options ? options.options : {},
    problem,
    finished: phase === "Succeeded" || phase === "Failed",
  };
}
