/**
 * Part 3 of the `agent` section: the node side (unprivileged agent + privileged mounter) with many
 * local pods. Pods here are pod files that went through the webhook's patch (`injectedPod`) plus
 * their host directory, as the kubelet would create it (hostPath `DirectoryOrCreate`); no container
 * runs, since nothing reads through them.
 *
 * 1. idle: the agent with 0 pods (and the mounter it asks, with no client), their resident memory
 *    over `idleMs` (the baseline);
 * 2. cold start: `pods` pod files with 3 entries each are written while no agent runs and nothing
 *    is mounted; from the agent's start until every pod's status file reads `mounted` for all 3;
 * 3. agent restarts: the agent is stopped (SIGTERM, then in a second run SIGKILL) while the mounter
 *    and its clients keep running, the status files are removed, and a new agent is started; from
 *    its start until every status file reads `mounted` again. The mounter's clients (mount point →
 *    pid, over its socket) and the mounts' ids in mountinfo are compared before and after: any
 *    difference is a remount.
 * Memory is each process's own `VmRSS` (the highest over `steadyMs` after the reconcile, and the
 * highest sum of the two taken at the same instant) and `VmHWM`, from `/proc/<pid>/status`.
 */
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { stagingDir } from "../agent/mount/host.js";
import { isFuse, mountsUnder } from "../agent/mount/mountinfo.js";
import type { NamespacedProcess } from "../scripts/lib/namespaces.js";
import { readMountinfo } from "../scripts/lib/namespaces.js";
import type { LocalNode } from "../scripts/lib/local-node.js";
import { injectedPod, podIdOf } from "../scripts/lib/pods.js";
import { podDir, VOLUME_NAME } from "../shared/names.js";
import {
  childrenOf,
  now,
  openCpuWindow,
  processCpuMs,
  processesMentioning,
  processIdentity,
  processMemory,
  readsAs,
  sleep,
  type ProcessMemory,
} from "./agent-support.js";
import type { BenchContext } from "./report.js";

export const SCALE_NAMESPACE = "scale";
export const SCALE_BUCKETS = ["scale-a", "scale-b", "scale-c"] as const;
export const SCALE_FILE = "a.txt";
export const SCALE_CONTENT = "scale\n";

export interface ScalePlan {
  readonly pods: number;
  /** `--concurrency` of the agent. */
  readonly concurrency: number;
  /** The idle agent (0 pods) is watched for this long; longer than the resync period, so one resync counts. */
  readonly idleMs: number;
  /** After a reconcile the processes are watched for this long (likewise), keeping the highest VmRSS. */
  readonly steadyMs: number;
  /** A reconcile that takes longer is reported as not finished. */
  readonly timeoutMs: number;
}

/** One process over a window of time. */
export interface ProcessWindow {
  /** Highest VmRSS seen over the window, KiB. */
  readonly rssKiB: number;
  /** RssAnon and RssFile of that sample, KiB. */
  readonly anonKiB: number;
  readonly fileKiB: number;
  /** VmHWM (peak RSS since start) at the end of the window, KiB. */
  readonly hwmKiB: number;
  /** CPU the process used over the window, in percent of one core. */
  readonly cpuPct: number;
}

/** The agent and the mounter over the same window. */
export interface NodeMemory {
  readonly agent: ProcessWindow;
  readonly mounter: ProcessWindow;
  /**
   * Highest agent + mounter memory of samples taken at the same instant, KiB: both anonymous RSS
   * plus the larger file-backed RSS (the same node binary, shared).
   */
  readonly sumKiB: number;
}

export type ScaleKind = "cold" | "restart-term" | "restart-kill";

/** Remounts across an agent restart: the mounter's clients and the FUSE mounts before and after. */
export interface RemountCheck {
  /** Clients the mounter reported before the agent was stopped. */
  readonly clientsBefore: number;
  readonly clientsAfter: number;
  /** Mount points whose client pid changed, appeared or went away. */
  readonly clientChanges: number;
  /** FUSE mounts under the root before the agent was stopped. */
  readonly mountsBefore: number;
  /** Mount points whose mount id changed, appeared or went away. */
  readonly mountChanges: number;
  /** Mount points with either kind of change: the remounts. */
  readonly remounts: number;
}

export interface ScaleRun {
  readonly kind: ScaleKind;
  /** From spawning the agent to its "agent started" log line. */
  readonly startedMs: number;
  /** From spawning the agent to every status reading mounted; undefined when it timed out. */
  readonly reconcileMs: number | undefined;
  readonly mounted: number;
  readonly failedSeen: number;
  /** One status error seen while waiting, if any. */
  readonly error: string | undefined;
  readonly memory: NodeMemory;
  /** CPU of the agent process (and its reaped children) from its start to the end of the reconcile. */
  readonly agentCpuMs: number;
  /** CPU of the mounter (and its reaped children) over the same time. */
  readonly mounterCpuMs: number;
  readonly otherCores: number | undefined;
  /** FUSE clients serving this node's pods, and their summed VmRSS. */
  readonly clients: number;
  readonly clientsRssKiB: number;
  /** Restarts only. */
  readonly remounts?: RemountCheck;
}

export interface ScaleResult {
  readonly plan: ScalePlan;
  readonly idle: NodeMemory;
  /** What the agent's and the mounter's pids run (`/proc/<pid>/exe`), to show they are node itself. */
  readonly agentExe: string;
  readonly mounterExe: string;
  /** Children of the agent (it should have none), with their VmRSS. */
  readonly helpers: ReadonlyArray<{ exe: string; rssKiB: number }>;
  readonly cold: ScaleRun;
  readonly restarts: readonly ScaleRun[];
  /** The mounter's pid was the same from the idle start to the end (it was never restarted). */
  readonly mounterKept: boolean;
  /** Pods whose mounts were read through on the host after the restarts, all correct. */
  readonly spotChecked: number;
}
function podNames(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `p-${String(i).padStart(3, "0")}`);
}

/** Writes admitted pod files (atomically) and creates their host directories; no containers. */
async function writePods(node: LocalNode, names: readonly string[]): Promise<Map<string, string>> {
  const dirs = new Map<string, string>();
  for (const name of names) {
    const pod = injectedPod(
      { namespace: SCALE_NAMESPACE, name, buckets: SCALE_BUCKETS.join(",") },
      { root: node.root, signingKey: node.signingKey },
    );
    const hostPath =
      pod.spec.volumes.find((v) => v.name === VOLUME_NAME)?.hostPath?.path ?? podDir(node.root, podIdOf(pod));
    await mkdir(hostPath, { recursive: true });
    const tmp = join(node.podsDir, `.${name}.json.tmp`);
    await writeFile(tmp, `${JSON.stringify(pod, null, 2)}\n`);
    await rename(tmp, join(node.podsDir, `${name}.json`));
    dirs.set(name, hostPath);
  }
  return dirs;
}

/** How many pods read mounted for every entry, how many entries read failed, and one failure message. */
async function countMounted(
  node: LocalNode,
  names: readonly string[],
): Promise<{ mounted: number; failed: number; error: string | undefined }> {
  let mounted = 0;
  let failed = 0;
  let error: string | undefined;
  for (const name of names) {
    const text = await readFile(join(node.podsDir, `${name}.status.json`), "utf8").catch(() => "{}");
    let status: Record<string, { state?: string; error?: string }> = {};
    try {
      status = JSON.parse(text) as typeof status;
    } catch {
      /* being replaced */
    }
    if (SCALE_BUCKETS.every((b) => status[b]?.state === "mounted")) mounted++;
    for (const entry of Object.values(status))
      if (entry.state === "failed") {
        failed++;
        error ??= entry.error;
      }
  }
  return { mounted, failed, error };
}

/** Samples the agent and the mounter every 250 ms for `ms`, at the same instants. */
async function sampleMemory(agentPid: number, mounterPid: number, ms: number): Promise<NodeMemory> {
  const pids = [agentPid, mounterPid] as const;
  const top: Array<ProcessMemory | undefined> = [undefined, undefined];
  const last: Array<ProcessMemory | undefined> = [undefined, undefined];
  let sumKiB = Number.NaN;
  const cpu0 = await Promise.all(pids.map(async (pid) => (await processCpuMs(pid)) ?? 0));
  const t0 = now();
  do {
    await sleep(250);
    const got = await Promise.all(pids.map((pid) => processMemory(pid)));
    got.forEach((m, i) => {
      if (m === undefined) return;
      last[i] = m;
      if (m.rssKiB > (top[i]?.rssKiB ?? -1)) top[i] = m;
    });
    if (got[0] !== undefined && got[1] !== undefined) {
      // Both processes run the same node binary, whose pages the page cache holds once: their
      // file-backed RSS is counted once, their anonymous RSS (heap, malloc) for each.
      const sum = got[0].anonKiB + got[1].anonKiB + Math.max(got[0].fileKiB, got[1].fileKiB);
      if (!(sum <= sumKiB)) sumKiB = sum;
    }
  } while (now() - t0 < ms);
  const elapsed = now() - t0;
  const window = async (i: 0 | 1): Promise<ProcessWindow> => {
    const cpuPct = ((((await processCpuMs(pids[i])) ?? cpu0[i]!) - cpu0[i]!) / elapsed) * 100;
    return {
      rssKiB: top[i]?.rssKiB ?? Number.NaN,
      anonKiB: top[i]?.anonKiB ?? Number.NaN,
      fileKiB: top[i]?.fileKiB ?? Number.NaN,
      hwmKiB: last[i]?.hwmKiB ?? Number.NaN,
      cpuPct,
    };
  };
  return { agent: await window(0), mounter: await window(1), sumKiB };
}

async function fuseClients(node: LocalNode): Promise<{ count: number; rssKiB: number }> {
  let count = 0;
  let rssKiB = 0;
  // A client names its staging directory, not the mount point (agent/mount/host.ts).
  for (const pid of await processesMentioning(`${stagingDir(node.root)}/`)) {
    const id = await processIdentity(pid);
    if (id === undefined || !/\/(s3fs|rclone)$/.test(id.exe)) continue;
    count++;
    rssKiB += (await processMemory(pid))?.rssKiB ?? 0;
  }
  return { count, rssKiB };
}

/** What a remount would change: the mounter's client per mount point, and each FUSE mount's id. */
interface MountSnapshot {
  readonly clients: ReadonlyMap<string, number>;
  readonly mountIds: ReadonlyMap<string, number>;
}

async function snapshot(node: LocalNode): Promise<MountSnapshot> {
  const clients = await node.clients();
  const mountIds = new Map(
    mountsUnder(await readMountinfo(), node.root)
      .filter((m) => isFuse(m))
      .map((m) => [m.mountPoint, m.mountId] as const),
  );
  return { clients, mountIds };
}

/** Keys whose value differs between the maps, or that only one of them has. */
function changed(a: ReadonlyMap<string, number>, b: ReadonlyMap<string, number>): Set<string> {
  const out = new Set<string>();
  for (const [k, v] of a) if (b.get(k) !== v) out.add(k);
  for (const k of b.keys()) if (!a.has(k)) out.add(k);
  return out;
}

function compare(before: MountSnapshot, after: MountSnapshot): RemountCheck {
  const c = changed(before.clients, after.clients);
  const m = changed(before.mountIds, after.mountIds);
  return {
    clientsBefore: before.clients.size,
    clientsAfter: after.clients.size,
    clientChanges: c.size,
    mountsBefore: before.mountIds.size,
    mountChanges: m.size,
    remounts: new Set([...c, ...m]).size,
  };
}

/**
 * Runs idle, cold start and two agent restarts (SIGTERM, SIGKILL). `startAgent` starts the node's
 * agent with the given extra flags (the section adds profiling there); the first start also starts
 * the mounter, which then runs to the end.
 */
export async function measureScale(
  ctx: BenchContext,
  node: LocalNode,
  plan: ScalePlan,
  startAgent: (extra: readonly string[]) => Promise<NamespacedProcess>,
): Promise<ScaleResult> {
  const flags = ["--concurrency", String(plan.concurrency)];
  await node.writeSecret(SCALE_NAMESPACE);

  ctx.progress(`  idle agent and mounter, 0 pods, watched for ${plan.idleMs / 1000} s`);
  let agent = await startAgent(flags);
  const mounter = node.mounter;
  if (mounter === undefined || mounter.exitStatus() !== undefined)
    throw new Error("the agent started without a running mounter");
  const idle = await sampleMemory(agent.pid, mounter.pid, plan.idleMs);
  const agentExe = (await processIdentity(agent.pid))?.exe ?? "?";
  const mounterExe = (await processIdentity(mounter.pid))?.exe ?? "?";
  const helpers: Array<{ exe: string; rssKiB: number }> = [];
  for (const child of await childrenOf(agent.pid)) {
    const id = await processIdentity(child);
    if (id !== undefined)
      helpers.push({ exe: id.exe, rssKiB: (await processMemory(child))?.rssKiB ?? Number.NaN });
  }
  await agent.stop(5000);

  const names = podNames(plan.pods);
  const dirs = await writePods(node, names);
  ctx.progress(`  wrote ${names.length} pod files with ${SCALE_BUCKETS.length} entries each`);

  const reconcile = async (kind: ScaleKind, before?: MountSnapshot): Promise<ScaleRun> => {
    const close = await openCpuWindow(node.work);
    const mounterCpu0 = (await processCpuMs(mounter.pid)) ?? Number.NaN;
    const t0 = now();
    agent = await startAgent(flags);
    const startedMs = now() - t0;
    let reconcileMs: number | undefined;
    let counts: Awaited<ReturnType<typeof countMounted>> = { mounted: 0, failed: 0, error: undefined };
    let failedSeen = 0;
    let error: string | undefined;
    let lastReport = t0;
    while (now() - t0 < plan.timeoutMs) {
      counts = await countMounted(node, names);
      failedSeen = Math.max(failedSeen, counts.failed);
      error ??= counts.error;
      if (counts.mounted === names.length) {
        reconcileMs = now() - t0;
        break;
      }
      if (now() - lastReport > 5000) {
        lastReport = now();
        ctx.progress(
          `    ${kind}: ${counts.mounted}/${names.length} pods mounted after ${((now() - t0) / 1000).toFixed(0)} s`,
        );
      }
      await sleep(kind === "cold" ? 200 : 50);
    }
    const agentCpuMs = (await processCpuMs(agent.pid)) ?? Number.NaN;
    const mounterCpuMs = ((await processCpuMs(mounter.pid)) ?? Number.NaN) - mounterCpu0;
    const otherCores = await close();
    const memory = await sampleMemory(agent.pid, mounter.pid, plan.steadyMs);
    const clients = await fuseClients(node);
    // After the steady window: a remount during the new agent's first resync counts too.
    const remounts = before !== undefined ? compare(before, await snapshot(node)) : undefined;
    const run: ScaleRun = {
      kind,
      startedMs,
      reconcileMs,
      mounted: counts.mounted,
      failedSeen,
      error,
      memory,
      agentCpuMs,
      mounterCpuMs,
      otherCores,
      clients: clients.count,
      clientsRssKiB: clients.rssKiB,
      ...(remounts !== undefined ? { remounts } : {}),
    };
    const mb = (kib: number): string => (kib / 1024).toFixed(0);
    ctx.progress(
      `  ${kind}: agent started after ${(startedMs / 1000).toFixed(1)} s, ` +
        `${counts.mounted}/${names.length} pods mounted${error !== undefined ? ` (a status error: ${error})` : ""} after ${reconcileMs !== undefined ? `${(reconcileMs / 1000).toFixed(1)} s` : "the timeout"}; ` +
        `RSS agent ${mb(memory.agent.rssKiB)} MiB (anon ${mb(memory.agent.anonKiB)}, peak ${mb(memory.agent.hwmKiB)}), ` +
        `mounter ${mb(memory.mounter.rssKiB)} MiB (anon ${mb(memory.mounter.anonKiB)}, peak ${mb(memory.mounter.hwmKiB)}), sum ${mb(memory.sumKiB)} MiB; ` +
        `agent/mounter ${memory.agent.cpuPct.toFixed(0)}/${memory.mounter.cpuPct.toFixed(0)}% of a core over the next ${plan.steadyMs / 1000} s, ` +
        `CPU ${(agentCpuMs / 1000).toFixed(1)}/${(mounterCpuMs / 1000).toFixed(1)} s; ${clients.count} clients, ${mb(clients.rssKiB)} MiB; ` +
        `others ${otherCores?.toFixed(2) ?? "n/a"} cores` +
        (remounts !== undefined
          ? `; clients ${remounts.clientsBefore} → ${remounts.clientsAfter}, ${remounts.remounts} remount(s) (${remounts.clientChanges} client pid(s), ${remounts.mountChanges} mount id(s) changed)`
          : ""),
    );
    return run;
  };

  ctx.progress(`  cold start, --concurrency ${plan.concurrency}`);
  const cold = await reconcile("cold");
  const restarts: ScaleRun[] = [];
  for (const [kind, signal] of [
    ["restart-term", "SIGTERM"],
    ["restart-kill", "SIGKILL"],
  ] as const) {
    const before = await snapshot(node);
    if (signal === "SIGTERM") await agent.stop(10_000);
    else {
      agent.kill("SIGKILL");
      await agent.exited;
    }
    for (const name of names) await rm(join(node.podsDir, `${name}.status.json`), { force: true });
    ctx.progress(
      `  ${kind}: agent stopped with ${signal}, mounter and its ${before.clients.size} clients left running, status files removed`,
    );
    restarts.push(await reconcile(kind, before));
  }

  // The mounts must still serve data.
  let spotChecked = 0;
  const sample = restarts.some((r) => r.reconcileMs === undefined)
    ? []
    : names.filter((_, i) => i % Math.max(1, Math.floor(names.length / 10)) === 0);
  for (const name of sample) {
    for (const b of SCALE_BUCKETS) {
      const file = join(dirs.get(name)!, b, SCALE_FILE);
      if (!(await readsAs(file, SCALE_CONTENT)))
        throw new Error(`${file} does not read correctly after the agent restarts`);
    }
    spotChecked++;
  }
  const mounterKept = node.mounter === mounter && mounter.exitStatus() === undefined;
  await agent.stop(10_000);
  return { plan, idle, agentExe, mounterExe, helpers, cold, restarts, mounterKept, spotChecked };
}
