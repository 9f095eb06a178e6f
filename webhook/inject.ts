/**
 * `npm run inject`: a plain pod manifest in, the pod the API server would store after the webhook's
 * mutation out, for local mode (docs/local-mode.md). Pure: the webhook's own {@link mutatePod} makes
 * the decision and the JSON patch, the patch's `add` operations are applied here, and the result is
 * read back by `mutatePod`, which must find it injected and verified. In CSI mode the pod also gets
 * the `metadata.uid` the API server would give it, when it has none: the node side keys the pod's
 * directory by it.
 */
import { loadAll as loadAllYaml } from "js-yaml";
import { randomUUID } from "node:crypto";
import { AppError, describeValue } from "../shared/errors.js";
import { DEFAULT_MOUNT_PATH, DEFAULT_ROOT } from "../shared/names.js";
import type { SigningKey } from "../shared/signing.js";
import { mutatePod, type VolumeMode } from "./mutate.js";
import type { JsonPatchOp } from "./review.js";

export interface InjectOptions {
  /** The id-signing key; required in hostPath mode. */
  readonly signingKey?: SigningKey | undefined;
  /** The webhook's `--volume-mode`. Default `hostPath`. */
  readonly volumeMode?: VolumeMode;
  /** Returns a fresh pod uid for CSI mode (a pod without `metadata.uid`). Default `randomUUID`. */
  readonly mintUid?: () => string;
  /** Host root the agent and mounter use (`--root`). Default {@link DEFAULT_ROOT}. */
  readonly root?: string;
  /** Mount path for a pod without the mount-path annotation. Default {@link DEFAULT_MOUNT_PATH}. */
  readonly defaultMountPath?: string;
  /** Returns a fresh 32-hex id. */
  readonly mintId: () => string;
}

export interface InjectResult {
  /** The injected pod (a copy; the input is not changed). */
  readonly pod: Record<string, unknown>;
  /** `patched`: injected now; `unchanged`: it already carried a verified injection; `skipped`: opted out. */
  readonly kind: "patched" | "unchanged" | "skipped";
  /** For `unchanged` and `skipped`: why. */
  readonly reason?: string;
  readonly id?: string;
  readonly mountPath?: string;
  readonly containers?: readonly string[];
  /** The webhook's admission warnings. */
  readonly warnings: readonly string[];
}

type Obj = Record<string, unknown>;

function isObject(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Reads a manifest's text: YAML or JSON (JSON is YAML), exactly one document. Throws
 * AppError("InvalidArgument") naming `source` when it does not parse or holds no or several documents.
 */
export function parseManifest(text: string, source: string): unknown {
  let docs: unknown[];
  try {
    docs = loadAllYaml(text).filter((d) => d !== null && d !== undefined);
  } catch (e) {
    const reason = (e as Error).message.split("\n")[0];
    throw new AppError("InvalidArgument", `${source} is not valid YAML or JSON: ${reason}`, { cause: e });
  }
  if (docs.length === 0) throw new AppError("InvalidArgument", `${source} is empty; give it one Pod`);
  if (docs.length > 1)
    throw new AppError(
      "InvalidArgument",
      `${source} holds ${docs.length} documents; give it one Pod (one pod file per pod)`,
    );
  return docs[0];
}

/** Checks that `manifest` is a Pod; returns it. Throws AppError("InvalidArgument") saying what it is instead. */
export function asPod(manifest: unknown, source: string): Obj {
  if (!isObject(manifest))
    throw new AppError("InvalidArgument", `${source} is ${describeValue(manifest)}, not a Pod object`);
  const { kind, apiVersion } = manifest;
  if (kind !== "Pod") {
    const what = kind === undefined ? "has no kind" : `is a ${describeValue(kind)}`;
    throw new AppError(
      "InvalidArgument",
      `${source} ${what}, not a Pod; give a manifest with "apiVersion: v1" and "kind: Pod"` +
        (kind === "Deployment" || kind === "Job" || kind === "StatefulSet" || kind === "DaemonSet"
          ? ` (a ${String(kind)}'s pod template is injected by the webhook in a cluster; for local mode, copy the template into a Pod)`
          : ""),
    );
  }
  if (apiVersion !== undefined && apiVersion !== "v1")
    throw new AppError(
      "InvalidArgument",
      `${source}: a Pod's apiVersion is "v1", not ${describeValue(apiVersion)}`,
    );
  if (manifest.metadata !== undefined && !isObject(manifest.metadata))
    throw new AppError("InvalidArgument", `${source}: metadata must be an object`);
  return manifest;
}

/** Unescapes one JSON Pointer reference token (RFC 6901). */
function unescapeToken(token: string): string {
  return token.replace(/~1/g, "/").replace(/~0/g, "~");
}

/**
 * Applies the `add` operations of a JSON patch (RFC 6902 §4.1) to `doc` in place: what
 * {@link mutatePod} emits. Any other operation, or a path whose parent is missing, throws.
 */
export function applyAddOps(doc: Obj, ops: readonly JsonPatchOp[]): void {
  for (const op of ops) {
    if (op.op !== "add") throw new Error(`unexpected patch operation ${op.op} at ${op.path}`);
    if (!op.path.startsWith("/")) throw new Error(`patch path ${op.path} is not a JSON pointer`);
    const tokens = op.path.slice(1).split("/").map(unescapeToken);
    const last = tokens.pop()!;
    let parent: unknown = doc;
    for (const t of tokens) {
      parent = Array.isArray(parent) ? parent[Number(t)] : isObject(parent) ? parent[t] : undefined;
      if (parent === undefined) throw new Error(`patch path ${op.path}: ${t} does not exist`);
    }
    const value = structuredClone(op.value);
    if (Array.isArray(parent)) {
      const i = last === "-" ? parent.length : Number(last);
      if (!Number.isInteger(i) || i < 0 || i > parent.length)
        throw new Error(`patch path ${op.path}: index ${last} is out of range`);
      parent.splice(i, 0, value);
    } else if (isObject(parent)) {
      parent[last] = value;
    } else throw new Error(`patch path ${op.path}: the parent is not an object or a list`);
  }
}

/**
 * Injects `manifest` as the webhook would at its creation in its namespace (metadata.namespace, or
 * "default", which is then written into the result so that the signature and the pod agree).
 * Throws AppError: "InvalidArgument" for what is not a Pod, "Forbidden" with the webhook's own
 * message for a pod the webhook denies.
 */
export function injectPod(manifest: unknown, opts: InjectOptions, source = "the manifest"): InjectResult {
  const pod = structuredClone(asPod(manifest, source));
  const metadata = (pod.metadata ?? {}) as Obj;
  const ns = metadata.namespace;
  if (ns !== undefined && (typeof ns !== "string" || ns === ""))
    throw new AppError("InvalidArgument", `${source}: metadata.namespace must be a non-empty string`);
  const namespace = typeof ns === "string" ? ns : "default";
  pod.metadata = { ...metadata, namespace };
  const cfg = {
    root: opts.root ?? DEFAULT_ROOT,
    defaultMountPath: opts.defaultMountPath ?? DEFAULT_MOUNT_PATH,
    volumeMode: opts.volumeMode ?? "hostPath",
    signingKey: opts.signingKey,
  };
  if (cfg.volumeMode === "hostPath" && cfg.signingKey === undefined)
    throw new AppError("InvalidArgument", "hostPath mode needs the signing key");
  const result = mutatePod(pod, namespace, cfg, opts.mintId);
  switch (result.kind) {
    case "denied":
      throw new AppError("Forbidden", `the webhook would deny this pod: ${result.message}`);
    case "skipped":
    case "unchanged":
      return { pod, kind: result.kind, reason: result.reason, warnings: result.warnings };
    case "patched": {
      applyAddOps(pod, result.patch);
      if (result.volumeMode === "csi" && (pod.metadata as Obj).uid === undefined)
        (pod.metadata as Obj).uid = (opts.mintUid ?? randomUUID)();
      // The agent reads what the webhook wrote: read back, the pod must carry a verified injection.
      const check = mutatePod(pod, namespace, cfg, opts.mintId);
      if (check.kind !== "unchanged")
        throw new AppError(
          "Internal",
          `the injected pod does not read back as injected (${check.kind}${check.kind === "denied" ? `: ${check.message}` : check.kind === "skipped" ? `: ${check.reason}` : ""})`,
        );
      return {
        pod,
        kind: "patched",
        id: result.id,
        mountPath: result.mountPath,
        containers: result.containers,
        warnings: result.warnings,
      };
    }
  }
}
