/**
 * The soak's shared state: the local node (S3 server, runc pods, the real agent), the pods it
 * keeps alive and those it deleted, the fault windows, the agent's incarnations, and the ledger.
 * The actors (./actors.ts, ./console-load.ts) and the checks (./tracker.ts, ./final.ts) act on it.
 */
import { join } from "node:path";
import type { LocalNode } from "../lib/local-node.js";
import type { RestartableS3 } from "../lib/s3-restart.js";
import type { S3Server } from "../lib/s3-server.js";
import { expectedOf, NAMESPACES, specText, type Expected } from "./catalog.js";
import type { Ledger } from "./ledger.js";
import type { SoakOptions } from "./options.js";
import { Prng } from "./prng.js";

export type Mounter = "s3fs" | "rclone";

/** An annotation value the agent has not matched yet. */
export interface Change {
  readonly value: string | undefined;
  readonly expected: Expected;
  /** When it was written (or, for edits the soak did not time, first seen). */
  readonly t0: number;
  readonly source: "create" | "flip" | "console" | "unknown";
}

export interface SoakPod {
  readonly name: string;
  readonly namespace: string;
  readonly mounter: Mounter;
  readonly id: string;
  readonly hostDir: string;
  /** The pod file in the pods directory. */
  readonly file: string;
  /** The container's init process: `/proc/<pid>/root` is the container's view. */
  readonly containerPid: number;
  readonly createdAt: number;
  /** Annotation edits in flight (a pod is only deleted when there are none). */
  inflight: number;
  /** Used by a probe: the random actors leave it alone. */
  reserved: boolean;
  deleting: boolean;
  /** The annotation value last read from the pod file. */
  annotation: string | undefined;
  pending: Change | undefined;
  /** Why the last sample did not match, for the report. */
  lastMismatch: string | undefined;
  /** Annotation edits seen or made so far (a mount may legitimately be made again after one). */
  edits: number;
  /** Every valid entry this pod ever asked for: name → specText set. */
  readonly history: Map<string, Set<string>>;
}

export interface DeletedPod {
  readonly name: string;
  readonly id: string;
  readonly hostDir: string;
  readonly deletedAt: number;
  /** When its mounts, directory and state were all gone (processes are checked separately). */
  cleanedAt: number | undefined;
  /** Cleaned up except for its empty directory, which waits for the agent's GC grace (see below). */
  awaitingGrace: boolean;
}

export interface Window {
  readonly kind: "s3" | "agent" | "mounter";
  readonly from: number;
  to: number | undefined;
}

export interface AgentSample {
  readonly t: number;
  readonly fds: number;
  readonly rssKiB: number;
}

export interface Incarnation {
  readonly pid: number;
  readonly startedAt: number;
  readonly logFile: string;
  readonly samples: AgentSample[];
  endedAt: number | undefined;
  /** Why it ended: killed by the soak, stopped at the end, or on its own (a crash). */
  end: "killed" | "stopped" | "crashed" | undefined;
}

export interface ConsoleSetup {
  readonly port: number;
  readonly caPem: string;
  readonly token: string;
  readonly agentArgs: readonly string[];
}

export class World {
  readonly pods = new Map<string, SoakPod>();
  readonly deleted: DeletedPod[] = [];
  readonly windows: Window[] = [];
  readonly incarnations: Incarnation[] = [];
  /**
   * The S3 server of the write-back faults' namespace (see ./write-back.ts): frozen by them, so
   * that the rest of the load keeps its own server.
   */
  writeBackS3: S3Server | undefined;
  readonly t0 = Date.now();
  /** Set by SIGINT/SIGTERM or a fatal harness error: every loop stops. */
  readonly abort = new AbortController();
  /** The load phase runs from here to {@link loadEnd} (ms epoch); faults stop at {@link faultEnd}. */
  loadStart = Date.now();
  loadEnd = Date.now();
  faultEnd = Date.now();
  private agentOps: Promise<unknown> = Promise.resolve();
  private exclusiveOps: Promise<unknown> = Promise.resolve();
  /** The agent's pid once it has said "agent started" (its console listens), until it is killed. */
  private readyPid: number | undefined;
  private expectingExit = false;
  private stopping = false;
  private frozen = false;
  private podSeq = 0;

  constructor(
    readonly node: LocalNode,
    readonly s3: RestartableS3,
    readonly ledger: Ledger,
    readonly opts: SoakOptions,
    readonly console: ConsoleSetup,
    readonly log: (line: string) => void,
  ) {}

  /** Starts the clock of the load phase: faults stop after 80 % of it, the load at its end. */
  beginLoad(): void {
    this.loadStart = Date.now();
    this.loadEnd = this.loadStart + this.opts.loadSeconds * 1000;
    this.faultEnd = this.loadStart + this.opts.loadSeconds * 800;
  }

  rng(stream: string): Prng {
    return new Prng(this.opts.seed, stream);
  }

  get aborted(): boolean {
    return this.abort.signal.aborted;
  }

  /** Sleeps `ms`, or less when the run is aborted. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.aborted) return resolve();
      const done = (): void => {
        clearTimeout(timer);
        this.abort.signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      this.abort.signal.addEventListener("abort", done, { once: true });
    });
  }

  /** Sleeps until `at` (ms epoch). */
  until(at: number): Promise<void> {
    return this.sleep(at - Date.now());
  }

  /** Runs `body` after each delay until `end` or an abort; a throw is a harness error, not a stop. */
  async loop(name: string, end: number, delayMs: () => number, body: () => Promise<void>): Promise<void> {
    while (!this.aborted) {
      await this.sleep(Math.min(delayMs(), end - Date.now()));
      if (this.aborted || Date.now() >= end) return;
      try {
        await body();
      } catch (e) {
        this.ledger.harnessError(name, e);
      }
    }
  }

  livePods(): SoakPod[] {
    return [...this.pods.values()].filter((p) => !p.deleting);
  }

  /** Live pods the random actors may pick: not reserved by a probe. */
  pickable(): SoakPod[] {
    return this.livePods().filter((p) => !p.reserved);
  }

  nextPodName(): string {
    return `s${++this.podSeq}`;
  }

  /** Remembers that `pod` may legitimately show `value`'s valid entries from now on. */
  allow(pod: SoakPod, value: string | undefined): void {
    for (const e of expectedOf(value).valid) {
      const set = pod.history.get(e.name) ?? new Set<string>();
      set.add(specText(e));
      pod.history.set(e.name, set);
    }
  }

  async createPod(
    rng: Prng,
    buckets: string,
    mounter: Mounter,
    o: { reserved?: boolean; namespace?: string } = {},
  ): Promise<SoakPod> {
    const name = this.nextPodName();
    const namespace = o.namespace ?? rng.pick(NAMESPACES);
    // Both orders happen in a cluster: the agent hears of the pod first, or the kubelet creates its
    // hostPath and starts it first (the agent must not collect that young directory meanwhile).
    const kubeletFirst = rng.chance(0.5);
    const spec = { namespace, name, buckets, mounter };
    const local = kubeletFirst ? await this.node.addPod(spec) : await this.node.addPodApiFirst(spec);
    this.ledger.count(kubeletFirst ? "pods.created.kubeletFirst" : "pods.created.apiFirst");
    const pod: SoakPod = {
      name,
      namespace,
      mounter,
      id: local.id,
      hostDir: local.hostDir,
      file: join(this.node.podsDir, local.file),
      containerPid: local.container.pid,
      createdAt: Date.now(),
      inflight: 0,
      reserved: o.reserved === true,
      deleting: false,
      annotation: buckets,
      pending: { value: buckets, expected: expectedOf(buckets), t0: Date.now(), source: "create" },
      lastMismatch: undefined,
      edits: 0,
      history: new Map(),
    };
    this.allow(pod, buckets);
    this.pods.set(name, pod);
    return pod;
  }

  /** Deletes a pod with no edit in flight; the caller checked {@link SoakPod.inflight}. */
  async deletePod(pod: SoakPod): Promise<void> {
    pod.deleting = true;
    if (pod.pending !== undefined) this.ledger.count("changes.deletedBeforeConverged");
    const deletedAt = Date.now();
    try {
      await this.node.deletePod(pod.name);
    } finally {
      this.pods.delete(pod.name);
      this.deleted.push({
        name: pod.name,
        id: pod.id,
        hostDir: pod.hostDir,
        deletedAt,
        cleanedAt: undefined,
        awaitingGrace: false,
      });
    }
  }

  openWindow(kind: Window["kind"]): Window {
    const w: Window = { kind, from: Date.now(), to: undefined };
    this.windows.push(w);
    return w;
  }

  /** True when the agent was down at some point after `t` (so it may never have seen a delete at `t`). */
  agentDownSince(t: number): boolean {
    return this.windows.some((w) => w.kind === "agent" && (w.to ?? Infinity) >= t);
  }

  /** True when a fault window overlaps [from, to]. */
  faultDuring(from: number, to: number): boolean {
    return this.windows.some((w) => w.from <= to && (w.to ?? Infinity) >= from);
  }

  /** The agent's process, while it runs and serves (from "agent started" on). */
  agentPid(): number | undefined {
    const a = this.node.agent;
    return a !== undefined && a.exitStatus() === undefined && a.pid === this.readyPid ? a.pid : undefined;
  }

  current(): Incarnation | undefined {
    const last = this.incarnations[this.incarnations.length - 1];
    return last?.endedAt === undefined ? last : undefined;
  }

  /** Starts the agent (serialized with kills); an exit the soak did not cause is a violation. */
  startAgent(): Promise<void> {
    return this.serial(() => this.startAgentNow());
  }

  private async startAgentNow(): Promise<void> {
    let last: unknown;
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        const t = Date.now();
        const agent = await this.node.startAgent(this.console.agentArgs);
        this.readyPid = agent.pid;
        this.ledger.count("agent.starts");
        this.ledger.counters.set(
          "agent.slowestStartMs",
          Math.max(this.ledger.get("agent.slowestStartMs"), Date.now() - t),
        );
        const inc: Incarnation = {
          pid: agent.pid,
          startedAt: Date.now(),
          logFile: agent.logFile,
          samples: [],
          endedAt: undefined,
          end: undefined,
        };
        this.incarnations.push(inc);
        this.expectingExit = false;
        void agent.exited.then((status) => {
          inc.endedAt = Date.now();
          if (this.readyPid === inc.pid) this.readyPid = undefined;
          if (this.expectingExit || this.stopping) return;
          inc.end = "crashed";
          this.ledger.violate(
            "crash",
            `the agent (pid ${inc.pid}) exited on its own (${status.code ?? status.signal}); log ${inc.logFile}`,
          );
          this.openWindow("agent").to = undefined;
          void this.startAgent()
            .then(() => this.closeAgentWindow())
            .catch((e: unknown) => this.ledger.harnessError("restart after crash", e));
        });
        return;
      } catch (e) {
        last = e;
        this.ledger.harnessError(`agent start attempt ${attempt}`, e);
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    throw new Error(`the agent did not start after 3 attempts: ${(last as Error)?.message}`);
  }

  private closeAgentWindow(): void {
    for (const w of this.windows) if (w.kind === "agent" && w.to === undefined) w.to = Date.now();
  }

  /** kill -9 the agent, wait `downMs`, start it again. */
  killAgent(downMs: number): Promise<void> {
    return this.serial(async () => {
      const agent = this.node.agent;
      if (agent === undefined || agent.exitStatus() !== undefined) return;
      this.expectingExit = true;
      const inc = this.current();
      if (inc !== undefined) inc.end = "killed";
      this.openWindow("agent");
      this.readyPid = undefined;
      agent.kill("SIGKILL");
      await agent.exited;
      this.ledger.count("faults.agentKills");
      await this.sleep(downMs);
      await this.startAgentNow();
      this.closeAgentWindow();
    });
  }

  /**
   * SIGKILL to the mounter and every FUSE client of the node (as the end of its container would),
   * wait `downMs`, start it again; the mounts stay behind, stale, until the agent (which reconnects
   * by itself) makes them again. Serialized with the agent's kills and starts. Resolves with the
   * number of FUSE clients the mounter ran just before.
   */
  killMounter(downMs: number): Promise<number> {
    return this.serial(async () => {
      const clients = await this.node.clients().catch(() => new Map<string, number>());
      const window = this.openWindow("mounter");
      try {
        await this.node.killMounter();
        this.ledger.count("faults.mounterKills");
        this.ledger.count("faults.mounterKills.clients", clients.size);
        await this.sleep(downMs);
      } finally {
        // Always start it again, even on abort: the agent needs it for the cleanup.
        await this.startMounterNow();
        window.to = Date.now();
      }
      return clients.size;
    });
  }

  private async startMounterNow(): Promise<void> {
    let last: unknown;
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        await this.node.startMounter();
        return;
      } catch (e) {
        last = e;
        this.ledger.harnessError(`mounter start attempt ${attempt}`, e);
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    throw new Error(`the mounter did not start after 3 attempts: ${(last as Error)?.message}`);
  }

  /**
   * Runs `fn` alone among the faults that must not overlap (agent kills, mounter kills, write-back
   * faults): each waits for the one before to end, whatever the plan's timing.
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.exclusiveOps.then(fn, fn);
    this.exclusiveOps = next.catch(() => undefined);
    return next;
  }

  /** SIGSTOP: the agent stays alive but does nothing (--sabotage). */
  freezeAgent(): void {
    this.frozen = true;
    this.node.agent?.kill("SIGSTOP");
  }

  /** Stops the agent for good (SIGTERM), at the end of the run. */
  async stopAgent(): Promise<void> {
    this.stopping = true;
    if (this.frozen) this.node.agent?.kill("SIGCONT");
    await this.serial(async () => {
      const inc = this.current();
      if (inc !== undefined) inc.end = "stopped";
      await this.node.agent?.stop(5000);
    });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.agentOps.then(fn, fn);
    this.agentOps = next.catch(() => undefined);
    return next;
  }
}
