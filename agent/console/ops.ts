/**
 * What each console operation does, apart from the transport (`console.ts`). `mount` and `unmount`
 * only edit the pod's `dynamic-volumes/buckets` annotation through the pod source; the reconciler
 * does the work, and its `state` events tell the operation when to reply (docs/design.md).
 */
import type { AppError } from "../../shared/errors.js";
import { ANNOTATIONS } from "../../shared/names.js";
import type { Logger } from "../../shared/logger.js";
import {
  ConsoleError,
  DEFAULT_TIMEOUT_SECONDS,
  mountEntryOf,
  type ConsoleRequest,
  type ListResult,
  type MountRequest,
  type MountResult,
  type MountSummary,
  type PodSummary,
  type ProgressFrame,
  type RequestId,
  type StateEvent,
  type UnmountRequest,
  type UnmountResult,
  type WatchRequest,
} from "../../shared/protocol.js";
import type { PodVerb } from "./auth.js";
import { hasBucketEntry, removeBucketEntry, upsertBucketEntry } from "./bucket-edit.js";
import type { PodView } from "../reconcile/pod.js";
import type { PodSource } from "../sources/pod-source.js";
import type { MountStateEvent, Reconciler } from "../reconcile/reconciler.js";
import type { MountStatus } from "../reconcile/status.js";

/** What the console reads from the reconciler: its `state` events, status and pods. */
export type ConsoleReconciler = Pick<Reconciler, "events" | "statusOf" | "podViews">;

/** One client connection, as the operations see it. */
export interface Session {
  /** The caller's user name, for the audit log. */
  readonly username: string | undefined;
  /** Whether the caller may `verb` pods in `namespace` (no logging: used for filtering). */
  may(verb: PodVerb, namespace: string): Promise<boolean>;
  /** Throws ConsoleError("Forbidden") and logs the denial when the caller may not. */
  require(verb: PodVerb, namespace: string): Promise<void>;
  progress(id: RequestId, progress: ProgressFrame["progress"]): void;
  /** Pushes a watch event; false once the connection is gone or was dropped for back-pressure. */
  event(e: Omit<StateEvent, "event">): boolean;
  /** Runs `fn` when the connection ends; returns a function that cancels that. */
  onEnd(fn: () => void): () => void;
  /** Closes the connection because it cannot keep up (close 1013). */
  drop(reason: string): void;
}

export interface ConsoleOpsOptions {
  readonly reconciler: ConsoleReconciler;
  readonly source: Pick<PodSource, "updateBuckets" | "getPod"> & MissingPodExplainer;
  readonly nodeName: string;
  readonly log: Logger;
  /** How often an in-flight request re-reads status for changes that emit no event, in ms. Default 100. */
  readonly pollMs?: number;
  /** Events queued per watch while waiting for authorization before the connection is dropped. Default 10 000. */
  readonly maxQueuedEvents?: number;
}

/**
 * A source that can say why a pod is not here in its own terms (local mode: no file holds it), so
 * that the console does not send a user to a cluster that does not exist.
 */
export interface MissingPodExplainer {
  missingPod?(namespace: string, name: string): AppError;
}

/** A handler's answer; `afterReply` runs once the reply is sent (a watch starts pushing then). */
export interface OpOutcome {
  readonly result: unknown;
  readonly afterReply?: () => void;
}

/** Thrown from an annotation edit that would change nothing, so that nothing is written. */
class Unchanged extends Error {}

function isUnchanged(e: unknown): boolean {
  return e instanceof Unchanged || (e as { cause?: unknown })?.cause instanceof Unchanged;
}

function splitKey(key: string): [string, string] {
  const i = key.indexOf("/");
  return [key.slice(0, i), key.slice(i + 1)];
}

function summaryOf(name: string, s: MountStatus, mountPath: string): MountSummary {
  return {
    name,
    state: s.state,
    bucket: s.bucket,
    prefix: s.prefix,
    readOnly: s.readOnly,
    path: `${mountPath}/${name}`,
    since: s.since,
    ...(s.error !== undefined ? { error: s.error } : {}),
  };
}

/**
 * A failed mount's reply: the error (cause and fix first, from the engine) once, then how to take
 * the entry away, since it stays in the annotation and is retried until it is removed.
 */
export function withRemedy(r: MountResult): MountResult {
  if (r.mount.state !== "failed") return r;
  const remove = `dvctl umount ${r.namespace}/${r.pod} ${r.mount.name}`;
  const error = r.mount.error ?? "the mount failed";
  if (error.includes(remove)) return r;
  return {
    ...r,
    mount: {
      ...r.mount,
      error: `${error}\nThe entry stays in the pod's buckets annotation and is retried with backoff; remove it with: ${remove}`,
    },
  };
}

function progressOf(e: MountStateEvent): ProgressFrame["progress"] {
  const { pod: _pod, ...rest } = e;
  return rest;
}

export class ConsoleOps {
  private readonly pollMs: number;

  // One listener on the reconciler, fanned out here, however many requests and watches are open.
  private readonly subscribers = new Set<(e: MountStateEvent) => void>();
  private readonly onState = (e: MountStateEvent): void => {
    for (const fn of [...this.subscribers]) fn(e);
  };

  constructor(private readonly opts: ConsoleOpsOptions) {
    this.pollMs = opts.pollMs ?? 100;
    opts.reconciler.events.on("state", this.onState);
  }

  /** Stops following the reconciler. */
  close(): void {
    this.opts.reconciler.events.off("state", this.onState);
    this.subscribers.clear();
  }

  handle(s: Session, req: Exclude<ConsoleRequest, { op: "auth" }>): Promise<OpOutcome> {
    switch (req.op) {
      case "list":
        return this.list(s, req.namespace).then((result) => ({ result }));
      case "status":
        return this.status(s, req.namespace, req.pod).then((result) => ({ result }));
      case "mount":
        return this.mount(s, req).then((result) => ({ result }));
      case "unmount":
        return this.unmount(s, req).then((result) => ({ result }));
      case "watch":
        return this.watch(s, req);
    }
  }

  summarize(view: PodView): PodSummary {
    const status = this.opts.reconciler.statusOf(view.key) ?? {};
    const mounts: MountSummary[] = Object.entries(status).map(([n, st]) => summaryOf(n, st, view.mountPath));
    for (const e of view.buckets.entries)
      if (status[e.name] === undefined)
        mounts.push({ ...e, state: "pending", path: `${view.mountPath}/${e.name}` });
    const problem = view.refusal ?? view.problem;
    return {
      namespace: view.namespace,
      pod: view.name,
      node: this.opts.nodeName,
      mountPath: view.mountPath,
      ...(problem !== undefined ? { problem } : {}),
      mounts,
    };
  }

  /** This node's pods in the namespaces the caller may read, optionally narrowed. */
  private async readable(s: Session, namespace?: string, pod?: string): Promise<PodView[]> {
    const views = this.opts.reconciler
      .podViews()
      .filter(
        (v) =>
          (namespace === undefined || v.namespace === namespace) && (pod === undefined || v.name === pod),
      );
    const namespaces = [...new Set(views.map((v) => v.namespace))];
    const allowed = new Set<string>();
    await Promise.all(
      namespaces.map(async (ns) => {
        if (await s.may("get", ns)) allowed.add(ns);
      }),
    );
    return views.filter((v) => allowed.has(v.namespace)).sort((a, b) => a.key.localeCompare(b.key));
  }

  private async list(s: Session, namespace: string | undefined): Promise<ListResult> {
    if (namespace !== undefined) await s.require("get", namespace);
    const pods = (await this.readable(s, namespace)).map((v) => this.summarize(v));
    return { node: this.opts.nodeName, pods };
  }

  /** The pod's view; NotFound when it is here but not injected, WrongNode when it is not here. */
  private viewOf(namespace: string, pod: string): PodView {
    const key = `${namespace}/${pod}`;
    const view = this.opts.reconciler.podViews().find((v) => v.key === key);
    if (view !== undefined) return view;
    const source = this.opts.source;
    if (source.getPod(namespace, pod) !== undefined)
      throw new ConsoleError(
        "NotFound",
        `pod ${key} has no dynamic-volumes volume: the webhook did not inject it. Label the namespace dynamic-volumes/injection=enabled and recreate the pod`,
      );
    if (typeof source.missingPod === "function") throw source.missingPod(namespace, pod);
    throw new ConsoleError(
      "WrongNode",
      `pod ${key} is not on node ${this.opts.nodeName} (it may run on another node, or not exist); use the agent on the pod's node (kubectl get pod -n ${namespace} ${pod} -o wide shows it)`,
    );
  }

  private async status(s: Session, namespace: string, pod: string): Promise<PodSummary> {
    await s.require("get", namespace);
    return this.summarize(this.viewOf(namespace, pod));
  }

  private async mount(s: Session, req: MountRequest): Promise<MountResult> {
    await s.require("patch", req.namespace);
    const view = this.viewOf(req.namespace, req.pod);
    const blocker =
      view.refusal ??
      view.problem ??
      (view.finished ? "the pod has finished, so nothing is mounted for it any more" : undefined);
    if (blocker !== undefined) throw new ConsoleError("Conflict", `pod ${view.key}: ${blocker}`);
    const entry = mountEntryOf(req);
    const same = (e: { bucket?: string; prefix?: string; readOnly?: boolean }): boolean =>
      e.bucket === entry.bucket && e.prefix === entry.prefix && e.readOnly === entry.readOnly;
    const done = (st: MountStatus | undefined): MountResult | undefined =>
      st !== undefined && same(st) && (st.state === "mounted" || st.state === "failed")
        ? { namespace: view.namespace, pod: view.name, mount: summaryOf(entry.name, st, view.mountPath) }
        : undefined;
    const current = (): MountStatus | undefined => this.opts.reconciler.statusOf(view.key)?.[entry.name];

    const wait = this.follow<MountResult>(s, req, view.key, entry.name, `mount ${entry.name}`, {
      onEvent: (e, resolve) => {
        // A "removed" may be the old spec going away (or a mount without a record): not an answer.
        if (same(e) && (e.state === "mounted" || e.state === "failed")) {
          // The reply carries the final state and its error: no progress frame repeats them.
          const st = current();
          resolve(
            withRemedy(
              done(st) ?? {
                namespace: view.namespace,
                pod: view.name,
                mount: {
                  ...entry,
                  state: e.state,
                  path: `${view.mountPath}/${entry.name}`,
                  ...(e.error !== undefined ? { error: e.error } : {}),
                },
              },
            ),
          );
          return;
        }
        s.progress(req.id, progressOf(e));
      },
      onPoll: (_resolve, reject) => {
        if (!this.opts.reconciler.podViews().some((v) => v.key === view.key))
          reject(
            new ConsoleError("NotFound", `pod ${view.key} was deleted while ${entry.name} was mounting`),
          );
      },
    });
    try {
      await this.opts.source.updateBuckets(req.namespace, req.pod, (value) => {
        const r = upsertBucketEntry(value, entry, { replace: req.replace === true, pod: view.key });
        if (r.unchanged) throw new Unchanged();
        return r.value;
      });
      this.opts.log.info(
        { user: s.username, pod: view.key, name: entry.name, bucket: entry.bucket, readOnly: entry.readOnly },
        "console: mount requested",
      );
    } catch (e) {
      if (!isUnchanged(e)) {
        wait.cancel();
        throw e;
      }
      // Already in the annotation: the answer is the current state, unless it is still moving.
      const settled = done(current());
      if (settled !== undefined) {
        wait.cancel();
        return withRemedy(settled);
      }
    }
    return wait.promise;
  }

  private async unmount(s: Session, req: UnmountRequest): Promise<UnmountResult> {
    await s.require("patch", req.namespace);
    const view = this.viewOf(req.namespace, req.pod);
    const key = view.key;
    const inStatus = (): boolean => this.opts.reconciler.statusOf(key)?.[req.name] !== undefined;
    const inAnnotation = hasBucketEntry(
      this.opts.source.getPod(req.namespace, req.pod)?.metadata?.annotations?.[ANNOTATIONS.buckets],
      req.name,
    );
    if (!inAnnotation && !inStatus())
      throw new ConsoleError("NotFound", `pod ${key} has no mount named "${req.name}"`);
    const result: UnmountResult = {
      namespace: view.namespace,
      pod: view.name,
      name: req.name,
      state: "removed",
    };
    const wait = this.follow<UnmountResult>(s, req, key, req.name, `unmount ${req.name}`, {
      onEvent: (e, resolve) => {
        s.progress(req.id, progressOf(e));
        if (e.state === "removed") resolve(result);
      },
      // A mount that never came up (failed, pending) leaves status without an event.
      onPoll: (resolve) => {
        if (!inStatus() && !hasBucketEntry(this.annotationOf(req.namespace, req.pod), req.name))
          resolve(result);
      },
    });
    try {
      await this.opts.source.updateBuckets(req.namespace, req.pod, (value) => {
        const r = removeBucketEntry(value, req.name);
        if (!r.found) throw new Unchanged();
        return r.value;
      });
      this.opts.log.info({ user: s.username, pod: key, name: req.name }, "console: unmount requested");
    } catch (e) {
      // Unchanged: someone removed it already; wait for the reconciler all the same.
      if (!isUnchanged(e)) {
        wait.cancel();
        throw e;
      }
    }
    return wait.promise;
  }

  private annotationOf(namespace: string, pod: string): string | undefined {
    return this.opts.source.getPod(namespace, pod)?.metadata?.annotations?.[ANNOTATIONS.buckets];
  }

  private async watch(s: Session, req: WatchRequest): Promise<OpOutcome> {
    if (req.namespace !== undefined) await s.require("get", req.namespace);
    const pods = (await this.readable(s, req.namespace, req.pod)).map((v) => this.summarize(v));
    const maxQueued = this.opts.maxQueuedEvents ?? 10_000;
    const buffered: MountStateEvent[] = [];
    let started = false;
    let queued = 0;
    let chain = Promise.resolve();
    const deliver = (e: MountStateEvent): void => {
      const [namespace, pod] = splitKey(e.pod);
      const { pod: _p, ...rest } = e;
      s.event({ watch: req.id, namespace, pod, ...rest });
    };
    const listener = (e: MountStateEvent): void => {
      const [namespace, pod] = splitKey(e.pod);
      if (req.namespace !== undefined && namespace !== req.namespace) return;
      if (req.pod !== undefined && pod !== req.pod) return;
      if (!started) {
        buffered.push(e);
        return;
      }
      if (req.namespace !== undefined) {
        deliver(e);
        return;
      }
      // Every namespace: each event waits for its namespace's (cached) authorization, in order.
      if (++queued > maxQueued) {
        s.drop("too many watch events are waiting; reconnect and watch again");
        return;
      }
      chain = chain
        .then(async () => {
          if (await s.may("get", namespace)) deliver(e);
        })
        .catch(() => undefined)
        .finally(() => queued--);
    };
    this.subscribers.add(listener);
    s.onEnd(() => this.subscribers.delete(listener));
    return {
      result: { node: this.opts.nodeName, pods } satisfies ListResult,
      afterReply: () => {
        started = true;
        for (const e of buffered.splice(0)) listener(e);
      },
    };
  }

  /**
   * Follows the reconciler's events for one mount of one pod until `onEvent` or `onPoll` settles,
   * the request times out (the annotation edit stays), or the connection ends.
   */
  private follow<T>(
    s: Session,
    req: { id: RequestId; timeoutSeconds?: number },
    key: string,
    name: string,
    what: string,
    hooks: {
      onEvent: (e: MountStateEvent, resolve: (v: T) => void, reject: (e: Error) => void) => void;
      onPoll: (resolve: (v: T) => void, reject: (e: Error) => void) => void;
    },
  ): { promise: Promise<T>; cancel: () => void } {
    const seconds = req.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS;
    let cleanup = (): void => undefined;
    const promise = new Promise<T>((resolve, reject) => {
      let settled = false;
      const settle = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        cleanup();
        fn();
      };
      const ok = (v: T): void => settle(() => resolve(v));
      const fail = (e: Error): void => settle(() => reject(e));
      const listener = (e: MountStateEvent): void => {
        if (e.pod === key && e.name === name) hooks.onEvent(e, ok, fail);
      };
      const timer = setTimeout(
        () =>
          fail(
            new ConsoleError(
              "Timeout",
              `${what} did not finish within ${seconds} s; the annotation keeps the change and the agent keeps working on it (see status)`,
            ),
          ),
        seconds * 1000,
      );
      const poll = setInterval(() => hooks.onPoll(ok, fail), this.pollMs);
      const offEnd = s.onEnd(() => fail(new ConsoleError("Unavailable", "the connection ended")));
      cleanup = () => {
        clearTimeout(timer);
        clearInterval(poll);
        offEnd();
        this.subscribers.delete(listener);
      };
      this.subscribers.add(listener);
    });
    // Settled by a timeout while the edit is still running, the promise must not count as unhandled.
    promise.catch(() => undefined);
    return { promise, cancel: () => cleanup() };
  }
}
