/**
 * The informer behind the Kubernetes pod source: `@kubernetes/client-node` 2.x's `ListWatch` on the
 * pods of one node (`/api/v1/pods`, field selector `spec.nodeName=<node>`), with what it lacks:
 *
 * - it restarts with capped exponential backoff, fully jittered, after an error (ListWatch restarts
 *   by itself only after a clean end of the stream, its client-side timeout or a 410; any other
 *   error leaves it down);
 * - a pod recreated under the same name (new uid) while the watch was down becomes a `delete` of the
 *   old instance and an `upsert` of the new one, not an update;
 * - nothing more is delivered, and no stream opened, once it is stopped.
 *
 * A pod that vanished while the watch was down is delivered as `delete` by ListWatch itself: after a
 * 410 (an `ERROR` event or an HTTP answer) it relists and reports what the new list lacks.
 */
import { setTimeout as sleep } from "node:timers/promises";
import {
  ADD,
  CONNECT,
  DELETE,
  ERROR,
  ListWatch,
  UPDATE,
  Watch,
  type CoreV1Api,
  type KubeConfig,
  type V1Pod,
  type V1PodList,
} from "@kubernetes/client-node";
import { backoffDelay, type BackoffPolicy } from "../../shared/backoff.js";
import { AppError } from "../../shared/errors.js";
import { kubeError } from "../../shared/kube-errors.js";
import type { Logger } from "../../shared/logger.js";
import type { PodObject } from "../reconcile/pod.js";
import type { PodEvent } from "./pod-source.js";

const PODS_PATH = "/api/v1/pods";

export interface NodePodInformerOptions {
  readonly kubeConfig: KubeConfig;
  readonly core: CoreV1Api;
  readonly nodeName: string;
  readonly log: Logger;
  /**
   * Delay before a restart after an error: full jitter over a window that doubles from `initialMs`
   * (default 1000) up to `maxMs` (default 30 000) and starts over once a list or an event gets
   * through (see shared/backoff.ts).
   */
  readonly restartBackoff?: { readonly initialMs?: number; readonly maxMs?: number };
  /** Random source in [0, 1) for the jitter. Default `Math.random`. */
  readonly random?: () => number;
}

/**
 * A {@link Watch} that asks for bookmarks (so that a quiet node keeps a fresh resourceVersion and a
 * reconnect rarely needs a relist), never opens a stream once its informer is stopped (ListWatch
 * opens one after a list, or a reconnect delay, that was in progress during `stop()`), and reports a
 * failure to start, such as a credential plugin error, through `done` instead of a rejected promise
 * that nobody awaits.
 */
class PodWatch extends Watch {
  constructor(
    config: KubeConfig,
    private readonly stopped: () => boolean,
  ) {
    super(config);
  }

  override async watch(...args: Parameters<Watch["watch"]>): Promise<AbortController> {
    const [path, query, callback, done] = args;
    const idle = new AbortController();
    idle.abort();
    if (this.stopped()) return idle;
    try {
      return await super.watch(path, { ...query, allowWatchBookmarks: true }, callback, done);
    } catch (e) {
      done(e);
      return idle;
    }
  }
}

export class NodePodInformer {
  private readonly fieldSelector: string;
  private readonly server: string;
  private readonly log: Logger;
  private readonly backoff: BackoffPolicy;
  private readonly random: () => number;

  private informer: ListWatch<V1Pod> | undefined;
  private onEvent: ((e: PodEvent) => void) | undefined;
  /** The last pod delivered per `<namespace>/<name>`, to tell a recreated pod (new uid) from an update. */
  private readonly delivered = new Map<string, V1Pod>();
  private stopped = true;
  private listed = false;
  /** Failed runs since the last success; the next restart waits {@link backoffDelay} of it. */
  private failures = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private synced: { resolve: () => void; reject: (e: Error) => void } | undefined;

  constructor(private readonly opts: NodePodInformerOptions) {
    this.fieldSelector = `spec.nodeName=${opts.nodeName}`;
    this.server = opts.kubeConfig.getCurrentCluster()?.server ?? "(no current cluster)";
    this.log = opts.log;
    this.backoff = {
      baseMs: opts.restartBackoff?.initialMs ?? 1000,
      maxMs: opts.restartBackoff?.maxMs ?? 30_000,
    };
    this.random = opts.random ?? Math.random;
  }

  /**
   * Resolves once the pods now on the node have been delivered as `upsert`; until then errors are
   * logged and the list retried with backoff. Rejects if {@link stop} comes first.
   */
  async start(onEvent: (e: PodEvent) => void): Promise<void> {
    if (!this.stopped) throw new AppError("Internal", "the pod informer is already started");
    this.stopped = false;
    this.listed = false;
    this.failures = 0;
    this.onEvent = onEvent;
    this.delivered.clear();
    // An informer of an earlier start() may still finish a step in flight: its callbacks are ignored.
    const live = () => !this.stopped && this.informer === informer;
    const informer: ListWatch<V1Pod> = new ListWatch<V1Pod>(
      PODS_PATH,
      new PodWatch(this.opts.kubeConfig, () => !live()),
      () => this.list(live),
      false,
      undefined,
      this.fieldSelector,
      { delayFn: (ms) => sleep(ms, undefined, { ref: false }) },
    );
    informer.on(ADD, (pod) => {
      if (live()) this.upserted(pod);
    });
    informer.on(UPDATE, (pod) => {
      if (live()) this.upserted(pod);
    });
    informer.on(DELETE, (pod) => {
      if (live()) this.deleted(pod);
    });
    informer.on(ERROR, (err) => {
      if (live()) this.failed(err);
    });
    informer.on(CONNECT, () => this.log.debug({ node: this.opts.nodeName }, "watching pods"));
    this.informer = informer;
    const synced = new Promise<void>((resolve, reject) => (this.synced = { resolve, reject }));
    void this.run();
    await synced;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    await this.informer?.stop();
    this.informer = undefined;
    this.onEvent = undefined;
    this.synced?.reject(
      new AppError("Unavailable", "the pod source was stopped before it could list the pods of this node"),
    );
    this.synced = undefined;
  }

  /** The cached pod, or undefined. */
  get(namespace: string, name: string): V1Pod | undefined {
    return this.informer?.get(name, namespace);
  }

  /** Number of cached pods. */
  get size(): number {
    return this.informer?.list().length ?? 0;
  }

  /**
   * Lists the node's pods. The first list may be served from the API server's watch cache (RV "0"),
   * as client-go's reflector does; a relist (after a 410) is a consistent read. A list that returns
   * after stop() fails, so that its informer goes no further.
   */
  private async list(live: () => boolean): Promise<V1PodList> {
    const list = await this.opts.core.listPodForAllNamespaces({
      fieldSelector: this.fieldSelector,
      ...(this.listed ? {} : { resourceVersion: "0" }),
    });
    if (!live()) throw new Error("the pod informer was stopped");
    this.listed = true;
    this.failures = 0;
    return list;
  }

  /** One run of the informer: list (when it has no resourceVersion to resume from) and watch. */
  private async run(): Promise<void> {
    const informer = this.informer;
    if (informer === undefined || this.stopped) return;
    try {
      await informer.start();
    } catch (e) {
      this.failed(e);
      return;
    }
    // A failed list has been reported through `failed`; a successful one has been delivered.
    if (this.listed && this.synced !== undefined) {
      this.synced.resolve();
      this.synced = undefined;
    }
  }

  private failed(err: unknown): void {
    if (this.stopped) return;
    this.failures++;
    const delayMs = backoffDelay(this.failures, this.backoff, this.random);
    const error = kubeError(err, "watching the pods of this node", this.server, "list and watch on pods");
    const fields = { code: error.code, err: error.message, retryInMs: delayMs };
    if (error.code === "Forbidden" || error.code === "Unauthenticated")
      this.log.error(fields, "pod watch failed; restarting");
    else this.log.warn(fields, "pod watch failed; restarting");
    if (this.restartTimer !== undefined) return;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      void this.run();
    }, delayMs);
  }

  private upserted(pod: V1Pod): void {
    this.failures = 0;
    const key = keyOf(pod);
    const before = this.delivered.get(key);
    if (before !== undefined && before.metadata?.uid !== pod.metadata?.uid)
      this.emit({ type: "delete", pod: before });
    this.delivered.set(key, pod);
    this.emit({ type: "upsert", pod });
  }

  private deleted(pod: V1Pod): void {
    this.failures = 0;
    const key = keyOf(pod);
    const before = this.delivered.get(key);
    this.delivered.delete(key);
    if (before !== undefined && before.metadata?.uid !== pod.metadata?.uid)
      this.emit({ type: "delete", pod: before });
    this.emit({ type: "delete", pod });
  }

  private emit(e: PodEvent): void {
    if (this.stopped || this.onEvent === undefined) return;
    try {
      this.onEvent(e);
    } catch (err) {
      // ListWatch would swallow it (watch events) or stop on it (list): report it and go on.
      this.log.error({ pod: keyOf(e.pod), err: (err as Error).message }, "pod event handler failed");
    }
  }
}

function keyOf(pod: PodObject): string {
  return `${pod.metadata?.namespace ?? ""}/${pod.metadata?.name ?? ""}`;
}
