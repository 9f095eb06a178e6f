/**
 * The OCI runtime spec of a harness pod, pure: `runc spec`'s default in, the pod's config out.
 * Only the fields touched here are typed; everything else passes through unchanged.
 */

export interface OciMount {
  destination: string;
  type?: string;
  source?: string;
  options?: string[];
}

export interface OciSpec {
  process?: { terminal?: boolean; args?: string[]; [k: string]: unknown };
  root?: { path: string; readonly?: boolean };
  hostname?: string;
  mounts?: OciMount[];
  annotations?: Record<string, string>;
  linux?: {
    namespaces?: { type: string; path?: string }[];
    rootfsPropagation?: string;
    [k: string]: unknown;
  };
  [k: string]: unknown;
}

/** Annotation recording `pid:starttime` of the process that created the pod (stale-pod cleanup). */
export const OWNER_ANNOTATION = "dynamic-volumes.io/harness-owner";

export interface PodSpecOptions {
  readonly hostname: string;
  /** Absolute path of the shared busybox rootfs; mounted read-only so pods cannot change it. */
  readonly rootfs: string;
  readonly hostDir: string;
  readonly mountPath: string;
  readonly readOnly: boolean;
  readonly owner: string;
  /** The container's process. Default `sleep 1000000`. */
  readonly args?: readonly string[];
}

/**
 * What containerd's CRI plugin does for a volumeMount with `mountPropagation: HostToContainer`
 * (containerd `WithMounts`): the bind gets `rbind`, `rslave` and `ro`/`rw`, and
 * `linux.rootfsPropagation` becomes `rslave` unless it is already `rshared`/`rslave`, because a
 * slave bind inside a private root would not receive anything. A FUSE mount propagated below a
 * read-only bind keeps its own rw/ro: the `ro` applies to the bind mount only.
 *
 * Also: no TTY (nothing reads one), and no network namespace, so the pod reaches an S3 server on
 * the host's 127.0.0.1 as a hostNetwork pod would.
 */
export function buildPodSpec(base: OciSpec, opts: PodSpecOptions): OciSpec {
  const spec = structuredClone(base);
  spec.process = { ...spec.process, terminal: false, args: [...(opts.args ?? ["sleep", "1000000"])] };
  spec.root = { path: opts.rootfs, readonly: true };
  spec.hostname = opts.hostname;
  spec.mounts = [
    ...(spec.mounts ?? []).filter((m) => m.destination !== opts.mountPath),
    {
      destination: opts.mountPath,
      type: "bind",
      source: opts.hostDir,
      options: ["rbind", "rslave", opts.readOnly ? "ro" : "rw"],
    },
  ];
  spec.annotations = { ...spec.annotations, [OWNER_ANNOTATION]: opts.owner };
  const linux = { ...spec.linux };
  linux.namespaces = (linux.namespaces ?? []).filter((n) => n.type !== "network");
  if (linux.rootfsPropagation !== "rshared" && linux.rootfsPropagation !== "rslave") {
    linux.rootfsPropagation = "rslave";
  }
  spec.linux = linux;
  return spec;
}
