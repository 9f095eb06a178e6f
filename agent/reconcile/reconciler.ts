/**
 * The reconcile loop: pod events in, mounts and status out. Each pod is reconciled by one worker at
 * a time (serialized per pod), with at most `concurrency` pods at once; a change that arrives while
 * a pod is being worked on queues one more pass, so the latest desired state always wins. Failed
 * mounts are retried with capped exponential backoff and full jitter (shared/backoff.ts).
 */
import { EventEmitter } from "node:events";
import { mkdirSync } from "node:fs";
import { readdir, rmdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { backoffDelay } from "../../shared/backoff.js";
import { describeBucketError } from "../../shared/buckets.js";
import { AppError, isAppError, publicMessage } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { MountChange } from "../../shared/protocol-messages.js";
import { podsDir, type MounterName, type MountState } from "../../shared/names.js";
import { credentialsFromSecret } from "./credentials.js";
import { makeDirAt } from "../mount/host.js";
import type { MountInfo } from "../mount/mountinfo.js";
import { withoutTimestamps } from "../mount/mounters/index.js";
import type { MountRequest } from "../mount/mounters/types.js";
import { planPod, specKey, specOf, type ActualMount, type MountSpec } from "./plan.js";
import { readPod, type PodReadConfig, type PodView } from "./pod.js";
import type { PodEvent, PodRef, PodSource } from "../sources/pod-source.js";
import { MountRecords, type KeptCache } from "../mount/records.js";
import type { ReconcilerMetrics } from "./metrics.js";
import { writeBackEvent, type WriteBackNext, type WriteBackReport } from "../mount/write-back.js";
import { removeMountStatus, renderStatus, setMountStatus, type PodStatus } from "./status.js";

/**
 * What the reconciler needs from the machine: mounting, unmounting, probing, mountinfo.
 * `FuseMounter` is the real one; timeouts are its own configuration.
 */
export interface MountEngine {
  /**
   * Mounts and waits until ready; throws AppError("MountFailed") with the client's scrubbed stderr.
   * `onStarted` is called once, as soon as the client runs (not called when it never starts).
   */
  mount(req: MountRequest, mounter: MounterName, onStarted?: () => void): Promise<unknown>;
  /**
   * Unmounts (lazily when busy or stale), stops the client, and removes the mount's state
   * directory `opts.stateDir`, except a cache that may hold writes not yet in S3, which is kept
   * and reported in `writeBack`.
   */
  unmount(
    mountPoint: string,
    opts?: { readonly stateDir?: string },
  ): Promise<{ readonly writeBack?: WriteBackReport } | void>;
  probe(mountPoint: string): Promise<"ok" | "stale" | "absent">;
  /**
   * The mount table (at least the mounts at or below `under`), read at most `maxAgeMs` ago and
   * after the engine's own last change; 0: now.
   */
  mountinfo(maxAgeMs?: number, under?: string): Promise<readonly MountInfo[]>;
}

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
  written: string | undefined;
  lastRefusal: string | undefined;
  /** Status writes of one pod, one after another, so that an older one never lands last. */
  writing?: Promise<void>;
}

export class Reconciler {
  readonly events = new EventEmitter<{ state: [MountStateEvent]; idle: [] }>();
  private readonly pods = new Map<string, PodView>();
  private readonly gone = new Map<string, PodView>();
  private readonly state = new Map<string, PodState>();
  private readonly failures = new Map<string, Failure>();
  private readonly queued = new Set<string>();
  private readonly pending: string[] = [];
  private readonly running = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly retryTimers = new Map<string, NodeJS.Timeout>();
  private readonly records: MountRecords;
  /** Kept caches of gone pods already logged (see noteKept). */
  private readonly keptNoticed = new Set<string>();
  private resyncTimer: NodeJS.Timeout | undefined;
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
    this.records = new MountRecords(cfg.root);
  }

  /** Starts watching; after the initial list, collects orphans and reconciles every pod. */
  async start(): Promise<void> {
    await this.source.start((e) => this.onEvent(e));
    await this.collectGarbage();
    for (const key of this.pods.keys()) this.enqueue(key);
    this.resyncTimer = setInterval(() => this.resync(), this.cfg.resyncMs);
    this.resyncTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.resyncTimer);
    for (const t of this.retryTimers.values()) clearTimeout(t);
    await this.source.stop();
    await this.idle();
  }

  /** Resolves when no pod is queued or being reconciled. */
  idle(): Promise<void> {
    if (this.running.size === 0 && this.pending.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.events.once("idle", resolve));
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

  private resync(): void {
    if (this.stopped) return;
    for (const key of this.pods.keys()) this.enqueue(key);
    void this.collectGarbage().catch((e: unknown) =>
      this.log.error({ err: (e as Error).message }, "garbage collection failed"),
    );
  }

  enqueue(key: string): void {
    if (this.stopped) return;
    if (this.running.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.pending.push(key);
    this.pump();
  }

  private pump(): void {
    while (this.running.size < this.cfg.concurrency && this.pending.length > 0) {
      const key = this.pending.shift()!;
      this.queued.delete(key);
      this.running.add(key);
      this.metrics?.queueDepth.set({}, this.pending.length + this.running.size);
      void this.reconcile(key)
        .then(
          () => this.metrics?.reconciles.inc({ result: "ok" }),
          (e: unknown) => {
            this.metrics?.reconciles.inc({ result: "error" });
            this.log.error({ pod: key, err: (e as Error).message }, "reconcile failed");
          },
        )
        .finally(() => {
          this.running.delete(key);
          if (this.dirty.delete(key)) this.enqueue(key);
          this.pump();
          this.metrics?.queueDepth.set({}, this.pending.length + this.running.size);
          this.updateMountGauge();
          if (this.running.size === 0 && this.pending.length === 0) this.events.emit("idle");
        });
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
        return;
      }
    }
    if (view === undefined) return;
    const ref: PodRef = { namespace: view.namespace, name: view.name, uid: view.uid };
    const st = this.state.get(key) ?? { status: {}, written: undefined, lastRefusal: undefined };
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

    // The kubelet normally has made it. `<root>/pods` is never a FUSE mount, so the recursive
    // fallback cannot wait on a client either.
    if (!makeDirAt(dir, 0o755)) mkdirSync(dir, { recursive: true, mode: 0o755 });
    const actual = await this.actualMounts(id, dir);
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
    await this.removeStrayDirs(dir, new Set(desired.map((d) => d.name)));
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
    if (failure !== undefined && failure.spec === skey && failure.retryAt > Date.now()) {
      this.scheduleRetry(view.key, failure.retryAt - Date.now());
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
      await rmdir(mountPoint).catch(() => undefined);
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
      this.failures.set(fkey, { spec: skey, attempts, retryAt: Date.now() + delay, sameness });
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
    await rmdir(mountPoint).catch(() => undefined);
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
      this.noteKept(await this.records.removePod(view.id));
      await this.removeStrayDirs(view.dir, new Set());
      await rmdir(view.dir).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== "ENOENT") this.log.warn({ dir: view.dir, err: e.code }, "pod directory not removed");
      });
      for (const k of this.failures.keys()) if (k.startsWith(`${view.key}/`)) this.failures.delete(k);
      this.log.info({ pod: view.key, id: view.id }, "pod gone: directory removed");
    }
  }

  /** Removes empty directories in a pod's directory that no mount wants. Never removes content. */
  private async removeStrayDirs(dir: string, keep: Set<string>): Promise<void> {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return;
    }
    for (const n of names) if (!keep.has(n)) await rmdir(join(dir, n)).catch(() => undefined);
  }

  /** Removes pod directories, mounts and private state that no live pod claims. */
  async collectGarbage(): Promise<void> {
    const claimed = new Set<string>();
    for (const p of [...this.pods.values(), ...this.gone.values()]) if (p.id !== undefined) claimed.add(p.id);
    const base = podsDir(this.cfg.root);
    const infos = await this.engine.mountinfo(TABLE_MAX_AGE_MS, base);
    const orphanMounts = infos
      .filter((m) => m.mountPoint.startsWith(`${base}/`))
      .filter((m) => !claimed.has(m.mountPoint.slice(base.length + 1).split("/")[0]!))
      .sort((a, b) => b.mountPoint.length - a.mountPoint.length);
    for (const m of orphanMounts) {
      this.log.info({ mountPoint: m.mountPoint }, "garbage: unmounting a mount of no live pod");
      const [id, name, ...deeper] = m.mountPoint.slice(base.length + 1).split("/");
      const stateDir =
        id !== undefined && name !== undefined && deeper.length === 0
          ? this.records.stateDir(id, name)
          : undefined;
      await this.engine
        .unmount(m.mountPoint, stateDir !== undefined ? { stateDir } : {})
        .catch((e: unknown) =>
          this.log.warn({ mountPoint: m.mountPoint, err: (e as Error).message }, "garbage unmount failed"),
        );
    }
    let dirs: string[] = [];
    try {
      dirs = await readdir(base);
    } catch {
      /* no pods directory yet */
    }
    const stillMounted = new Set(
      (await this.engine.mountinfo(TABLE_MAX_AGE_MS, base)).map(
        (m) => m.mountPoint.slice(base.length + 1).split("/")[0],
      ),
    );
    const withState = new Set(await this.records.ids());
    for (const id of dirs) {
      if (claimed.has(id) || stillMounted.has(id)) continue;
      // The kubelet creates a pod's directory (DirectoryOrCreate) when it starts the pod, which can
      // be before this agent hears of the pod; removing it then would leave the container bound to
      // a deleted directory that no mount ever reaches. Such a directory is empty and has no state
      // of ours; one we mounted into (a pod deleted while the agent was down) goes at once.
      const fresh =
        !withState.has(id) &&
        (await readdir(join(base, id)).then(
          (e) => e.length === 0,
          () => true,
        )) &&
        (await stat(join(base, id)).then(
          (s) => Date.now() - s.mtimeMs < this.cfg.gcGraceMs,
          () => true,
        ));
      if (fresh) continue;
      await this.removeStrayDirs(join(base, id), new Set());
      await rmdir(join(base, id)).catch(() => undefined);
    }
    for (const id of await this.records.ids())
      if (!claimed.has(id)) this.noteKept(await this.records.removePod(id));
  }

  /**
   * Logs, once per directory and agent run, a cache kept for a pod that is gone: its writes wait
   * for an operator (docs/troubleshooting.md), and garbage collection looks at it on every pass.
   */
  private noteKept(kept: readonly KeptCache[]): void {
    for (const k of kept) {
      if (this.keptNoticed.has(k.stateDir)) continue;
      this.keptNoticed.add(k.stateDir);
      this.log.warn(
        { cacheDir: k.cacheDir, dirty: k.verdict.dirty.length, unsure: k.verdict.unsure.length },
        "a deleted pod's cache is kept: it may hold writes not yet in S3; upload or remove it by hand",
      );
    }
  }

  private scheduleRetry(key: string, delayMs: number): void {
    if (this.stopped || this.retryTimers.has(key)) return;
    const t = setTimeout(
      () => {
        this.retryTimers.delete(key);
        this.enqueue(key);
      },
      Math.max(0, delayMs),
    );
    t.unref();
    this.retryTimers.set(key, t);
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
    const run = (st.writing ?? Promise.resolve()).then(() => this.writeStatusNow(ref, st));
    st.writing = run;
    return run;
  }

  private async writeStatusNow(ref: PodRef, st: PodState): Promise<void> {
    const text = renderStatus(st.status);
    if (text === st.written) return;
    try {
      await this.source.writeStatus(ref, text);
      st.written = text;
    } catch (e) {
      this.log.warn({ pod: `${ref.namespace}/${ref.name}`, err: (e as Error).message }, "status not written");
    }
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
