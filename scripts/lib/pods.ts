/**
 * Pods for local mode, built with the webhook's own admission code: a plain pod goes through
 * `mutatePod` exactly as `/mutate` would handle it, and the JSON patch is applied, giving the pod the
 * API server would store. Either volume mode: hostPath (the default) or csi, where the pod also gets the
 * `metadata.uid` the API server would fill in, since the node side keys its directory by it.
 */
import { randomUUID } from "node:crypto";
import { applyPatch } from "rfc6902";
import { ANNOTATIONS } from "../../shared/names.js";
import { mintPodId } from "../../shared/signing.js";
import { mutatePod, type VolumeMode } from "../../webhook/mutate.js";

export interface LocalPodOptions {
  readonly namespace: string;
  readonly name: string;
  readonly buckets?: string;
  readonly mounter?: string;
  readonly secret?: string;
  readonly mountPath?: string;
  readonly nodeName?: string;
  /** csi mode: the pod's uid (default: a fresh random UUID). Ignored in hostPath mode. */
  readonly uid?: string;
}

/** What {@link injectedPod} admits the pod with. */
export interface InjectedPodConfig {
  readonly root: string;
  /** Required in hostPath mode. */
  readonly signingKey?: Uint8Array;
  /** The webhook's `--volume-mode`. Default `hostPath`. */
  readonly volumeMode?: VolumeMode;
}

export type Pod = {
  apiVersion: "v1";
  kind: "Pod";
  metadata: { name: string; namespace: string; uid?: string; annotations: Record<string, string> };
  spec: Record<string, unknown> & {
    volumes: Array<{
      name: string;
      hostPath?: { path: string };
      csi?: { driver: string; readOnly?: boolean };
    }>;
  };
};

/** A pod as the API server would store it after the webhook's patch. Throws when the webhook denies it. */
export function injectedPod(o: LocalPodOptions, cfg: InjectedPodConfig): Pod {
  const annotations: Record<string, string> = {};
  if (o.buckets !== undefined) annotations[ANNOTATIONS.buckets] = o.buckets;
  if (o.mounter !== undefined) annotations[ANNOTATIONS.mounter] = o.mounter;
  if (o.secret !== undefined) annotations[ANNOTATIONS.secret] = o.secret;
  if (o.mountPath !== undefined) annotations[ANNOTATIONS.mountPath] = o.mountPath;
  const csi = cfg.volumeMode === "csi";
  const pod = {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: o.name, namespace: o.namespace, annotations },
    spec: {
      nodeName: o.nodeName ?? "local",
      containers: [{ name: "main", image: "busybox:1.36", command: ["sleep", "infinity"] }],
    },
  };
  const result = mutatePod(
    pod,
    o.namespace,
    { root: cfg.root, signingKey: cfg.signingKey, volumeMode: cfg.volumeMode, defaultMountPath: "/datasets" },
    mintPodId,
  );
  if (result.kind !== "patched")
    throw new Error(`the webhook did not inject the pod: ${JSON.stringify(result)}`);
  const errors = applyPatch(pod, result.patch as Parameters<typeof applyPatch>[1]).filter((e) => e !== null);
  if (errors.length > 0)
    throw new Error(`the webhook's patch did not apply: ${errors.map((e) => e.message).join("; ")}`);
  // The API server fills in the uid after admission; in csi mode the kubelet hands it to the driver.
  if (csi) (pod.metadata as { uid?: string }).uid = o.uid ?? randomUUID();
  return pod as unknown as Pod;
}

/**
 * The name of the pod's directory under `<root>/pods`: the id the webhook minted (hostPath mode), or
 * the pod's uid (csi mode, a pod without the id annotation).
 */
export function podIdOf(pod: Pod): string {
  return pod.metadata.annotations[ANNOTATIONS.id] ?? pod.metadata.uid!;
}

/** Returns a copy of the pod with its buckets annotation replaced (or removed when empty). */
export function withBuckets(pod: Pod, buckets: string): Pod {
  const copy = structuredClone(pod);
  if (buckets === "") delete copy.metadata.annotations[ANNOTATIONS.buckets];
  else copy.metadata.annotations[ANNOTATIONS.buckets] = buckets;
  return copy;
}
