/**
 * The Kubernetes pod source (docs/design.md "Agent"): an informer on the pods of this node (field selector
 * `spec.nodeName=<node>`, all namespaces), Secrets read from the pod's namespace, status written to
 * the `dynamic-volumes/status` annotation, core/v1 Events recorded on the pod, and console edits of
 * `dynamic-volumes/buckets` as guarded JSON patches.
 *
 * The agent's service account needs get, list, watch and patch on pods, get on secrets and create on
 * events. Secret data is never logged.
 */
import { setTimeout as sleep } from "node:timers/promises";
import {
  CoreV1Api,
  KubeConfig,
  PatchStrategy,
  V1MicroTime,
  setHeaderOptions,
  type CoreV1Event,
  type V1Pod,
} from "@kubernetes/client-node";
import { AppError, ConfigError } from "../../shared/errors.js";
import { kubeError, kubeStatusCode } from "../../shared/kube-errors.js";
import type { Logger } from "../../shared/logger.js";
import { ANNOTATIONS } from "../../shared/names.js";
import type { PodObject } from "../reconcile/pod.js";
import type { PodEvent, PodEventRecord, PodRef, PodSource } from "./pod-source.js";
import { NodePodInformer } from "./pod-informer.js";

/** `source.component` and `reportingComponent` of the Events the agent records. */
export const EVENT_COMPONENT = "dynamic-volumes-agent";
/** Event messages are cut to this many characters. */
export const MAX_EVENT_MESSAGE = 1024;
/** Read-modify-write attempts of {@link KubernetesPodSource.updateBuckets} and `writeStatus`. */
export const MAX_WRITE_ATTEMPTS = 5;

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

export interface KubernetesPodSourceOptions {
  /** This node's name: only pods with `spec.nodeName` equal to it are watched and edited. */
  readonly nodeName: string;
  readonly log: Logger;
  /**
   * Delay before the informer is restarted after an error; it doubles from `initialMs` (default
   * 1000) up to `maxMs` (default 30 000) and starts over once a list or an event gets through.
   */
  readonly restartBackoff?: { readonly initialMs?: number; readonly maxMs?: number };
}

type JsonPatchOp = { op: "test" | "add"; path: string; value: unknown } | { op: "remove"; path: string };

/** A JSON pointer to one annotation: `/` in the key becomes `~1` (RFC 6901). */
export function annotationPath(key: string): string {
  return `/metadata/annotations/${key.replace(/~/g, "~0").replace(/\//g, "~1")}`;
}

/** The one-line start-up error when there is neither a kubeconfig nor a service account. */
export const NO_KUBECONFIG =
  "no Kubernetes configuration found (no KUBECONFIG, no ~/.kube/config, no in-cluster service account); pass --pods-dir and --secrets-dir for local mode, or a kubeconfig / in-cluster service account";

/**
 * Whether `loadFromDefault` found nothing and filled in its placeholder: cluster "cluster" at
 * http://localhost:8080 with user "user" and no credentials.
 */
export function isFallbackConfig(kc: KubeConfig): boolean {
  const cluster = kc.getCurrentCluster();
  const user = kc.getCurrentUser();
  return (
    kc.getClusters().length === 1 &&
    cluster?.name === "cluster" &&
    cluster.server === "http://localhost:8080" &&
    user?.name === "user" &&
    user.token === undefined &&
    user.certFile === undefined &&
    user.certData === undefined
  );
}

export class KubernetesPodSource implements PodSource {
  private readonly core: CoreV1Api;
  private readonly server: string;
  private readonly log: Logger;
  private readonly nodeName: string;
  private readonly informer: NodePodInformer;

  constructor(kubeConfig: KubeConfig, opts: KubernetesPodSourceOptions) {
    if (!DNS_SUBDOMAIN.test(opts.nodeName))
      throw new ConfigError(`node name "${opts.nodeName}" is not a valid Kubernetes node name`);
    this.core = kubeConfig.makeApiClient(CoreV1Api);
    this.server = kubeConfig.getCurrentCluster()?.server ?? "(no current cluster)";
    this.nodeName = opts.nodeName;
    this.log = opts.log.child({ component: "kubernetes-pod-source" });
    this.informer = new NodePodInformer({
      kubeConfig,
      core: this.core,
      nodeName: opts.nodeName,
      log: this.log,
      restartBackoff: opts.restartBackoff,
    });
  }

  /**
   * Loads the kubeconfig the usual way (`KUBECONFIG`, `~/.kube/config`, or the in-cluster service
   * account) and returns a source for `nodeName`. Nothing is contacted until {@link start}.
   */
  static async fromDefaultConfig(opts: KubernetesPodSourceOptions): Promise<KubernetesPodSource> {
    const kubeConfig = new KubeConfig();
    try {
      kubeConfig.loadFromDefault();
    } catch (e) {
      throw new ConfigError(
        `cannot load a kubeconfig (KUBECONFIG, ~/.kube/config or the in-cluster service account): ${(e as Error).message}. Without Kubernetes, pass --pods-dir and --secrets-dir for local mode`,
        { cause: e },
      );
    }
    // Finding nothing, the client falls back to http://localhost:8080, which it then refuses to
    // use ("HTTP protocol is not allowed"): say what is missing instead, in one line.
    if (isFallbackConfig(kubeConfig)) throw new ConfigError(NO_KUBECONFIG);
    return new KubernetesPodSource(kubeConfig, opts);
  }

  /**
   * Starts the informer. Resolves once the pods now on this node have been delivered as `upsert`;
   * until then errors are logged and the list retried with backoff. Rejects if {@link stop} comes
   * first. Later changes arrive as `upsert`/`delete`; a pod that vanished while the watch was down
   * is delivered as `delete` after the relist, and a pod recreated under the same name as a
   * `delete` of the old instance followed by an `upsert` of the new one.
   */
  async start(onEvent: (e: PodEvent) => void): Promise<void> {
    await this.informer.start(onEvent);
    this.log.info({ node: this.nodeName, pods: this.informer.size }, "listed the pods of this node");
  }

  async stop(): Promise<void> {
    await this.informer.stop();
  }

  /** The pod from the informer's cache; undefined when it is not (or no longer) on this node. */
  getPod(namespace: string, name: string): PodObject | undefined {
    return this.informer.get(namespace, name);
  }

  async getSecret(namespace: string, name: string): Promise<Record<string, string> | undefined> {
    if (!DNS_SUBDOMAIN.test(namespace) || !DNS_SUBDOMAIN.test(name))
      throw new AppError("InvalidArgument", `Secret "${namespace}/${name}" is not a valid name`);
    let data: Record<string, string> | undefined;
    try {
      data = (await this.core.readNamespacedSecret({ name, namespace })).data;
    } catch (e) {
      if (kubeStatusCode(e) === 404) return undefined;
      throw kubeError(
        e,
        `reading Secret ${namespace}/${name}`,
        this.server,
        `get on secrets in namespace "${namespace}"`,
      );
    }
    const out: Record<string, string> = {};
    for (const [key, value] of Object.entries(data ?? {}))
      out[key] = Buffer.from(value, "base64").toString("utf8");
    return out;
  }

  /**
   * Sets the status annotation, and nothing else, on exactly the pod instance `pod.uid`: a JSON
   * patch that tests `metadata.uid` first, so that a pod recreated under the same name is left alone.
   * A pod that is gone is skipped.
   */
  async writeStatus(pod: PodRef, status: string): Promise<void> {
    const doing = `writing ${ANNOTATIONS.status} on pod ${pod.namespace}/${pod.name}`;
    const cached = this.informer.get(pod.namespace, pod.name);
    let current: V1Pod | undefined = cached?.metadata?.uid === pod.uid ? cached : undefined;
    for (let attempt = 1; ; attempt++) {
      current ??= await this.readPod(pod.namespace, pod.name, doing);
      if (current?.metadata?.uid !== pod.uid) {
        this.log.debug({ pod: `${pod.namespace}/${pod.name}`, uid: pod.uid }, "pod gone; status not written");
        return;
      }
      const ops: JsonPatchOp[] = [{ op: "test", path: "/metadata/uid", value: pod.uid }];
      if (current.metadata.annotations !== undefined)
        ops.push({ op: "add", path: annotationPath(ANNOTATIONS.status), value: status });
      // Without an annotations map, adding one must not replace a map that appeared meanwhile.
      else
        ops.push(
          { op: "test", path: "/metadata/resourceVersion", value: current.metadata.resourceVersion },
          { op: "add", path: "/metadata/annotations", value: { [ANNOTATIONS.status]: status } },
        );
      try {
        await this.patchPod(pod.namespace, pod.name, ops);
        return;
      } catch (e) {
        const code = kubeStatusCode(e);
        if (code === 404) return;
        if ((code === 409 || code === 422) && attempt < MAX_WRITE_ATTEMPTS) {
          current = undefined;
          continue;
        }
        throw kubeError(e, doing, this.server, `patch on pods in namespace "${pod.namespace}"`);
      }
    }
  }

  /** Creates a core/v1 Event on the pod; failures are thrown as AppError. */
  async recordEvent(pod: PodRef, event: PodEventRecord): Promise<void> {
    const now = new Date();
    const body: CoreV1Event = {
      metadata: { generateName: `${pod.name}.`, namespace: pod.namespace },
      involvedObject: {
        apiVersion: "v1",
        kind: "Pod",
        namespace: pod.namespace,
        name: pod.name,
        uid: pod.uid,
      },
      type: event.type,
      reason: event.reason,
      message: truncate(event.message, MAX_EVENT_MESSAGE),
      // Required (with reportingComponent and reportingInstance) once eventTime is set.
      action: event.reason.startsWith("Unmount") ? "Unmount" : "Mount",
      source: { component: EVENT_COMPONENT, host: this.nodeName },
      reportingComponent: EVENT_COMPONENT,
      reportingInstance: this.nodeName,
      firstTimestamp: now,
      lastTimestamp: now,
      // V1MicroTime serializes with microseconds, as the API server's MicroTime requires.
      eventTime: new V1MicroTime(now.getTime()),
      count: 1,
    };
    try {
      await this.core.createNamespacedEvent({ namespace: pod.namespace, body });
    } catch (e) {
      throw kubeError(
        e,
        `recording Event ${event.reason} on pod ${pod.namespace}/${pod.name}`,
        this.server,
        `create on events in namespace "${pod.namespace}"`,
      );
    }
  }

  /**
   * Reads the pod, applies `edit` to its `dynamic-volumes/buckets` value and writes that annotation
   * alone (removed when `edit` returns `""`) with a JSON patch that tests `metadata.resourceVersion`,
   * so a concurrent change makes it fail; it is then read and edited again, up to
   * {@link MAX_WRITE_ATTEMPTS} times. `edit` may thus run more than once and must not have side
   * effects. Throws AppError NotFound when the pod does not exist or is not on this node.
   */
  async updateBuckets(
    namespace: string,
    name: string,
    edit: (current: string | undefined) => string,
  ): Promise<PodObject> {
    const key = `${namespace}/${name}`;
    const doing = `updating ${ANNOTATIONS.buckets} of pod ${key}`;
    const rbac = `get and patch on pods in namespace "${namespace}"`;
    let rejected: { rv: string | undefined; error: unknown } | undefined;
    for (let attempt = 1; ; attempt++) {
      const pod = await this.readPod(namespace, name, doing);
      if (pod === undefined) throw new AppError("NotFound", `pod ${key} not found`);
      const node = pod.spec?.nodeName;
      if (node !== this.nodeName)
        throw new AppError(
          "NotFound",
          node
            ? `pod ${key} runs on node "${node}", not on "${this.nodeName}"; use the agent on "${node}"`
            : `pod ${key} is not scheduled to a node yet; try again once it is`,
        );
      const rv = pod.metadata?.resourceVersion;
      // A 422 for an object that has not changed was not a lost race: the patch itself is invalid.
      if (rejected !== undefined && rejected.rv === rv)
        throw kubeError(rejected.error, doing, this.server, rbac);
      const annotations = pod.metadata?.annotations;
      const current = annotations?.[ANNOTATIONS.buckets];
      const next = edit(current);
      if (next === "" ? current === undefined : next === current) return pod;
      const ops: JsonPatchOp[] = [{ op: "test", path: "/metadata/resourceVersion", value: rv }];
      if (next === "") ops.push({ op: "remove", path: annotationPath(ANNOTATIONS.buckets) });
      else if (annotations === undefined)
        ops.push({ op: "add", path: "/metadata/annotations", value: { [ANNOTATIONS.buckets]: next } });
      else ops.push({ op: "add", path: annotationPath(ANNOTATIONS.buckets), value: next });
      try {
        return await this.patchPod(namespace, name, ops);
      } catch (e) {
        const code = kubeStatusCode(e);
        if (code === 404) throw new AppError("NotFound", `pod ${key} not found`, { cause: e });
        if ((code === 409 || code === 422) && attempt < MAX_WRITE_ATTEMPTS) {
          this.log.debug({ pod: key, attempt }, "buckets annotation changed meanwhile; retrying the edit");
          rejected = code === 422 ? { rv, error: e } : undefined;
          // Jittered, as client-go's RetryOnConflict, so that racing writers spread out.
          await sleep(Math.floor(Math.random() * 10 * attempt));
          continue;
        }
        throw kubeError(e, doing, this.server, rbac);
      }
    }
  }

  /** GET of the pod from the API server (not the cache); undefined on 404. */
  private async readPod(namespace: string, name: string, doing: string): Promise<V1Pod | undefined> {
    try {
      return await this.core.readNamespacedPod({ name, namespace });
    } catch (e) {
      if (kubeStatusCode(e) === 404) return undefined;
      throw kubeError(e, doing, this.server, `get on pods in namespace "${namespace}"`);
    }
  }

  private patchPod(namespace: string, name: string, ops: JsonPatchOp[]): Promise<V1Pod> {
    return this.core.patchNamespacedPod(
      { name, namespace, body: ops },
      setHeaderOptions("Content-Type", PatchStrategy.JsonPatch),
    );
  }
}

/** Cuts `text` to at most `max` UTF-16 units, ending with "…", without splitting a surrogate pair. */
function truncate(text: string, max: number): string {
  if (text.length <= max) return text;
  let end = max - 1;
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${text.slice(0, end)}…`;
}
