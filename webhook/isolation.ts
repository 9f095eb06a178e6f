/**
 * Tenant isolation: what a pod may already claim on the host before the webhook touches it
 * (docs/design.md "Forgery", "Webhook"). Pure. Each check returns a {@link Denial} whose message says what
 * to change, or nothing when the pod is acceptable.
 *
 * - No hostPath at, under or above the root, nor under a kernel alias of the host's tree.
 * - A volume named `dynamic-volumes` only as our own injection: the hostPath signed for the pod's
 *   namespace (hostPath mode), or exactly the read-only CSI volume of {@link CSI_DRIVER_NAME} (CSI
 *   mode). Either is accepted in either mode, so that switching modes never denies a pod that the
 *   other mode injected a moment earlier (reinvocation during a rollout).
 * - No other volume of {@link CSI_DRIVER_NAME}: only the webhook's own, read-only, may use it.
 * - No volumeMount of `dynamic-volumes` but the one the webhook writes.
 */
import { posix } from "node:path";
import { describeValue } from "../shared/errors.js";
import { ANNOTATIONS, CSI_DRIVER_NAME, VOLUME_NAME, isPodId, podDir } from "../shared/names.js";
import { verifyPodId, type SigningKey } from "../shared/signing.js";

/** A refusal: an HTTP-like code and a message for the user, without the `dynamic-volumes: ` prefix. */
export interface Denial {
  readonly code: number;
  readonly message: string;
}

export type ContainerField = "containers" | "initContainers" | "ephemeralContainers";

export const CONTAINER_FIELDS: readonly ContainerField[] = [
  "containers",
  "initContainers",
  "ephemeralContainers",
];

/**
 * Host paths through which the kernel links back into the host's tree: `/proc/<pid>/root` and
 * `/proc/<pid>/cwd`, `/dev/fd` and `/dev/std{in,out,err}` (links into `/proc/self/fd`). The kubelet
 * follows them when it binds a hostPath, so a path under one reaches any host directory, the root
 * included, whatever its text says. Nothing under them is a directory a pod needs from the host.
 */
export const KERNEL_ALIASES: readonly string[] = [
  "/proc",
  "/dev/fd",
  "/dev/stdin",
  "/dev/stdout",
  "/dev/stderr",
];

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function refuse(message: string, code = 403): Denial {
  return { code, message };
}

/** A hostPath as the kubelet resolves it: relative paths against "/", no `.`, `//` or trailing `/`. */
export function normalizeHostPath(p: string): string {
  const n = posix.resolve("/", p);
  return n.length > 1 ? n.replace(/\/+$/, "") : n;
}

/** The kernel alias that a hostPath is, or lies under, if any. */
export function kernelAliasOf(hostPath: string): string | undefined {
  const p = normalizeHostPath(hostPath);
  return KERNEL_ALIASES.find((a) => p === a || p.startsWith(`${a}/`));
}

/** How a hostPath relates to the root: inside it (or equal), an ancestor of it, or unrelated. */
function relationToRoot(hostPath: string, root: string): "inside" | "ancestor" | "unrelated" {
  const p = normalizeHostPath(hostPath);
  if (p === root || p.startsWith(`${root}/`)) return "inside";
  if (p === "/" || root.startsWith(`${p}/`)) return "ancestor";
  return "unrelated";
}

/** The volume the webhook injects in CSI mode: a CSI ephemeral inline volume, read-only, no attributes. */
export function csiVolume(): { name: string; csi: { driver: string; readOnly: true } } {
  return { name: VOLUME_NAME, csi: { driver: CSI_DRIVER_NAME, readOnly: true } };
}

/** Whether `o` has exactly the keys of `want`, with the same values; nested objects alike. */
function sameShape(o: unknown, want: Record<string, unknown>): boolean {
  if (!isObject(o)) return false;
  const keys = Object.keys(o);
  return (
    keys.length === Object.keys(want).length &&
    keys.every((k) => {
      if (!Object.hasOwn(want, k)) return false;
      const w = want[k];
      return isObject(w) ? sameShape(o[k], w) : o[k] === w;
    })
  );
}

/**
 * Whether `v` is exactly {@link csiVolume}: no `volumeAttributes`, `fsType` or
 * `nodePublishSecretRef`, and `readOnly: true`.
 */
export function isInjectedCsiVolume(v: unknown): boolean {
  return sameShape(v, csiVolume());
}

/**
 * Whether a volume names our CSI driver, compared without case and surrounding spaces so that no
 * spelling the API server or a kubelet might accept slips past.
 */
function usesOurDriver(v: Record<string, unknown>): boolean {
  return (
    isObject(v.csi) &&
    typeof v.csi.driver === "string" &&
    v.csi.driver.trim().toLowerCase() === CSI_DRIVER_NAME
  );
}

/**
 * Checks the pod's volumes for a claim on the host. Returns "verified" when it carries our own
 * injection (the hostPath signed for `namespace`, or the CSI volume), "none" when it claims nothing,
 * or a denial. Without a signing key (CSI mode may run without one) no hostPath injection verifies.
 */
export function checkVolumes(
  volumes: readonly unknown[],
  annotations: Record<string, unknown>,
  namespace: string,
  cfg: { readonly root: string; readonly signingKey?: SigningKey | undefined },
): "verified" | "none" | Denial {
  const id = annotations[ANNOTATIONS.id];
  const sig = annotations[ANNOTATIONS.idSignature];
  let ours = 0;
  let verified = false;
  for (const v of volumes) {
    if (!isObject(v)) continue;
    const hostPath =
      isObject(v.hostPath) && typeof v.hostPath.path === "string" ? v.hostPath.path : undefined;
    const vname = typeof v.name === "string" ? v.name : "?";
    if (v.name === VOLUME_NAME) {
      ours++;
      if (isInjectedCsiVolume(v)) {
        // The kubelet, not the spec, names the pod to the driver (podInfoOnMount): a copied CSI
        // volume gives the copy its own directory, so there is nothing to sign.
        verified = true;
        continue;
      }
      if (usesOurDriver(v))
        return refuse(
          `the pod already declares volume "${VOLUME_NAME}" of CSI driver ${CSI_DRIVER_NAME}, but not as this webhook writes it ` +
            `(exactly {driver: ${CSI_DRIVER_NAME}, readOnly: true}, no other field): a writable or differently published copy could write into the pod's host directory. ` +
            `Remove that volume and its mounts and create the pod again; the webhook adds its own`,
        );
      const ok =
        hostPath !== undefined &&
        cfg.signingKey !== undefined &&
        typeof id === "string" &&
        typeof sig === "string" &&
        isPodId(id) &&
        normalizeHostPath(hostPath) === podDir(cfg.root, id) &&
        verifyPodId(cfg.signingKey, namespace, id, sig);
      if (!ok)
        return refuse(
          hostPath !== undefined && cfg.signingKey === undefined
            ? `the pod already declares a hostPath volume named "${VOLUME_NAME}", and this webhook runs in CSI mode without the signing key that would verify it. ` +
                `Remove that volume and its mounts (and the ${ANNOTATIONS.id} annotations) and create the pod again; the webhook adds a CSI volume instead`
            : `the pod already declares a volume named "${VOLUME_NAME}" that this webhook did not sign for namespace "${namespace}". ` +
                `A copied or replayed injection would expose another pod's buckets. Remove that volume and its mounts (and the ${ANNOTATIONS.id} annotations) and create the pod again`,
        );
      verified = true;
      continue;
    }
    if (usesOurDriver(v))
      return refuse(
        `volume "${vname}" uses the CSI driver ${CSI_DRIVER_NAME}, which serves only the webhook's own volume "${VOLUME_NAME}" (read-only, mounted HostToContainer): ` +
          `another volume of it could be published writable into the pod's host directory, where the node agent works as root. Remove that volume; the webhook gives the pod its own`,
      );
    if (hostPath === undefined) continue;
    const alias = kernelAliasOf(hostPath);
    if (alias !== undefined)
      return refuse(
        `volume "${vname}" mounts hostPath "${hostPath}", under ${alias}, ` +
          `${alias === "/proc" ? "where /proc/<pid>/root and /proc/<pid>/cwd lead" : "a link through /proc/self/fd that leads"} to any host directory, ` +
          `${cfg.root} and other pods' buckets included, past any check of the path's text. Remove that volume, or mount the host directory you need by its real path`,
      );
    const rel = relationToRoot(hostPath, cfg.root);
    if (rel === "inside")
      return refuse(
        `volume "${vname}" mounts hostPath "${hostPath}", inside ${cfg.root}, which holds other pods' buckets. Remove that volume; dynamic-volumes gives the pod its own directory`,
      );
    if (rel === "ancestor")
      return refuse(
        `volume "${vname}" mounts hostPath "${hostPath}", which contains ${cfg.root} and so every pod's buckets. Mount a narrower host directory, or opt the pod out with ${ANNOTATIONS.inject}: "false" in a namespace without the injection label`,
      );
  }
  if (ours > 1) return refuse(`the pod declares more than one volume named "${VOLUME_NAME}"`, 400);
  return verified ? "verified" : "none";
}

/** The volumeMount the webhook writes: the only mount of `dynamic-volumes` a pod may have. */
export function injectedMount(mountPath: string): Record<string, unknown> {
  return { name: VOLUME_NAME, mountPath, readOnly: true, mountPropagation: "HostToContainer" };
}

/** Whether `m` is exactly {@link injectedMount}: no other field (subPath, recursiveReadOnly, …). */
function isInjectedMount(m: Record<string, unknown>, mountPath: string): boolean {
  const want = injectedMount(mountPath);
  const keys = Object.keys(m);
  return (
    keys.length === Object.keys(want).length && keys.every((k) => Object.hasOwn(want, k) && m[k] === want[k])
  );
}

/**
 * Denies a volumeMount of `dynamic-volumes`, in the containers of `fields`, that the webhook did not
 * write. `mountPath` is the resolved mount path of a verified injection; without one, and in
 * ephemeral containers, every mount of the volume is foreign. A writable or sub-path mount would let
 * the pod write into its host directory, where the node agent works as root.
 */
export function checkMounts(
  spec: Record<string, unknown>,
  fields: readonly ContainerField[],
  mountPath: string | undefined,
): Denial | undefined {
  for (const field of fields) {
    const list = spec[field];
    if (!Array.isArray(list)) continue;
    for (const [i, c] of list.entries()) {
      if (!isObject(c) || !Array.isArray(c.volumeMounts)) continue;
      for (const m of c.volumeMounts as unknown[]) {
        if (!isObject(m) || m.name !== VOLUME_NAME) continue;
        const ephemeral = field === "ephemeralContainers";
        if (!ephemeral && mountPath !== undefined && isInjectedMount(m, mountPath)) continue;
        const who = `${ephemeral ? "ephemeral container" : "container"} ${describeValue(c.name)} (spec.${field}[${i}])`;
        const why =
          "another mount of it could write into the pod's host directory, where the node agent works as root";
        if (ephemeral)
          return refuse(
            `${who} mounts volume "${VOLUME_NAME}"; ephemeral containers may not mount it: ${why}. ` +
              "Remove that volumeMount; the buckets stay visible in the containers that have the webhook's mount",
          );
        return refuse(
          `${who} mounts volume "${VOLUME_NAME}" itself; only the webhook's own mount of it (read-only, HostToContainer, no subPath${mountPath === undefined ? "" : `, at ${mountPath}`}) is allowed: ${why}. ` +
            `Remove that volumeMount: the webhook adds its mount to the containers named in ${ANNOTATIONS.containers} (all app containers by default), at ${ANNOTATIONS.mountPath}`,
        );
      }
    }
  }
  return undefined;
}
