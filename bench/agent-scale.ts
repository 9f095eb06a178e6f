/**
 * Part 3 of the `agent` section: the agent with many local pods. Pods here are pod files that went
 * through the webhook's patch (`injectedPod`) plus their host directory, as the kubelet would create
 * it (hostPath `DirectoryOrCreate`); no container runs, since nothing reads through them.
 *
 * 1. idle: the agent with 0 pods, its resident memory after `idleMs` (the baseline);
 * 2. cold start: `pods` pod files with 3 entries each are written while no agent runs and nothing
 *    is mounted; from the agent's start until every pod's status file reads `mounted` for all 3;
 * 3. adoption: the agent is stopped (mounts and clients stay), the status files are removed, and a
 *    new agent is started; from its start until every status file reads `mounted` again.
 * Memory is the agent process's own `VmRSS` (its highest over `steadyMs` after the reconcile) and
 * `VmHWM`, from `/proc/<pid>/status`.
 */
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { stagingDir } from "../agent/mount/host.js";
import type { NamespacedProcess } from "../scripts/lib/namespaces.js";
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
  /** After a reconcile the agent is watched for this long (likewise), keeping the highest VmRSS. */
  readonly steadyMs: number;
  /** A reconcile that takes longer is reported as not finished. */
  readonly timeoutMs: number;
}

/** The agent process over a window of time. */
export interface AgentMemory {
  /** Highest VmRSS seen over the window, KiB. */
  readonly rssKiB: number;
  /** RssAnon and RssFile of that sample, KiB. */
  readonly anonKiB: number;
  readonly fileKiB: number;
  /** VmHWM (peak RSS since start) at the end of the window, KiB. */
  readonly hwmKiB: number;
  /** CPU the agent used over the window, in percent of one core. */
  readonly cpuPct: number;
}

export interface ScaleRun {
  readonly kind: "cold" | "adoption";
  /** From spawning the agent to its "agent started" log line. */
  readonly startedMs: number;
  /** From spawning the agent to every status reading mounted; undefined when it timed out. */
  readonly reconcileMs: number | undefined;
  readonly mounted: number;
  readonly failedSeen: number;
  /** One status error seen while waiting, if any. */
  readonly error: string | undefined;
  readonly memory: AgentMemory;
  /** CPU of the agent process (and its reaped children) from its start to the end of the reconcile. */
  readonly agentCpuMs: number;
  readonly otherCores: number | undefined;
  /** FUSE clients serving this node's pods, and their summed VmRSS. */
  readonly clients: number;
  readonly clientsRssKiB: number;
}

export interface ScaleResult {
  readonly plan: ScalePlan;
  readonly idle: AgentMemory;
  /** What the agent's pid runs (`/proc/<pid>/exe`), to show it is node itself and not a wrapper. */
  readonly agentExe: string;
  /** Children of the agent that are not FUSE clients (e.g. tsx's esbuild service), with their VmRSS. */
  readonly helpers: ReadonlyArray<{ exe: string; rssKiB: number }>;
  readonly cold: ScaleRun;
  readonly adoption: ScaleRun;
  /** Pods whose mounts were read through on the host after the adoption, all correct. */
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

async function sampleMemory(pid: number, ms: number): Promise<AgentMemory> {
  let top: ProcessMemory | undefined;
  let last: ProcessMemory | undefined;
  const cpu0 = (await processCpuMs(pid)) ?? 0;
  const t0 = now();
  do {
    await sleep(250);
    last = (await processMemory(pid)) ?? last;
    if (last !== undefined && last.rssKiB > (top?.rssKiB ?? -1)) top = last;
  } while (now() - t0 < ms);
  const cpuPct = ((((await processCpuMs(pid)) ?? cpu0) - cpu0) / (now() - t0)) * 100;
  return {
    rssKiB: top?.rssKiB ?? Number.NaN,
    anonKiB: top?.anonKiB ?? Number.NaN,
    fileKiB: top?.fileKiB ?? Number.NaN,
    hwmKiB: last?.hwmKiB ?? Number.NaN,
    cpuPct,
  };
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

/**
 * Runs idle, cold start and adoption. `startAgent` starts the node's agent with the given extra
 * flags (the section adds profiling there).
 */
export async function measureScale(
  ctx: BenchContext,
  node: LocalNode,
  plan: ScalePlan,
  startAgent: (extra: readonly string[]) => Promise<NamespacedProcess>,
): Promise<ScaleResult> {
  const flags = ["--concurrency", String(plan.concurrency)];
  await node.writeSecret(SCALE_NAMESPACE);

  ctx.progress(`  idle agent, 0 pods, watched for ${plan.idleMs / 1000} s`);
  let agent = await startAgent(flags);
  const idle = await sampleMemory(agent.pid, plan.idleMs);
  const agentExe = (await processIdentity(agent.pid))?.exe ?? "?";
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

  const reconcile = async (kind: ScaleRun["kind"]): Promise<ScaleRun> => {
    const close = await openCpuWindow(node.work);
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
      await sleep(200);
    }
    const agentCpuMs = (await processCpuMs(agent.pid)) ?? Number.NaN;
    const otherCores = await close();
    const memory = await sampleMemory(agent.pid, plan.steadyMs);
    const clients = await fuseClients(node);
    const run: ScaleRun = {
      kind,
      startedMs,
      reconcileMs,
      mounted: counts.mounted,
      failedSeen,
      error,
      memory,
      agentCpuMs,
      otherCores,
      clients: clients.count,
      clientsRssKiB: clients.rssKiB,
    };
    ctx.progress(
      `  ${kind}: agent started after ${(startedMs / 1000).toFixed(1)} s, ` +
        `${counts.mounted}/${names.length} pods mounted${error !== undefined ? ` (a status error: ${error})` : ""} after ${reconcileMs !== undefined ? `${(reconcileMs / 1000).toFixed(1)} s` : "the timeout"}; ` +
        `agent RSS ${(memory.rssKiB / 1024).toFixed(0)} MiB (anon ${(memory.anonKiB / 1024).toFixed(0)}, peak ${(memory.hwmKiB / 1024).toFixed(0)}), ` +
        `${memory.cpuPct.toFixed(0)}% of a core over the next ${plan.steadyMs / 1000} s, ` +
        `CPU ${(agentCpuMs / 1000).toFixed(1)} s; ${clients.count} clients, ${(clients.rssKiB / 1024).toFixed(0)} MiB; ` +
        `others ${otherCores?.toFixed(2) ?? "n/a"} cores`,
    );
    return run;
  };

  ctx.progress(`  cold start, --concurrency ${plan.concurrency}`);
  const cold = await reconcile("cold");
  await agent.stop(10_000);
  for (const name of names) await rm(join(node.podsDir, `${name}.status.json`), { force: true });
  ctx.progress("  adoption: agent stopped, mounts left in place, status files removed");
  const adoption = await reconcile("adoption");

  // The adopted mounts must still serve data.
  let spotChecked = 0;
  const sample =
    adoption.reconcileMs === undefined
      ? []
      : names.filter((_, i) => i % Math.max(1, Math.floor(names.length / 10)) === 0);
  for (const name of sample) {
    for (const b of SCALE_BUCKETS) {
      const file = join(dirs.get(name)!, b, SCALE_FILE);
      if (!(await readsAs(file, SCALE_CONTENT)))
        throw new Error(`${file} does not read correctly after adoption`);
    }
    spotChecked++;
  }
  await agent.stop(10_000);
  return { plan, idle, agentExe, helpers, cold, adoption, spotChecked };
}
