/**
 * The reconcile loop: pod events in, mounts and status out. Each pod is reconciled by one worker at
 * a time (serialized per pod), with at most `concurrency` pods at once; a change that arrives while
 * a pod is being worked on queues one more pass, so the latest desired state always wins. Failed
 * mounts are retried with capped exponential backoff and full jitter (shared/backoff.ts).
 *
 * The Reconciler holds the per-pod logic (plan, mount, unmount, teardown) and composes the parts
 * that have their own files: the keyed work queue, the status writer and the garbage collector.
 */
import { EventEmitter } from "node:events";
import { join } from "node:path";
import { backoffDelay } from "../../shared/backoff.js";
import { describeBucketError } from "../../shared/buckets.js";
import { AppError, isAppError, publicMessage } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { MountChange } from "../../shared/protocol-messages.js";
import type { MountState } from "../../shared/names.js";
import { credentialsFromSecret } from "./credentials.js";
import { withoutTimestamps } from "../mount/mounters/index.js";
import { planPod, specKey, specOf, type ActualMount, type MountSpec } from "./plan.js";
import { readPod, type PodReadConfig, type PodView } from "./pod.js";
import type { PodEvent, PodRef, PodSource } from "../sources/pod-source.js";
import { MountRecords } from "../mount/records.js";
import type { ReconcilerMetrics } from "./metrics.js";
import { writeBackEvent, type WriteBackNext, type WriteBackReport } from "../mount/write-back.js";
import { removeMountStatus, setMountStatus, type PodStatus } from "./status.js";
import type { MountEngine } from "./engine.js";
import { GarbageCollector, nodeGarbageFs, type GarbageFs } from "./garbage-collector.js";
import { StatusWriter } from "./status-writer.js";
import { realTimers, WorkQueue, type TimerHandle, type Timers } from "./work-queue.js";

export type { MountEngine } from "./engine.js";

export interface ReconcilerConfig extends PodReadConfig {
  readonly concurrency: number;
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  /** How often every mount is probed for staleness and orphans are collected. */
  readonly resyncMs: number;
  /** An unclaimed pod directory is removed only once it is this old. */
  readonly gcGraceMs: number;
}

/**
 * A reconcile pass and garbage collection accept a copy of the mount table this old (the engine
 * rereads it after its own mounts and unmounts): a resync looks at every pod in a row, and one
 * copy per second serves them all.
 */
const TABLE_MAX_AGE_MS = 1000;

export const DEFAULT_RECONCILER_CONFIG = {
  concurrency: 4,
  backoffBaseMs: 1000,
  backoffMaxMs: 60_000,
  gcGraceMs: 10 * 60_000,
  resyncMs: 10_000,
} as const;

/** Emitted on every change of a mount's state, for the console's `watch`. */
export interface MountStateEvent extends MountChange {
  /** `<namespace>/<name>`. */
  readonly pod: string;
}

/** What the reconciler takes from its surroundings besides the pod source and the engine. */
export interface ReconcilerDeps {
  /**
   * The random source of the retries' jitter, in [0, 1). Default `Math.random`; tests pass a
   * constant to get exact delays.
   */
  readonly random?: () => number;
  /** Retry and resync timers. Default: Node's, unref'd. */
  readonly timers?: Timers;
  /** The file system operations on pod directories (removal of empty ones). Default: node:fs. */
  readonly fs?: GarbageFs;
  /** The mounts' private records. Default: `MountRecords` under the configured root. */
  readonly records?: ReconcilerRecords;
}

/** The record operations the reconciler uses (see MountRecords, which keeps them for the mounter). */
export interface ReconcilerRecords extends Pick<MountRecords, "remove" | "removePod" | "ids" | "stateDir"> {
  read(id: string, name: string): Promise<MountSpec | undefined>;
  write(id: string, name: string, spec: MountSpec): Promise<void>;
}

/** `MountRecords` holding the reconciler's specs. */
export function specRecords(records: MountRecords): ReconcilerRecords {
  return {
    read: async (id, name) => (await records.read(id, name)) as MountSpec | undefined,
    write: (id, name, spec) => records.write(id, name, { ...spec }),
    remove: (id, name) => records.remove(id, name),
    removePod: (id) => records.removePod(id),
    ids: () => records.ids(),
    stateDir: (id, name) => records.stateDir(id, name),
  };
}

/** Mounts of one pod made at the same time. */
const MOUNTS_PER_POD = 4;

interface Failure {
  readonly spec: string;
  readonly attempts: number;
  readonly retryAt: number;
  /** The message without the clients' timestamps, to tell a new failure from a repeated one. */
  readonly sameness: string;
}

interface PodState {
  status: PodStatus;
  lastRefusal: string | undefined;
}

export class Reconciler {
  readonly events = new EventEmitter<{ state: [MountStateEvent]; idle: [] }>();
  private readonly pods = new Map<string, PodView>();
  private readonly gone = new Map<string, PodView>();
  private readonly state = new Map<string, PodState>();
  private readonly failures = new Map<string, Failure>();
  private readonly queue: WorkQueue;
  private readonly statusWriter: StatusWriter;
  private readonly garbage: GarbageCollector;
  private readonly records: ReconcilerRecords;
  private readonly fs: GarbageFs;
  private readonly timers: Timers;
  private resyncTimer: TimerHandle | undefined;
  private stopped = false;
  private readonly log: Logger;
  private readonly random: () => number;

  constructor(
    private readonly source: PodSource,
    private readonly engine: MountEngine,
    private readonly cfg: ReconcilerConfig,
    log: Logger,
    private readonly now: () => Date = () => new Date(),
    private readonly metrics?: ReconcilerMetrics,
    deps: ReconcilerDeps = {},
  ) {
    this.log = log.child({ component: "reconciler" });
    this.random = deps.random ?? Math.random;
    this.records = deps.records ?? specRecords(new MountRecords(cfg.root));
    this.fs = deps.fs ?? nodeGarbageFs;
    this.timers = deps.timers ?? realTimers;
    this.queue = new WorkQueue((key) => this.work(key), {
      concurrency: cfg.concurrency,
      timers: this.timers,
      onDepth: (depth) => this.metrics?.queueDepth.set({}, depth),
      onIdle: () => this.events.emit("idle"),
    });
    this.statusWriter = new StatusWriter(source, this.log);
    this.garbage = new GarbageCollector({
      root: cfg.root,
      gcGraceMs: cfg.gcGraceMs,
      engine,
      records: this.records,
      log: this.log,
      fs: this.fs,
      now: () => this.now().getTime(),
      tableMaxAgeMs: TABLE_MAX_AGE_MS,
    });
  }

  /** Starts watching; after the initial list, collects orphans and reconciles every pod. */
  async start(): Promise<void> {
    await this.source.start((e) => this.onEvent(e));
    // Without a mounter nothing can be collected; the pass after it is back does it.
    await this.collectGarbage().catch((e: unknown) =>
      this.log.warn({ err: (e as Error).message }, "garbage collection postponed"),
    );
    for (const key of this.pods.keys()) this.enqueue(key);
    this.scheduleResync();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.resyncTimer?.cancel();
    this.queue.stop();
    await this.source.stop();
    await this.idle();
  }

  /** Resolves when no pod is queued or being reconciled. */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  /** The status of one pod, as written to its annotation. */
  statusOf(key: string): PodStatus | undefined {
    return this.state.get(key)?.status;
  }

  /** Pods this agent serves now. */
  podViews(): PodView[] {
    return [...this.pods.values()];
  }

  /** Something changed at a mount point (its client died): reconcile the pod that owns it now. */
  mountPointChanged(mountPoint: string): void {
    for (const p of this.pods.values())
      if (p.dir !== undefined && mountPoint.startsWith(`${p.dir}/`) && p.refusal === undefined)
        this.enqueue(p.key);
  }

  private onEvent(e: PodEvent): void {
    const view = readPod(e.pod, this.cfg);
    const key = `${e.pod.metadata?.namespace ?? ""}/${e.pod.metadata?.name ?? ""}`;
    if (e.type === "delete") {
      const last = this.pods.get(key) ?? view;
      this.pods.delete(key);
      if (last !== undefined) {
        this.gone.set(key, last);
        this.enqueue(key);
      }
      return;
    }
    if (view === undefined) return;
    const before = this.pods.get(key);
    if (before !== undefined && before.uid !== view.uid) this.gone.set(`${key}#${before.uid}`, before);
    this.pods.set(key, view);
    this.enqueue(key);
    if (before !== undefined && before.uid !== view.uid) this.enqueue(`${key}#${before.uid}`);
  }

  /** Every mount is probed (each pod reconciled) and orphans collected every `resyncMs`. */
  private scheduleResync(): void {
    if (this.stopped) return;
    this.resyncTimer = this.timers.setTimeout(() => {
      this.resync();
      this.scheduleResync();
    }, this.cfg.resyncMs);
  }

  /** Looks at every pod and collects orphans now (the mounter came back, say). */
  resyncNow(): void {
    this.resync();
  }

  private resync(): void {
    if (this.stopped) return;
    for (const key of this.pods.keys()) this.enqueue(key);
    void this.collectGarbage().catch((e: unknown) =>
      this.log.error({ err: (e as Error).message }, "garbage collection failed"),
    );
  }

  /** Queues a pass over pod `key` (`<namespace>/<name>`, or a gone pod's `…#<uid>`). */
  enqueue(key: string): void {
    if (this.stopped) return;
    this.queue.enqueue(key);
  }

  /** One pass of the work queue: reconcile, count, and log a failure (the queue goes on). */
  private async work(key: string): Promise<void> {
    try {
      await this.reconcile(key);
      this.metrics?.reconciles.inc({ result: "ok" });
    } catch (e) {
      this.metrics?.reconciles.inc({ result: "error" });
      this.log.error({ pod: key, err: (e as Error).message }, "reconcile failed");
    } finally {
      this.updateMountGauge();
    }
  }

  /** The live pod that owns directory `id`: the oldest verified claim (ties broken by uid). */
  private ownerOf(id: string): PodView | undefined {
    let owner: PodView | undefined;
    for (const p of this.pods.values()) {
      if (p.id !== id || p.refusal !== undefined) continue;
      if (
        owner === undefined ||
        p.createdAt < owner.createdAt ||
        (p.createdAt === owner.createdAt && p.uid < owner.uid)
      )
        owner = p;
    }
    return owner;
  }

  private async reconcile(key: string): Promise<void> {
    const view = this.pods.get(key);
    const gone = this.gone.get(key);
    if (gone !== undefined && (view === undefined || gone.uid !== view.uid)) {
      this.gone.delete(key);
      await this.teardown(gone);
      if (view === undefined) {
        this.state.delete(key);
        this.statusWriter.forget(key);
        return;
      }
    }
    if (view === undefined) return;
    const ref: PodRef = { namespace: view.namespace, name: view.name, uid: view.uid };
    const st = this.state.get(key) ?? { status: {}, lastRefusal: undefined };
    this.state.set(key, st);

    const refusal = view.refusal ?? this.claimConflict(view);
    if (refusal !== undefined) {
      await this.refuse(view, ref, st, refusal);
      return;
    }
    st.lastRefusal = undefined;
    if (view.finished) {
      await this.teardown(view);
      return;
    }
    const dir = view.dir!;
    const id = view.id!;

    // Desired: valid entries, unless the pod-level settings they depend on are broken.
    const podProblem = view.problem;
    const desired: MountSpec[] = [];
    let status: PodStatus = {};
    const at = this.now();
    for (const entry of view.buckets.entries) {
      if (podProblem !== undefined) {
        status = setMountStatus(
          status,
          entry.name,
          { ...summary(entry), state: "failed", error: podProblem },
          at,
        );
        continue;
      }
      desired.push(specOf(entry, view));
    }
    for (const err of view.buckets.errors) {
      const name = err.name ?? `#${err.index + 1}`;
      status = setMountStatus(
        status,
        name,
        { state: "failed", bucket: "", prefix: "", readOnly: false, error: `${describeBucketError(err)}` },
        at,
      );
    }
    // Carry over the current state of the mounts we keep.
    for (const spec of desired) {
      const prev = st.status[spec.name];
      if (prev !== undefined) status[spec.name] = prev;
    }
    const previous = st.status;
    st.status = status;

    let actual: ActualMount[];
    try {
      actual = await this.actualMounts(id, dir);
    } catch (e) {
      if (!isAppError(e) || e.code !== "Unavailable") throw e;
      await this.mounterDown(view, ref, st, desired, dir, e);
      return;
    }
    const actions = planPod(desired, actual);
    // Unmounts one by one, deepest first; then the mounts, several at once, since each waits
    // mostly on its FUSE client becoming ready.
    for (const action of actions) {
      if (this.stopped || action.kind !== "unmount") continue;
      const recorded = actual.find((a) => a.name === action.name)?.recorded;
      // A mount on its way out reads "unmounting" until it is really gone, so that nobody (the
      // console's unmount, a watcher) takes it for removed too early.
      const shown = recorded ?? previous[action.name];
      if (shown !== undefined) {
        this.setState(view, st, action.name, { ...summary(shown), state: "unmounting" });
        await this.flushStatus(ref, st);
      }
      const leaving = !desired.some((d) => d.name === action.name);
      await this.unmountOne(
        view,
        ref,
        id,
        dir,
        action.name,
        action.reason,
        recorded,
        leaving ? st : undefined,
      );
      await this.flushStatus(ref, st);
    }
    const mounts = actions.filter((a) => a.kind === "mount");
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < mounts.length && !this.stopped) {
        const action = mounts[next++]!;
        await this.mountOne(view, ref, st, id, dir, action.spec);
        await this.flushStatus(ref, st);
      }
    };
    await Promise.all(Array.from({ length: Math.min(MOUNTS_PER_POD, mounts.length) }, worker));
    // Mounts that are kept: make sure they read as mounted (after an adoption, for instance).
    for (const spec of desired) {
      if (!actions.some((a) => a.name === spec.name) && st.status[spec.name]?.state !== "mounted") {
        this.setState(view, st, spec.name, { ...summary(spec), state: "mounted" });
        this.failures.delete(`${key}/${spec.name}`);
      }
    }
    await this.garbage.removeStrayDirs(dir, new Set(desired.map((d) => d.name)));
    await this.flushStatus(ref, st);
  }

  /**
   * The mounter cannot be reached: nothing can change. A mount that still works stays `mounted`;
   * every other entry reads `failed` with the reason until the mounter is back, when the link's
   * reconnect makes every pod pass again.
   */
  private async mounterDown(
    view: PodView,
    ref: PodRef,
    st: PodState,
    desired: readonly MountSpec[],
    dir: string,
    e: AppError,
  ): Promise<void> {
    for (const spec of desired) {
      const working =
        st.status[spec.name]?.state === "mounted" && (await this.engine.probe(join(dir, spec.name))) === "ok";
      if (!working)
        this.setState(view, st, spec.name, { ...summary(spec), state: "failed", error: e.message });
    }
    this.log.warn({ pod: view.key, err: e.message }, "mounter unreachable; the pod waits for it");
    await this.flushStatus(ref, st);
  }

  /** A second live pod claiming a directory that an older pod owns is refused. */
  private claimConflict(view: PodView): string | undefined {
    const owner = this.ownerOf(view.id!);
    if (owner === undefined || owner.key === view.key) return undefined;
    return `the pod's directory is already claimed by pod ${owner.key}; nothing is mounted. Recreate the pod so that the webhook gives it its own directory`;
  }

  private async refuse(view: PodView, ref: PodRef, st: PodState, reason: string): Promise<void> {
    const at = this.now();
    let status: PodStatus = {};
    for (const e of view.buckets.entries)
      status = setMountStatus(status, e.name, { ...summary(e), state: "failed", error: reason }, at);
    if (view.buckets.entries.length === 0)
      status = setMountStatus(
        status,
        "#pod",
        { state: "failed", bucket: "", prefix: "", readOnly: false, error: reason },
        at,
      );
    st.status = status;
    if (st.lastRefusal !== reason) {
      st.lastRefusal = reason;
      this.log.warn({ pod: view.key, reason }, "refused");
      await this.event(ref, "Warning", "MountFailed", reason);
    }
    await this.flushStatus(ref, st);
  }

  private async actualMounts(id: string, dir: string): Promise<ActualMount[]> {
    const infos = (await this.engine.mountinfo(TABLE_MAX_AGE_MS, dir)).filter((m) =>
      m.mountPoint.startsWith(`${dir}/`),
    );
    // Deepest first, so nested mounts go before their parents.
    infos.sort((a, b) => b.mountPoint.length - a.mountPoint.length);
    const out: ActualMount[] = [];
    for (const m of infos) {
      const name = m.mountPoint.slice(dir.length + 1);
      const recorded = name.includes("/") ? undefined : await this.records.read(id, name);
      const health = (await this.engine.probe(m.mountPoint)) === "stale" ? "stale" : "ok";
      out.push({ name, recorded, health });
    }
    return out;
  }

  private async mountOne(
    view: PodView,
    ref: PodRef,
    st: PodState,
    id: string,
    dir: string,
    spec: MountSpec,
  ): Promise<void> {
    const fkey = `${view.key}/${spec.name}`;
    const failure = this.failures.get(fkey);
    const skey = specKey(spec);
    const now = this.now().getTime();
    if (failure !== undefined && failure.spec === skey && failure.retryAt > now) {
      this.scheduleRetry(view.key, failure.retryAt - now);
      return;
    }
    this.setState(view, st, spec.name, { ...summary(spec), state: "mounting" });
    // The `mounting` status and the mount's record are written once the client runs, not before:
    // a status patch is an API round trip, and the bucket should not wait for either. Nothing reads
    // the record before the next reconcile of this pod, which waits for this one (a mount found
    // without a record is unmounted and made again). Writes for a pod stay in order (see
    // flushStatus).
    let announced: Promise<void> | undefined;
    let recording: Promise<void> | undefined;
    const onStarted = (): void => {
      announced = this.flushStatus(ref, st);
      recording = this.records.write(id, spec.name, spec);
      // Awaited below; this only keeps a failure from counting as unhandled meanwhile.
      recording.catch(() => undefined);
    };
    const mountPoint = join(dir, spec.name);
    const started = Date.now();
    try {
      const secretRef = `${view.namespace}/${spec.secretName}`;
      const creds = credentialsFromSecret(
        await this.source.getSecret(view.namespace, spec.secretName),
        secretRef,
      );
      // Both the mount and the record settle before a failure is handled, so that the clean-up
      // below runs after them. The engine makes the mount point.
      const [mounted] = await Promise.allSettled([
        this.engine.mount(
          {
            bucket: spec.bucket,
            prefix: spec.prefix,
            readOnly: spec.readOnly,
            mountPoint,
            endpoint: creds.endpoint,
            region: creds.region,
            credentials: { accessKeyID: creds.accessKeyID, secretAccessKey: creds.secretAccessKey },
            options: spec.options,
            stateDir: this.records.stateDir(id, spec.name),
            listBeforePlacing: this.failures.has(fkey),
          },
          spec.mounter,
          onStarted,
        ),
      ]);
      // An engine that did not report the start gets the writes now.
      if (mounted.status === "fulfilled" && recording === undefined) onStarted();
      const [recorded] = await Promise.allSettled([recording]);
      if (mounted.status === "rejected") throw mounted.reason;
      if (recorded.status === "rejected") {
        // Failed must mean not mounted.
        await this.engine.unmount(mountPoint).catch(() => undefined);
        throw recorded.reason;
      }
      this.failures.delete(fkey);
      const ms = Date.now() - started;
      this.metrics?.mountDuration.observe({ mounter: spec.mounter, result: "mounted" }, ms / 1000);
      this.setState(view, st, spec.name, { ...summary(spec), state: "mounted" });
      this.log.info(
        { pod: view.key, name: spec.name, bucket: spec.bucket, mounter: spec.mounter, ms },
        "mounted",
      );
      await this.event(
        ref,
        "Normal",
        "Mounted",
        `mounted ${describe(spec)} at ${view.mountPath}/${spec.name} in ${ms} ms`,
      );
    } catch (e) {
      await this.records.remove(id, spec.name).catch(() => undefined);
      await this.fs.rmdir(mountPoint).catch(() => undefined);
      // Status and Events are read by the pod's users: only an AppError's message is written for
      // them. Anything else (a file system error naming the agent's private paths, say) is
      // "internal error" there, and its details go to the agent's log only.
      const message = isAppError(e) ? e.message : `${publicMessage(e)}; the agent's log has the details`;
      const detail = e instanceof Error ? e.message : String(e);
      this.metrics?.mountDuration.observe(
        { mounter: spec.mounter, result: "failed" },
        (Date.now() - started) / 1000,
      );
      this.metrics?.failures.inc({ reason: isAppError(e) ? e.code : "Internal" });
      const attempts = (failure?.spec === skey ? failure.attempts : 0) + 1;
      // Full jitter: the agents of many nodes that failed together (an S3 outage) retry apart.
      const delay = backoffDelay(
        attempts,
        { baseMs: this.cfg.backoffBaseMs, maxMs: this.cfg.backoffMaxMs },
        this.random,
      );
      const sameness = withoutTimestamps(message);
      this.failures.set(fkey, { spec: skey, attempts, retryAt: this.now().getTime() + delay, sameness });
      this.scheduleRetry(view.key, delay);
      this.setState(view, st, spec.name, { ...summary(spec), state: "failed", error: message });
      this.log.warn(
        { pod: view.key, name: spec.name, attempts, retryInMs: delay, err: detail },
        "mount failed",
      );
      // One Event per distinct failure, not one per retry: a mount retried every minute for a day
      // would otherwise bury the pod's other Events.
      if (failure?.spec !== skey || failure.sameness !== sameness)
        await this.event(ref, "Warning", "MountFailed", `${spec.name}: ${message}`);
    }
    await announced;
  }

  private async unmountOne(
    view: PodView,
    ref: PodRef | undefined,
    id: string,
    dir: string,
    name: string,
    reason: string,
    recorded: MountSpec | undefined,
    /** The pod's state when the mount leaves for good: its status entry goes before "removed" is announced. */
    leaving?: PodState,
    /** The pod finished or is gone: nothing mounts this entry again. */
    podDone = false,
  ): Promise<void> {
    const mountPoint = join(dir, name);
    const started = Date.now();
    if (reason === "stale") this.metrics?.staleRecoveries.inc();
    // Our own mounts have a state directory, which the engine removes, keeping a cache that may
    // hold writes not yet in S3.
    const stateDir = name.includes("/") ? undefined : this.records.stateDir(id, name);
    let report: WriteBackReport | undefined;
    try {
      report = writeBackOf(await this.engine.unmount(mountPoint, stateDir !== undefined ? { stateDir } : {}));
      this.metrics?.unmountDuration.observe({ reason }, (Date.now() - started) / 1000);
    } catch (e) {
      this.log.error({ pod: view.key, name, err: (e as Error).message }, "unmount failed");
      throw e;
    }
    if (stateDir !== undefined) {
      const kept = await this.records.remove(id, name);
      // An engine that did not look (or a cache that turned dirty since) is still reported.
      report ??=
        kept === undefined
          ? undefined
          : { outcome: "kept", mounter: recorded?.mounter, client: "unknown", graceMs: 0, ...kept };
    }
    await this.fs.rmdir(mountPoint).catch(() => undefined);
    this.log.info({ pod: view.key, name, reason }, "unmounted");
    if (leaving !== undefined) leaving.status = removeMountStatus(leaving.status, name);
    if (leaving !== undefined || reason === "removed") this.emitState(view.key, name, { state: "removed" });
    if (ref !== undefined && reason !== "unknown")
      await this.event(
        ref,
        "Normal",
        "Unmounted",
        `unmounted ${recorded ? describe(recorded) : name} (${reason})`,
      );
    if (report !== undefined) {
      const next: WriteBackNext = podDone
        ? "pod-done"
        : reason === "stale"
          ? "remount"
          : reason === "changed"
            ? "changed"
            : "removed";
      const e = writeBackEvent(name, report, next, recorded !== undefined ? entryOf(recorded) : undefined);
      this.log.warn({ pod: view.key, name, reason, podGone: ref === undefined, event: e.reason }, e.message);
      if (ref !== undefined) await this.event(ref, "Warning", e.reason, e.message);
    }
  }

  /** Unmounts everything of a pod that is gone or finished and removes its directory, if it owned it. */
  private async teardown(view: PodView): Promise<void> {
    if (view.refusal !== undefined || view.id === undefined || view.dir === undefined) return;
    const owner = this.ownerOf(view.id);
    if (owner !== undefined && owner.uid !== view.uid) return;
    const live = this.pods.get(view.key);
    const ref =
      live !== undefined && live.uid === view.uid
        ? { namespace: view.namespace, name: view.name, uid: view.uid }
        : undefined;
    for (const m of await this.actualMounts(view.id, view.dir))
      await this.unmountOne(view, ref, view.id, view.dir, m.name, "removed", m.recorded, undefined, true);
    if (live === undefined || live.uid !== view.uid) {
      this.garbage.noteKept(await this.records.removePod(view.id));
      await this.garbage.removeStrayDirs(view.dir, new Set());
      await this.fs.rmdir(view.dir).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== "ENOENT") this.log.warn({ dir: view.dir, err: e.code }, "pod directory not removed");
      });
      for (const k of this.failures.keys()) if (k.startsWith(`${view.key}/`)) this.failures.delete(k);
      this.log.info({ pod: view.key, id: view.id }, "pod gone: directory removed");
    }
  }

  /** Removes pod directories, mounts and private state that no live pod claims. */
  async collectGarbage(): Promise<void> {
    const claimed = new Set<string>();
    for (const p of [...this.pods.values(), ...this.gone.values()]) if (p.id !== undefined) claimed.add(p.id);
    await this.garbage.collect(claimed);
  }

  private scheduleRetry(key: string, delayMs: number): void {
    if (this.stopped) return;
    this.queue.retryAfter(key, delayMs);
  }

  private setState(
    view: PodView,
    st: PodState,
    name: string,
    next: { state: MountState; bucket: string; prefix: string; readOnly: boolean; error?: string },
  ): void {
    st.status = setMountStatus(st.status, name, next, this.now());
    this.emitState(view.key, name, next);
  }

  private emitState(pod: string, name: string, e: Omit<MountStateEvent, "pod" | "name">): void {
    this.events.emit("state", { pod, name, ...e });
  }

  private updateMountGauge(): void {
    if (this.metrics === undefined) return;
    const counts = new Map<string, [Record<string, string>, number]>();
    for (const [key, st] of this.state) {
      const mounter = this.pods.get(key)?.mounter ?? "unknown";
      for (const m of Object.values(st.status)) {
        const k = `${m.state}/${mounter}`;
        const c = counts.get(k) ?? [{ state: m.state, mounter }, 0];
        c[1]++;
        counts.set(k, c);
      }
    }
    // Reset first, so that a state and mounter pair with no mounts left drops out of the exposition.
    this.metrics.mounts.reset();
    for (const [labels, n] of counts.values()) this.metrics.mounts.set(labels, n);
  }

  private flushStatus(ref: PodRef, st: PodState): Promise<void> {
    return this.statusWriter.write(`${ref.namespace}/${ref.name}`, ref, () => st.status);
  }

  private async event(
    ref: PodRef,
    type: "Normal" | "Warning",
    reason: string,
    message: string,
  ): Promise<void> {
    try {
      await this.source.recordEvent(ref, { type, reason, message });
    } catch (e) {
      this.log.warn(
        { pod: `${ref.namespace}/${ref.name}`, reason, err: (e as Error).message },
        "event not recorded",
      );
    }
  }
}

function summary(e: { bucket: string; prefix: string; readOnly: boolean }): {
  bucket: string;
  prefix: string;
  readOnly: boolean;
} {
  return { bucket: e.bucket, prefix: e.prefix, readOnly: e.readOnly };
}

/** The engine's report on unmounted writes, from whatever an engine's unmount resolved to. */
function writeBackOf(result: unknown): WriteBackReport | undefined {
  return typeof result === "object" && result !== null
    ? (result as { writeBack?: WriteBackReport }).writeBack
    : undefined;
}

/** The annotation entry that mounts `s`: `name=bucket/prefix:rw`. */
function entryOf(s: MountSpec): string {
  return `${s.name}=${s.bucket}${s.prefix ? `/${s.prefix}` : ""}:${s.readOnly ? "ro" : "rw"}`;
}

function describe(s: MountSpec): string {
  return `${s.bucket}${s.prefix ? `/${s.prefix}` : ""} (${s.readOnly ? "ro" : "rw"}, ${s.mounter})`;
}

export { AppError };
