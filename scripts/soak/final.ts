/**
 * The end of the run, once the load and the faults have stopped: wait (within the bound) until
 * every live pod matches its annotation and every deleted pod is cleaned up, then check for good:
 * reads through every desired mount, ENOTCONN probes, leaks (mounts, FUSE clients, directories,
 * agent state, descriptors, memory), every acknowledged write in S3 with its checksum, and the
 * agent's logs for crashes.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { expectedOf, markerText, mismatch, recordMismatch } from "./catalog.js";
import type { WriteRecord } from "./writers.js";
import { checkWrites, type WriteSummary } from "./data-check.js";
import { checkWriteBackWrites } from "./write-back.js";
import {
  catFile,
  exists,
  fuseBelow,
  fuseProcesses,
  listDir,
  mountsBelow,
  processStats,
  readBucketsAnnotation,
  readMountinfo,
  readRecord,
  statPath,
} from "./observe.js";
import type { Tracker } from "./tracker.js";
import type { Incarnation, SoakPod, World } from "./world.js";

export interface FinalSummary {
  /** From the end of the load until everything matched; undefined when the bound passed first. */
  readonly settledMs: number | undefined;
  readonly livePods: number;
  readonly mountsChecked: number;
  readonly writes: WriteSummary;
  readonly resources: ResourceRow[];
  readonly logErrors: Map<string, number>;
}

export interface ResourceRow {
  readonly pid: number;
  readonly end: string;
  readonly seconds: number;
  readonly fds: { start: number; end: number; max: number } | undefined;
  readonly rssMiB: { start: number; end: number; max: number } | undefined;
  readonly verdict: string;
}

/** Why the pod does not match its annotation (fresh read), or undefined. */
async function podMismatch(w: World, pod: SoakPod): Promise<string | undefined> {
  const value = await readBucketsAnnotation(pod.file);
  if (value === null) return "pod file unreadable";
  const expected = expectedOf(value);
  const infos = await readMountinfo();
  const why = mismatch(expected, pod.hostDir, await w.node.status(pod.name), mountsBelow(infos, pod.hostDir));
  if (why !== undefined) return why;
  const records = new Map(
    await Promise.all(
      expected.valid.map(async (e) => [e.name, await readRecord(w.node.root, pod.id, e.name)] as const),
    ),
  );
  return recordMismatch(expected, records);
}

/** Waits until everything matches, at most the bound after the last change (the load's end). */
async function settle(w: World, tracker: Tracker): Promise<number | undefined> {
  const start = Date.now();
  const deadline = start + w.opts.profile.convergenceBoundSeconds * 1000;
  for (;;) {
    await tracker.tick();
    let pending = w.deleted.filter((d) => d.cleanedAt === undefined).length;
    if (pending === 0)
      for (const pod of w.livePods()) {
        pod.lastMismatch = await podMismatch(w, pod);
        if (pod.lastMismatch !== undefined) pending++;
      }
    if (pending === 0) return Date.now() - start;
    if (Date.now() > deadline || w.aborted) return undefined;
    await new Promise((r) => setTimeout(r, 250));
  }
}

export async function finalChecks(
  w: World,
  tracker: Tracker,
  writes: readonly WriteRecord[],
  fuseKills: ReadonlyArray<{ t: number; mountPoint: string }>,
  writeBackWrites: readonly WriteRecord[],
): Promise<FinalSummary> {
  const L = w.ledger;
  w.log("final: waiting for every pod to match its annotation");
  const settledMs = await settle(w, tracker);
  // Convergence and cleanup.
  for (const pod of w.livePods()) {
    L.checked("convergence");
    if (pod.lastMismatch !== undefined)
      L.violate(
        "convergence",
        `pod ${pod.name} (${pod.mounter}) does not match "${pod.annotation ?? ""}" ${w.opts.profile.convergenceBoundSeconds} s after the last change: ${pod.lastMismatch}`,
      );
  }
  const infos = await readMountinfo();
  for (const d of w.deleted) {
    L.checked("leak");
    if (d.cleanedAt !== undefined) continue;
    const left = [
      ...mountsBelow(infos, d.hostDir).map((m) => `mount ${m.mountPoint}`),
      ...((await exists(d.hostDir)) ? [`directory ${d.hostDir}`] : []),
      ...((await exists(join(w.node.root, "agent", "mounts", d.id))) ? [`state agent/mounts/${d.id}`] : []),
    ];
    L.violate("leak", `deleted pod ${d.name} left ${left.join(", ")}`);
  }
  // Every desired mount is readable from inside its container and shows the right bucket.
  let mountsChecked = 0;
  for (const pod of w.livePods()) {
    for (const e of expectedOf(pod.annotation).valid) {
      mountsChecked++;
      L.checked("convergence");
      const path = `/proc/${pod.containerPid}/root/datasets/${e.name}/marker.txt`;
      let probe = await catFile(path, 8000);
      if (!probe.ok) {
        await new Promise((r) => setTimeout(r, 2000));
        probe = await catFile(path, 8000);
      }
      const want = markerText(e.bucket, e.prefix);
      if (!probe.ok || probe.text !== want)
        L.violate(
          "convergence",
          `pod ${pod.name}: /datasets/${e.name} ${probe.ok ? `shows ${JSON.stringify(probe.text.trim())}` : `fails with ${probe.error}`}, want ${JSON.stringify(want.trim())}`,
        );
    }
  }
  // No stale mount anywhere under the pods' directories.
  const podsRoot = join(w.node.root, "pods");
  for (const m of fuseBelow(await readMountinfo(), podsRoot)) {
    L.checked("stale");
    const probe = await statPath(m.mountPoint, 8000);
    if (!probe.ok && (probe.error === "ENOTCONN" || probe.error === "EIO" || probe.error === "TIMEOUT"))
      L.violate("stale", `${m.mountPoint.slice(podsRoot.length + 1)} (${m.fsType}): ${probe.error}`);
  }
  // The data check first: as the operator, it uploads and removes the caches the agent kept for
  // pods that are gone, which the leak check must not see.
  const writeSummary = await checkWrites(w, writes, fuseKills);
  await checkWriteBackWrites(w, writeBackWrites);
  await checkLeaks(w);
  const resources = await checkResources(w);
  const logErrors = await scanLogs(w);
  return {
    settledMs,
    livePods: w.livePods().length,
    mountsChecked,
    writes: writeSummary,
    resources,
    logErrors,
  };
}

/** FUSE clients, pod directories and agent state that belong to no desired mount of a live pod. */
async function checkLeaks(w: World): Promise<void> {
  const L = w.ledger;
  const podsRoot = join(w.node.root, "pods");
  const live = new Map(w.livePods().map((p) => [p.id, p]));
  const wanted = new Set<string>();
  for (const p of live.values())
    for (const e of expectedOf(p.annotation).valid) wanted.add(`${p.hostDir}/${e.name}`);
  const byPoint = new Map<string, number[]>();
  for (const proc of await fuseProcesses(podsRoot)) {
    L.checked("leak");
    const mp = proc.mountPoint ?? "?";
    byPoint.set(mp, [...(byPoint.get(mp) ?? []), proc.pid]);
  }
  for (const [mp, pids] of byPoint) {
    if (!wanted.has(mp))
      L.violate(
        "leak",
        `FUSE client(s) ${pids.join(", ")} still run for ${mp.slice(podsRoot.length + 1)}, which no live pod wants`,
      );
    else if (pids.length > 1)
      L.violate(
        "leak",
        `${pids.length} FUSE clients (${pids.join(", ")}) for ${mp.slice(podsRoot.length + 1)}`,
      );
  }
  const graced = new Set(w.deleted.filter((d) => d.awaitingGrace).map((d) => d.id));
  for (const id of await listDir(podsRoot)) {
    L.checked("leak");
    if (graced.has(id)) L.count("leak.emptyDirAwaitingGcGrace");
    else if (!live.has(id)) L.violate("leak", `pod directory pods/${id} of no live pod`);
  }
  const stateRoot = join(w.node.root, "agent", "mounts");
  for (const id of await listDir(stateRoot)) {
    L.checked("leak");
    const pod = live.get(id);
    if (pod === undefined) {
      L.violate("leak", `agent state agent/mounts/${id} of no live pod`);
      continue;
    }
    const names = new Set(expectedOf(pod.annotation).valid.map((e) => e.name));
    for (const n of await listDir(join(stateRoot, id)))
      if (!names.has(n))
        L.violate("leak", `agent state agent/mounts/${id}/${n}: pod ${pod.name} does not want ${n}`);
  }
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
}

const WARMUP_MS = 20_000;

/** Descriptors and RSS per agent incarnation; the last, long one must stay flat. */
async function checkResources(w: World): Promise<ResourceRow[]> {
  const pid = w.agentPid();
  const inc = w.current();
  if (pid !== undefined && inc !== undefined && inc.pid === pid) {
    // One more sample now that the load has stopped and everything settled.
    const s = await processStats(pid);
    if (s !== undefined) inc.samples.push({ t: Date.now(), fds: s.fds, rssKiB: s.rssKiB });
  }
  return w.incarnations.map((i) => resourceRow(w, i, i === inc));
}

function resourceRow(w: World, i: Incarnation, last: boolean): ResourceRow {
  const seconds = Math.round(((i.endedAt ?? Date.now()) - i.startedAt) / 1000);
  const warm = i.samples.filter((s) => s.t >= i.startedAt + WARMUP_MS);
  const base = { pid: i.pid, end: i.end ?? "running", seconds };
  if (warm.length < 4) return { ...base, fds: undefined, rssMiB: undefined, verdict: "too short to judge" };
  const head = warm.slice(0, 3);
  const fds = {
    start: median(head.map((s) => s.fds)),
    end: warm[warm.length - 1]!.fds,
    max: Math.max(...warm.map((s) => s.fds)),
  };
  const mib = (k: number): number => Math.round(k / 1024);
  const rssMiB = {
    start: mib(median(head.map((s) => s.rssKiB))),
    end: mib(warm[warm.length - 1]!.rssKiB),
    max: mib(Math.max(...warm.map((s) => s.rssKiB))),
  };
  if (!last) return { ...base, fds, rssMiB, verdict: "reported only (killed before the end)" };
  w.ledger.checked("leak", 2);
  const fdBound = fds.start + Math.max(16, Math.round(fds.start * 0.5));
  const rssBound = Math.max(Math.round(rssMiB.start * 1.5), rssMiB.start + 150);
  const problems: string[] = [];
  if (fds.end > fdBound) problems.push(`descriptors ${fds.start} → ${fds.end} (bound ${fdBound})`);
  if (rssMiB.end > rssBound) problems.push(`RSS ${rssMiB.start} → ${rssMiB.end} MiB (bound ${rssBound} MiB)`);
  for (const p of problems) w.ledger.violate("leak", `agent ${i.pid}: ${p}`);
  return {
    ...base,
    fds,
    rssMiB,
    verdict:
      problems.length === 0 ? `flat (bounds: fds ≤ ${fdBound}, RSS ≤ ${rssBound} MiB)` : problems.join("; "),
  };
}

/** pino's levels, by label (the agent logs labels) and number. */
const LEVELS: Readonly<Record<string, number>> = {
  trace: 10,
  debug: 20,
  info: 30,
  warn: 40,
  error: 50,
  fatal: 60,
};

const CRASH =
  /uncaught|unhandled|triggerUncaughtException|FATAL ERROR|Segmentation fault|heap out of memory/i;

/** Error-level log lines by message; crash traces are violations. */
async function scanLogs(w: World): Promise<Map<string, number>> {
  const errors = new Map<string, number>();
  for (const i of w.incarnations) {
    const text = await readFile(i.logFile, "utf8").catch(() => "");
    for (const line of text.split("\n")) {
      if (line.trim() === "") continue;
      let rec: { level?: number | string; msg?: string } | undefined;
      try {
        rec = JSON.parse(line) as { level?: number | string; msg?: string };
      } catch {
        rec = undefined;
      }
      if (rec === undefined) {
        if (CRASH.test(line)) w.ledger.violate("crash", `agent ${i.pid} log: ${line.slice(0, 200)}`);
        continue;
      }
      const level = typeof rec.level === "number" ? rec.level : (LEVELS[rec.level ?? ""] ?? 0);
      if (level >= 60) w.ledger.violate("crash", `agent ${i.pid} fatal: ${rec.msg ?? line.slice(0, 200)}`);
      if (level >= 50) errors.set(rec.msg ?? "?", (errors.get(rec.msg ?? "?") ?? 0) + 1);
    }
    w.ledger.checked("crash");
  }
  return errors;
}
