/**
 * The admission decision for a pod, and the JSON patch that injects dynamic-volumes. Pure: the pod
 * and configuration come in, a decision comes out; the id generator is passed in.
 *
 * Injection (docs/design.md "Names"), by {@link MutateConfig.volumeMode}:
 * - `hostPath` (the default): a hostPath volume `dynamic-volumes` at `<root>/pods/<id>`
 *   (DirectoryOrCreate) and the annotations `id`, `id-signature` and the resolved `mount-path`;
 * - `csi` (docs/design.md "CSI mode"): the CSI ephemeral inline volume
 *   `{name: dynamic-volumes, csi: {driver: csi.dynamic-volumes.io, readOnly: true}}` and the resolved
 *   `mount-path` annotation only: the kubelet tells the driver which pod it mounts for.
 *
 * In both, a read-only volumeMount with `mountPropagation: HostToContainer` at the mount path in the
 * selected containers. What a pod may already claim on the host is checked first, in isolation.ts,
 * the same way in both modes.
 */
import { posix } from "node:path";
import { describeBucketError, parseBuckets } from "../shared/buckets.js";
import { describeValue } from "../shared/errors.js";
import { ANNOTATIONS, MOUNTERS, VOLUME_NAME, isPodId, podDir } from "../shared/names.js";
import { signPodId, type SigningKey } from "../shared/signing.js";
import { CONTAINER_FIELDS, checkMounts, checkVolumes, csiVolume, injectedMount } from "./isolation.js";
import type { AdmissionRequest, JsonPatchOp } from "./review.js";

/** What the webhook injects: a hostPath volume (the default) or a CSI ephemeral inline volume. */
export const VOLUME_MODES = ["hostPath", "csi"] as const;
export type VolumeMode = (typeof VOLUME_MODES)[number];

export interface MutateConfig {
  /** Host root; pods' directories live in `<root>/pods`. Absolute, no trailing slash. */
  readonly root: string;
  /** Mount path used when the pod does not set `dynamic-volumes/mount-path`. */
  readonly defaultMountPath: string;
  /** The volume new pods get. Default `hostPath`. */
  readonly volumeMode?: VolumeMode;
  /**
   * Key shared with the agents for `dynamic-volumes/id-signature`. Required in `hostPath` mode; in
   * `csi` mode it only verifies pods that carry a hostPath injection (made before the mode changed),
   * which are denied without it.
   */
  readonly signingKey?: SigningKey | undefined;
}

export type MutateResult =
  | {
      kind: "patched";
      patch: JsonPatchOp[];
      volumeMode: VolumeMode;
      /** The minted id (hostPath mode only). */
      id?: string;
      mountPath: string;
      containers: string[];
      warnings: string[];
    }
  /** Already carries our verified injection (reinvocation): admit unchanged. */
  | { kind: "unchanged"; reason: string; warnings: string[] }
  /** Not ours to change (opted out, not a pod CREATE): admit unchanged. */
  | { kind: "skipped"; reason: string; warnings: string[] }
  | { kind: "denied"; code: number; message: string; warnings: string[] };

/**
 * Shown whenever a pod is injected in hostPath mode: Pod Security Admission rejects hostPath below
 * `privileged`; CSI mode does not need it. Kubernetes asks webhooks to keep a warning within 120
 * characters; docs/install.md ("Choose a volume mode") says more.
 */
export const PSA_WARNING =
  "dynamic-volumes: this pod gets a hostPath volume, which Pod Security allows only at level privileged; CSI mode avoids it";

const MAX_MOUNT_PATH_LENGTH = 1024;

interface Container {
  name?: unknown;
  volumeMounts?: unknown;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isNamedContainer(c: unknown): boolean {
  return isObject(c) && typeof c.name === "string";
}

/** Escapes one JSON Pointer reference token (RFC 6901): `~` → `~0`, `/` → `~1`. */
export function escapePointer(token: string): string {
  return token.replace(/~/g, "~0").replace(/\//g, "~1");
}

// eslint-disable-next-line no-control-regex
const NORMAL_PATH = /^(?:\/(?!\.\.?(?:\/|$))[^/\u0000-\u001f\u007f]+)+$/;

/**
 * Whether `p` is an absolute path that is already normal, as the default and most mount paths are:
 * segments of printable characters, none empty, "." or "..", no trailing slash.
 */
export function isNormalPath(p: string): boolean {
  return NORMAL_PATH.test(p);
}

/** Returns the normalized absolute mount path, or a message saying why it is not acceptable. */
export function normalizeMountPath(value: string): { path: string } | { error: string } {
  if (value.length <= MAX_MOUNT_PATH_LENGTH && isNormalPath(value)) return { path: value };
  if (value.length === 0) return { error: "is empty" };
  if (value.length > MAX_MOUNT_PATH_LENGTH)
    return { error: `is longer than ${MAX_MOUNT_PATH_LENGTH} characters` };
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) return { error: "contains control characters" };
  if (!value.startsWith("/"))
    return { error: `"${value}" is relative; use an absolute path such as /datasets` };
  if (value.split("/").includes(".."))
    return { error: `"${value}" contains ".."; use a plain absolute path` };
  const path = posix.normalize(value).replace(/\/+$/, "");
  if (path === "") return { error: `"${value}" is the container's root; use a directory such as /datasets` };
  return { path };
}

function deny(message: string, code = 403, warnings: string[] = []): MutateResult {
  return { kind: "denied", code, message: `dynamic-volumes: ${message}`, warnings };
}

/** Warnings for user annotations that the agent will read later; they never block admission. */
function annotationWarnings(annotations: Record<string, unknown>): string[] {
  const warnings: string[] = [];
  const buckets = annotations[ANNOTATIONS.buckets];
  if (buckets !== undefined) {
    if (typeof buckets !== "string")
      warnings.push(`dynamic-volumes: ${ANNOTATIONS.buckets} must be a string`);
    else
      for (const e of parseBuckets(buckets).errors)
        warnings.push(
          `dynamic-volumes: ${ANNOTATIONS.buckets} ${describeBucketError(e)}; that entry will not be mounted`,
        );
  }
  const mounter = annotations[ANNOTATIONS.mounter];
  if (mounter !== undefined && !(MOUNTERS as readonly unknown[]).includes(mounter))
    warnings.push(
      `dynamic-volumes: ${ANNOTATIONS.mounter} ${describeValue(mounter)} is not one of ${MOUNTERS.join(", ")}; nothing will be mounted until it is`,
    );
  const secret = annotations[ANNOTATIONS.secret];
  if (
    secret !== undefined &&
    (typeof secret !== "string" || !/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(secret))
  )
    warnings.push(
      `dynamic-volumes: ${ANNOTATIONS.secret} ${describeValue(secret)} is not a valid Secret name`,
    );
  return warnings;
}

/**
 * The decision for a `pods/ephemeralcontainers` UPDATE, whose object is the whole pod: denied when an
 * ephemeral container mounts `dynamic-volumes`, else admitted unchanged.
 */
function admitEphemeralContainers(pod: unknown): MutateResult {
  if (!isObject(pod) || !isObject(pod.spec)) return deny("the object is not a pod with a spec", 400);
  const list = pod.spec.ephemeralContainers;
  if (list !== undefined && list !== null && !Array.isArray(list))
    return deny("spec.ephemeralContainers must be a list", 400);
  const foreign = checkMounts(pod.spec, ["ephemeralContainers"], undefined);
  if (foreign !== undefined) return deny(foreign.message, foreign.code);
  return { kind: "skipped", reason: `no ephemeral container mounts ${VOLUME_NAME}`, warnings: [] };
}

/**
 * Builds the admission decision for one AdmissionRequest: a pod CREATE, or a
 * `pods/ephemeralcontainers` UPDATE; anything else is skipped. `mintId` returns a fresh 32-hex id.
 */
export function admitPod(req: AdmissionRequest, cfg: MutateConfig, mintId: () => string): MutateResult {
  if (req.resource.group !== "" || req.resource.resource !== "pods")
    return { kind: "skipped", reason: "not a pod", warnings: [] };
  if (req.subResource === "ephemeralcontainers" && req.operation === "UPDATE")
    return admitEphemeralContainers(req.object);
  if (req.subResource !== undefined)
    return { kind: "skipped", reason: `sub-resource ${req.subResource}`, warnings: [] };
  if (req.operation !== "CREATE")
    return { kind: "skipped", reason: `operation ${req.operation}`, warnings: [] };
  if (req.namespace === undefined || req.namespace === "")
    return deny("the request names no namespace; pods are namespaced", 400);
  return mutatePod(req.object, req.namespace, cfg, mintId);
}

/** The decision for a pod being created in `namespace`. See {@link admitPod}. */
export function mutatePod(
  pod: unknown,
  namespace: string,
  cfg: MutateConfig,
  mintId: () => string,
): MutateResult {
  if (!isObject(pod)) return deny("the object is not a pod", 400);
  const metadata = isObject(pod.metadata) ? pod.metadata : undefined;
  if (pod.metadata !== undefined && metadata === undefined) return deny("metadata must be an object", 400);
  const annotations = metadata && isObject(metadata.annotations) ? metadata.annotations : {};
  if (metadata?.annotations !== undefined && metadata.annotations !== null && !isObject(metadata.annotations))
    return deny("metadata.annotations must be an object", 400);
  const spec = pod.spec;
  if (!isObject(spec)) return deny("the pod has no spec", 400);
  if (spec.volumes !== undefined && spec.volumes !== null && !Array.isArray(spec.volumes))
    return deny("spec.volumes must be a list", 400);
  const volumes: unknown[] = Array.isArray(spec.volumes) ? spec.volumes : [];

  // The claim and mount checks come before the opt-out, so that opting out cannot smuggle a
  // hostPath into another pod's directory, nor a writable mount into the pod's own.
  const claim = checkVolumes(volumes, annotations, namespace, cfg);
  if (typeof claim === "object") return deny(claim.message, claim.code);
  const injectedPath = annotations[ANNOTATIONS.mountPath];
  const foreign = checkMounts(
    spec,
    CONTAINER_FIELDS,
    claim === "verified" && typeof injectedPath === "string" ? injectedPath : undefined,
  );
  if (foreign !== undefined) return deny(foreign.message, foreign.code);

  const warnings = annotationWarnings(annotations);
  if (annotations[ANNOTATIONS.inject] === "false")
    return { kind: "skipped", reason: `${ANNOTATIONS.inject} is "false"`, warnings: [] };
  if (claim === "verified") return { kind: "unchanged", reason: "already injected and verified", warnings };

  const rawMountPath = annotations[ANNOTATIONS.mountPath];
  if (rawMountPath !== undefined && typeof rawMountPath !== "string")
    return deny(`${ANNOTATIONS.mountPath} must be a string`, 400);
  const mp = normalizeMountPath(rawMountPath ?? cfg.defaultMountPath);
  if ("error" in mp) return deny(`${ANNOTATIONS.mountPath} ${mp.error}`, 400);

  for (const field of ["containers", "initContainers"] as const) {
    const list = spec[field];
    if (list !== undefined && list !== null && !Array.isArray(list))
      return deny(`spec.${field} must be a list`, 400);
  }
  const containers = (Array.isArray(spec.containers) ? spec.containers : []) as Container[];
  const initContainers = (Array.isArray(spec.initContainers) ? spec.initContainers : []) as Container[];
  if (containers.length === 0) return deny("the pod has no containers", 400);
  if (!containers.every(isNamedContainer) || !initContainers.every(isNamedContainer))
    return deny("every container must be an object with a name", 400);

  const targets: Array<{ field: "containers" | "initContainers"; index: number; c: Container }> = [];
  const rawSelection = annotations[ANNOTATIONS.containers];
  if (rawSelection !== undefined && typeof rawSelection !== "string")
    return deny(`${ANNOTATIONS.containers} must be a comma-separated list of container names`, 400);
  const selected =
    rawSelection === undefined
      ? []
      : rawSelection
          .split(",")
          .map((s) => s.trim())
          .filter((s) => s !== "");
  if (selected.length === 0) {
    containers.forEach((c, index) => targets.push({ field: "containers", index, c }));
  } else {
    for (const name of new Set(selected)) {
      const i = containers.findIndex((c) => c.name === name);
      const j = initContainers.findIndex((c) => c.name === name);
      if (i >= 0) targets.push({ field: "containers", index: i, c: containers[i]! });
      else if (j >= 0) targets.push({ field: "initContainers", index: j, c: initContainers[j]! });
      else {
        const known = [...containers, ...initContainers].map((c) => String(c.name)).join(", ");
        return deny(
          `${ANNOTATIONS.containers} names "${name}", which is not a container of this pod (it has: ${known})`,
          400,
        );
      }
    }
  }

  for (const t of targets) {
    if (t.c.volumeMounts !== undefined && t.c.volumeMounts !== null && !Array.isArray(t.c.volumeMounts))
      return deny(`spec.${t.field}[${t.index}].volumeMounts must be a list`, 400);
    for (const m of (t.c.volumeMounts as unknown[] | undefined) ?? []) {
      if (!isObject(m) || typeof m.mountPath !== "string") continue;
      const existing = normalizeMountPath(m.mountPath);
      if ("path" in existing && existing.path === mp.path)
        return deny(
          `container "${String(t.c.name)}" already mounts volume ${describeValue(m.name)} at ${mp.path}. ` +
            `Choose another path with the ${ANNOTATIONS.mountPath} annotation, or leave the container out with ${ANNOTATIONS.containers}`,
          400,
        );
    }
  }

  const containerNames = targets.map((t) => String(t.c.name));
  if (cfg.volumeMode === "csi") {
    const patch = buildPatch(
      pod,
      metadata,
      spec,
      targets,
      { [ANNOTATIONS.mountPath]: mp.path },
      csiVolume(),
      mp.path,
    );
    return {
      kind: "patched",
      patch,
      volumeMode: "csi",
      mountPath: mp.path,
      containers: containerNames,
      warnings,
    };
  }
  if (cfg.signingKey === undefined) throw new Error("mutatePod: hostPath mode needs cfg.signingKey");
  const id = mintId();
  if (!isPodId(id)) throw new Error("mintId must return 32 lowercase hex digits");
  const ours = {
    [ANNOTATIONS.id]: id,
    [ANNOTATIONS.idSignature]: signPodId(cfg.signingKey, namespace, id),
    [ANNOTATIONS.mountPath]: mp.path,
  };
  const volume = { name: VOLUME_NAME, hostPath: { path: podDir(cfg.root, id), type: "DirectoryOrCreate" } };
  return {
    kind: "patched",
    patch: buildPatch(pod, metadata, spec, targets, ours, volume, mp.path),
    volumeMode: "hostPath",
    id,
    mountPath: mp.path,
    containers: containerNames,
    warnings: [PSA_WARNING, ...warnings],
  };
}

/** The JSON Pointer of one annotation. */
function annotationPointer(key: string): string {
  return `/metadata/annotations/${escapePointer(key)}`;
}

function buildPatch(
  pod: Record<string, unknown>,
  metadata: Record<string, unknown> | undefined,
  spec: Record<string, unknown>,
  targets: ReadonlyArray<{ field: string; index: number; c: Container }>,
  annotations: Readonly<Record<string, string>>,
  volume: Readonly<Record<string, unknown>>,
  mountPath: string,
): JsonPatchOp[] {
  const patch: JsonPatchOp[] = [];
  if (metadata === undefined || pod.metadata === undefined) {
    patch.push({ op: "add", path: "/metadata", value: { annotations: { ...annotations } } });
  } else if (!isObject(metadata.annotations)) {
    patch.push({ op: "add", path: "/metadata/annotations", value: { ...annotations } });
  } else {
    // "add" on an existing member replaces it (RFC 6902 §4.1), which drops any stale id a user copied.
    for (const [key, value] of Object.entries(annotations))
      patch.push({ op: "add", path: annotationPointer(key), value });
  }

  if (Array.isArray(spec.volumes)) patch.push({ op: "add", path: "/spec/volumes/-", value: volume });
  else patch.push({ op: "add", path: "/spec/volumes", value: [volume] });

  const mount = injectedMount(mountPath);
  for (const t of targets) {
    const base = `/spec/${t.field}/${t.index}/volumeMounts`;
    if (Array.isArray(t.c.volumeMounts)) patch.push({ op: "add", path: `${base}/-`, value: mount });
    else patch.push({ op: "add", path: base, value: [mount] });
  }
  return patch;
}
