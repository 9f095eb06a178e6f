/**
 * Sampling of the run, several times a second: each live pod's annotation (read from its file, the
 * source of truth, whoever wrote it) against its status and the host's mountinfo, which gives the
 * time from each change to the moment the pod matches it; deleted pods until they are cleaned up;
 * and, every few seconds, the agent's descriptors and memory and the FUSE clients of deleted pods.
 */
import { join } from "node:path";
import { expectedOf, mismatch, recordMismatch, type RecordedSpec } from "./catalog.js";
import {
  exists,
  fuseProcesses,
  keptCaches,
  listDir,
  mountsBelow,
  processStats,
  readBucketsAnnotation,
  readMountinfo,
  readRecord,
} from "./observe.js";
import type { SoakPod, World } from "./world.js";

export interface Convergence {
  readonly ms: number;
  /** No S3 outage or agent downtime overlapped it. */
  readonly clean: boolean;
  readonly source: string;
}

/** A deleted pod that took longer than this to be cleaned up is reported (not a violation by itself). */
const SLOW_CLEANUP_MS = 30_000;

export class Tracker {
  readonly converged: Convergence[] = [];
  readonly cleanups: Convergence[] = [];
  /** Annotation edits the soak made, so that a change is timed from its write. */
  private readonly intents = new Map<
    string,
    { value: string | undefined; any: boolean; t: number; source: "flip" | "console" }
  >();
  private lastSlow = 0;

  constructor(private readonly w: World) {}

  /** Call just before writing `value` to `pod`'s annotation. */
  intend(pod: SoakPod, value: string | undefined, source: "flip" | "console"): void {
    this.w.allow(pod, value);
    pod.edits++;
    this.intents.set(pod.name, { value, any: false, t: Date.now(), source });
  }

  /** Call just before a console edit that adds `entry` (or removes one): the new value is the agent's. */
  intendEdit(pod: SoakPod, entry: string | undefined): void {
    if (entry !== undefined) this.w.allow(pod, entry);
    pod.edits++;
    this.intents.set(pod.name, { value: undefined, any: true, t: Date.now(), source: "console" });
  }

  /** One pass over every pod; returns how many live pods do not match their annotation yet. */
  async tick(): Promise<number> {
    const now = Date.now();
    const infos = await readMountinfo();
    let unconverged = 0;
    const live = this.w.livePods().length;
    if (live > this.w.ledger.get("pods.maxLive")) this.w.ledger.counters.set("pods.maxLive", live);
    for (const pod of this.w.livePods()) {
      const value = await readBucketsAnnotation(pod.file);
      if (value === null || pod.deleting) continue;
      if (value !== pod.annotation) {
        if (pod.pending !== undefined) this.w.ledger.count("changes.superseded");
        const intent = this.intents.get(pod.name);
        const timed =
          intent !== undefined && (intent.any || intent.value === value) && now - intent.t < 10_000;
        if (timed) this.intents.delete(pod.name);
        this.w.ledger.count(`changes.seen.${timed ? intent.source : "unknown"}`);
        this.w.allow(pod, value);
        pod.edits++;
        pod.annotation = value;
        pod.pending = {
          value,
          expected: expectedOf(value),
          t0: timed ? intent.t : now,
          source: timed ? intent.source : "unknown",
        };
      }
      const change = pod.pending;
      if (change === undefined) continue;
      const why =
        mismatch(
          change.expected,
          pod.hostDir,
          await this.w.node.status(pod.name),
          mountsBelow(infos, pod.hostDir),
        ) ??
        recordMismatch(
          change.expected,
          await this.records(
            pod,
            change.expected.valid.map((e) => e.name),
          ),
        );
      if (why !== undefined) {
        pod.lastMismatch = why;
        unconverged++;
        continue;
      }
      // The pod may have been deleted while we looked; only a live pod's convergence counts.
      if (pod.deleting || pod.pending !== change) continue;
      const done = Date.now();
      this.w.ledger.checked("convergence");
      this.converged.push({
        ms: done - change.t0,
        clean: !this.w.faultDuring(change.t0, done),
        source: change.source,
      });
      pod.pending = undefined;
      pod.lastMismatch = undefined;
    }
    for (const d of this.w.deleted) {
      if (d.cleanedAt !== undefined) continue;
      if (mountsBelow(infos, d.hostDir).length > 0) continue;
      if (await exists(join(this.w.node.root, "agent", "mounts", d.id))) {
        // Caches that may hold writes not yet in S3 outlive their pod, for an operator; anything
        // else of the pod's state must go.
        const { kept, others } = await keptCaches(this.w.node.root, d.id);
        if (kept.length === 0 || others > 0) continue;
        this.w.ledger.count("writeBack.keptForDeletedPods");
      }
      if (await exists(d.hostDir)) {
        // A restarted agent does not know a pod deleted while it was down: it unmounts what it
        // finds there at once, but leaves the empty directory to its GC grace (gcGraceMs, 10 min),
        // because the kubelet may create a new pod's directory before the agent hears of the pod.
        // Only an empty one: the agent cannot tell it from a directory the kubelet just made. One it
        // mounted into (with mount-point directories or state of its own) it collects at once.
        if (!this.w.agentDownSince(d.deletedAt) || (await listDir(d.hostDir)).length > 0) continue;
        d.awaitingGrace = true;
      }
      d.cleanedAt = Date.now();
      const ms = d.cleanedAt - d.deletedAt;
      this.cleanups.push({ ms, clean: !this.w.faultDuring(d.deletedAt, d.cleanedAt), source: "delete" });
      if (ms > SLOW_CLEANUP_MS) this.w.ledger.count("deletes.slowCleanup");
    }
    return unconverged;
  }

  private async records(
    pod: SoakPod,
    names: readonly string[],
  ): Promise<Map<string, RecordedSpec | undefined>> {
    const out = new Map<string, RecordedSpec | undefined>();
    for (const n of names) out.set(n, await readRecord(this.w.node.root, pod.id, n));
    return out;
  }

  /** The slower samples: agent descriptors and memory; FUSE clients of cleaned-up deleted pods. */
  async slowTick(): Promise<void> {
    if (Date.now() - this.lastSlow < 2000) return;
    this.lastSlow = Date.now();
    const inc = this.w.current();
    const pid = this.w.agentPid();
    if (inc !== undefined && pid === inc.pid) {
      const s = await processStats(pid);
      if (s !== undefined) inc.samples.push({ t: Date.now(), fds: s.fds, rssKiB: s.rssKiB });
    }
    const procs = await fuseProcesses(join(this.w.node.root, "pods"));
    this.w.ledger.count("samples.fuseProcessScans");
    const counts = this.w.ledger.counters;
    counts.set("fuse.maxClients", Math.max(counts.get("fuse.maxClients") ?? 0, procs.length));
  }
}
