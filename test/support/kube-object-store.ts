/**
 * The in-memory object store behind the fake Kubernetes API server (`kube-api-server.ts`): objects
 * keyed by (apiPath, namespace, resource, name), one resourceVersion counter for everything, a bounded
 * history of watch events, label and field selectors, and the three patch types.
 *
 * Tests may use it directly to set up or change state; every change is seen by open watches.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { applyPatch, type Operation } from "rfc6902";
import {
  StoreError,
  apiVersionOf,
  groupOf,
  kindOf,
  type KubeObject,
  type ResourceRef,
} from "./kube-resources.js";
import { mergePatch, parseFieldSelector, parseLabelSelector } from "./kube-selectors.js";

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED";

export interface StoreEvent {
  /** resourceVersion of the change. */
  readonly rv: number;
  readonly type: WatchEventType;
  readonly apiPath: string;
  readonly resource: string;
  readonly namespace: string | undefined;
  readonly object: KubeObject;
}

export interface Selectors {
  readonly labelSelector?: string | undefined;
  readonly fieldSelector?: string | undefined;
}

export interface WriteOptions {
  /** `?dryRun=All`: compute and return the result, store nothing. */
  readonly dryRun?: boolean;
  /** `status` writes only `.status`; anything else writes the whole object. */
  readonly subresource?: string | undefined;
}

export class KubeObjectStore {
  private readonly objects = new Map<string, KubeObject>();
  private history: StoreEvent[] = [];
  private readonly listeners = new Set<(e: StoreEvent) => void>();
  private rv = 0;
  /** Watches from a resourceVersion below this are answered with 410 Expired. */
  private oldestWatchable = 0;

  /** @param historyLimit watch events kept for resuming watches; older ones expire (410). */
  constructor(private readonly historyLimit = 10_000) {}

  /** The current (latest) resourceVersion. */
  get resourceVersion(): number {
    return this.rv;
  }

  get(ref: ResourceRef, name: string): KubeObject | undefined {
    const o = this.objects.get(keyOf(ref, name));
    return o === undefined ? undefined : structuredClone(o);
  }

  /** The object, or a 404 NotFound StoreError. */
  read(ref: ResourceRef, name: string): KubeObject {
    return this.mustGet(ref, name);
  }

  /** Objects of `ref`, in every namespace when `ref.namespace` is undefined, sorted by namespace and name. */
  list(ref: ResourceRef, selectors: Selectors = {}): KubeObject[] {
    const labels = parseLabelSelector(selectors.labelSelector);
    const fields = parseFieldSelector(selectors.fieldSelector);
    const prefix = `${ref.apiPath}|${ref.resource}|`;
    return [...this.objects.entries()]
      .filter(([k]) => k.startsWith(prefix))
      .filter(([, o]) => ref.namespace === undefined || o.metadata?.namespace === ref.namespace)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, o]) => o)
      .filter((o) => labels(o) && fields(o))
      .map((o) => structuredClone(o));
  }

  create(ref: ResourceRef, object: KubeObject, opts: WriteOptions = {}): KubeObject {
    const obj = structuredClone(object);
    const meta = (obj.metadata ??= {});
    if (ref.namespace !== undefined) {
      if (meta.namespace !== undefined && meta.namespace !== ref.namespace)
        throw new StoreError(
          400,
          "BadRequest",
          `the namespace of the provided object does not match the namespace sent on the request`,
        );
      meta.namespace = ref.namespace;
    }
    if (!meta.name && meta.generateName) meta.name = meta.generateName + randomSuffix();
    if (!meta.name)
      throw new StoreError(
        422,
        "Invalid",
        `${kindOf(ref.resource)} "" is invalid: metadata.name: Required value`,
      );
    if (this.objects.has(keyOf(ref, meta.name)))
      throw new StoreError(
        409,
        "AlreadyExists",
        `${qualified(ref)} "${meta.name}" already exists`,
        details(ref, meta.name),
      );
    if (meta.resourceVersion)
      throw new StoreError(
        500,
        "InternalError",
        "resourceVersion should not be set on objects to be created",
      );
    obj.apiVersion = apiVersionOf(ref.apiPath);
    obj.kind = kindOf(ref.resource);
    meta.uid = randomUUID();
    meta.creationTimestamp = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    return this.commit(ref, meta.name, obj, "ADDED", opts);
  }

  /** PUT: replaces the object. A `metadata.resourceVersion` in `object` must be the current one. */
  update(ref: ResourceRef, name: string, object: KubeObject, opts: WriteOptions = {}): KubeObject {
    const current = this.mustGet(ref, name);
    const obj = structuredClone(object);
    const meta = (obj.metadata ??= {});
    if (meta.name !== undefined && meta.name !== name)
      throw new StoreError(
        400,
        "BadRequest",
        `the name of the object (${meta.name}) does not match the name on the URL (${name})`,
      );
    this.checkResourceVersion(ref, name, current, meta.resourceVersion);
    const next = opts.subresource === "status" ? { ...current, status: obj.status } : obj;
    return this.commit(ref, name, this.keepIdentity(ref, current, next), "MODIFIED", opts);
  }

  /**
   * PATCH with `application/json-patch+json` (RFC 6902), `application/merge-patch+json` (RFC 7386), or
   * `application/strategic-merge-patch+json`, which is treated as a merge patch: lists are replaced,
   * not merged by key.
   */
  patch(
    ref: ResourceRef,
    name: string,
    contentType: string,
    patch: unknown,
    opts: WriteOptions = {},
  ): KubeObject {
    const current = this.mustGet(ref, name);
    let next: KubeObject;
    const type = contentType.split(";")[0]?.trim();
    if (type === "application/json-patch+json") {
      if (!Array.isArray(patch))
        throw new StoreError(
          400,
          "BadRequest",
          "json: cannot unmarshal object into Go value of type []handlers.jsonPatchOp",
        );
      next = structuredClone(current);
      const results = applyPatch(next, patch as Operation[]);
      const failed = results.findIndex((r) => r !== null);
      if (failed >= 0)
        throw new StoreError(
          422,
          "Invalid",
          `the server rejected our request due to an error in our request: operation ${failed} (${JSON.stringify(patch[failed])}) failed: ${results[failed]?.name ?? "error"}`,
        );
    } else if (type === "application/merge-patch+json" || type === "application/strategic-merge-patch+json") {
      next = mergePatch(current, patch) as KubeObject;
    } else {
      throw new StoreError(
        415,
        "UnsupportedMediaType",
        `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json`,
      );
    }
    const meta = next.metadata ?? {};
    if (meta.name !== name)
      throw new StoreError(400, "BadRequest", "metadata.name cannot be changed by a patch");
    // A resourceVersion that the patch sets or keeps must be current: optimistic concurrency, as upstream.
    this.checkResourceVersion(ref, name, current, meta.resourceVersion);
    const result = opts.subresource === "status" ? { ...current, status: next.status } : next;
    return this.commit(ref, name, this.keepIdentity(ref, current, result), "MODIFIED", opts);
  }

  /** Deletes and returns the object. `preconditions` as in DeleteOptions. */
  delete(
    ref: ResourceRef,
    name: string,
    opts: WriteOptions & { preconditions?: { resourceVersion?: string; uid?: string } } = {},
  ): KubeObject {
    const current = this.mustGet(ref, name);
    const pre = opts.preconditions;
    if (pre?.uid !== undefined && pre.uid !== current.metadata?.uid)
      throw new StoreError(
        409,
        "Conflict",
        `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${current.metadata?.uid}`,
        details(ref, name),
      );
    if (pre?.resourceVersion !== undefined && pre.resourceVersion !== current.metadata?.resourceVersion)
      throw new StoreError(
        409,
        "Conflict",
        `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${current.metadata?.resourceVersion}`,
        details(ref, name),
      );
    if (opts.dryRun) return current;
    this.objects.delete(keyOf(ref, name));
    const gone = structuredClone(current);
    gone.metadata = { ...gone.metadata, resourceVersion: String(++this.rv) };
    this.emit({ rv: this.rv, type: "DELETED", ...where(ref, current), object: gone });
    return gone;
  }

  /**
   * Watch events after `sinceRv` for `ref` (every namespace when `ref.namespace` is undefined), or
   * `"expired"` when history no longer reaches back that far (the server then answers 410).
   */
  eventsSince(ref: ResourceRef, sinceRv: number): StoreEvent[] | "expired" {
    if (sinceRv < this.oldestWatchable) return "expired";
    return this.history.filter((e) => e.rv > sinceRv && matchesRef(ref, e));
  }

  /** The oldest resourceVersion from which a watch can still resume. */
  get oldestResourceVersion(): number {
    return this.oldestWatchable;
  }

  /** Forgets all history, as etcd compaction does: watches from any earlier resourceVersion get 410. */
  compact(): void {
    this.history = [];
    this.oldestWatchable = this.rv;
  }

  /** Calls `fn` synchronously for every change. Returns the unsubscribe function. */
  subscribe(fn: (e: StoreEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private mustGet(ref: ResourceRef, name: string): KubeObject {
    const o = this.objects.get(keyOf(ref, name));
    if (o === undefined)
      throw new StoreError(404, "NotFound", `${qualified(ref)} "${name}" not found`, details(ref, name));
    return structuredClone(o);
  }

  private checkResourceVersion(
    ref: ResourceRef,
    name: string,
    current: KubeObject,
    given: string | undefined,
  ): void {
    if (given !== undefined && given !== "" && given !== current.metadata?.resourceVersion)
      throw new StoreError(
        409,
        "Conflict",
        `Operation cannot be fulfilled on ${qualified(ref)} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        details(ref, name),
      );
  }

  private keepIdentity(ref: ResourceRef, current: KubeObject, next: KubeObject): KubeObject {
    return {
      ...next,
      apiVersion: apiVersionOf(ref.apiPath),
      kind: kindOf(ref.resource),
      metadata: {
        ...next.metadata,
        name: current.metadata?.name,
        uid: current.metadata?.uid,
        creationTimestamp: current.metadata?.creationTimestamp,
        ...(current.metadata?.namespace !== undefined ? { namespace: current.metadata.namespace } : {}),
      },
    };
  }

  private commit(
    ref: ResourceRef,
    name: string,
    obj: KubeObject,
    type: WatchEventType,
    opts: WriteOptions,
  ): KubeObject {
    if (opts.dryRun) return structuredClone(obj);
    obj.metadata = { ...obj.metadata, resourceVersion: String(++this.rv) };
    this.objects.set(keyOf(ref, name), structuredClone(obj));
    this.emit({ rv: this.rv, type, ...where(ref, obj), object: structuredClone(obj) });
    return obj;
  }

  private emit(e: StoreEvent): void {
    this.history.push(e);
    if (this.history.length > this.historyLimit) {
      const dropped = this.history.splice(0, this.history.length - this.historyLimit);
      this.oldestWatchable = dropped[dropped.length - 1]?.rv ?? this.oldestWatchable;
    }
    for (const fn of this.listeners) fn(e);
  }
}

/** True when the event belongs to `ref` (any namespace when `ref.namespace` is undefined). */
export function matchesRef(ref: ResourceRef, e: StoreEvent): boolean {
  return (
    e.apiPath === ref.apiPath &&
    e.resource === ref.resource &&
    (ref.namespace === undefined || e.namespace === ref.namespace)
  );
}

function keyOf(ref: ResourceRef, name: string): string {
  return `${ref.apiPath}|${ref.resource}|${ref.namespace ?? ""}|${name}`;
}

function where(ref: ResourceRef, o: KubeObject): Pick<StoreEvent, "apiPath" | "resource" | "namespace"> {
  return { apiPath: ref.apiPath, resource: ref.resource, namespace: o.metadata?.namespace };
}

function qualified(ref: ResourceRef): string {
  const group = groupOf(ref.apiPath);
  return group === "" ? ref.resource : `${ref.resource}.${group}`;
}

function details(ref: ResourceRef, name: string): { name: string; group?: string; kind: string } {
  const group = groupOf(ref.apiPath);
  return { name, kind: ref.resource, ...(group !== "" ? { group } : {}) };
}

function randomSuffix(): string {
  const alphabet = "bcdfghjklmnpqrstvwxz2456789";
  return [...randomBytes(5)].map((b) => alphabet[b % alphabet.length]).join("");
}
