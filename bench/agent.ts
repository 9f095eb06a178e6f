/**
 * The `agent` section, for real (root, /dev/fuse, runc, s3fs, rclone): the agent in local mode on a
 * `LocalNode`, measured against the raw FUSE clients in the same run.
 *
 * 1. Latency (`agent-latency.ts`): a running pod's annotation gains an entry → a seeded file reads
 *    inside its container, against the raw client's own start → readable. Goals with s3fs: ratio of
 *    medians ≤ 1.2 and p90 ≤ 150 ms on loopback; rclone is reported for information.
 * 2. Throughput (`agent-throughput.ts`): a 256 MiB object read through the container's propagated
 *    path against the same mount read on the host. Goal: ratio ≥ 0.98.
 * 3. Scale (`agent-scale.ts`): 200 pods × 3 s3fs mounts: agent + mounter RSS ≤ 150 MiB (both idle
 *    with 0 pods as the baseline), all mounted ≤ 30 s after a cold start, and after an agent
 *    restart (SIGTERM, SIGKILL; the mounter and its clients keep running) all mounted again ≤ 5 s
 *    with no remount.
 *
 * Parts 1–2 share one node; part 3 gets its own. Everything is unmounted, killed and removed when a
 * node is done, and again synchronously (`forceCleanUp`) on failure or SIGINT.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { mountsUnder } from "../agent/mount/mountinfo.js";
import { LocalNode } from "../scripts/lib/local-node.js";
import type { NamespacedProcess } from "../scripts/lib/namespaces.js";
import { readMountinfo } from "../scripts/lib/namespaces.js";
import {
  LATENCY_BUCKET,
  LATENCY_CONTENT,
  LATENCY_FILE,
  measureLatency,
  type LatencyPlan,
} from "./agent-latency.js";
import { buildAgentReport } from "./agent-report.js";
import { measureScale, SCALE_BUCKETS, SCALE_CONTENT, SCALE_FILE, type ScalePlan } from "./agent-scale.js";
import { forceCleanUp, fuseMountsOnHost, reapProcesses } from "./agent-support.js";
import { BIG_BUCKET, BIG_KEY, bigObject, measureThroughput } from "./agent-throughput.js";
import type { BenchContext, Section, SectionReport } from "./report.js";

interface Plan {
  readonly latency: LatencyPlan;
  readonly bigMiB: number;
  readonly throughputRounds: number;
  readonly scale: ScalePlan;
}

const REPO_ROOT = resolve(import.meta.dirname, "..");
const TSC = join(REPO_ROOT, "node_modules", "typescript", "bin", "tsc");

const FULL: Plan = {
  // 30 rounds: single s3fs times spread from about 20 to 40 ms, and with 10 rounds the median
  // moved by 1–2 ms (5–10% of the ratio) from one run to the next.
  latency: { rounds: 30, retries: 2, budgetMs: 240_000, pollMs: 2 },
  bigMiB: 256,
  // Single reads vary by ±10–15%; at 64 rounds the 95% interval of the ratio was about ±2.4%,
  // wider than the 2% the goal asks about.
  throughputRounds: 96,
  // 11 s: one 10 s resync of the agent falls inside every window. Concurrency 4 is the agent's
  // default: the goals hold for the agent as shipped, not as tuned for the benchmark.
  scale: { pods: 200, concurrency: 4, idleMs: 11_000, steadyMs: 11_000, timeoutMs: 180_000 },
};
const QUICK: Plan = {
  latency: { rounds: 2, retries: 0, budgetMs: 0, pollMs: 2 },
  bigMiB: 32,
  throughputRounds: 1,
  scale: { pods: 20, concurrency: 4, idleMs: 2000, steadyMs: 2000, timeoutMs: 60_000 },
};

const NAMESPACE = "bench";
const PODS = { s3fs: "lat-s3fs", rclone: "lat-rclone" } as const;

/**
 * Starts the node's agent (and the mounter first when none runs); with `--cpu-prof=DIR` their node
 * processes write a CPU profile there when they exit.
 */
async function startAgent(
  ctx: BenchContext,
  node: LocalNode,
  extra: readonly string[],
): Promise<NamespacedProcess> {
  if (ctx.cpuProfDir === undefined) return node.startAgent(extra);
  // startInMountNamespace hands the agent this process's environment at spawn time.
  const before = process.env.NODE_OPTIONS;
  process.env.NODE_OPTIONS = `${before ?? ""} --cpu-prof --cpu-prof-dir=${resolve(ctx.cpuProfDir)}`.trim();
  try {
    return await node.startAgent(extra);
  } finally {
    if (before === undefined) delete process.env.NODE_OPTIONS;
    else process.env.NODE_OPTIONS = before;
  }
}

/** Stops the node (agent, mounter, containers, every mount, S3 server, work dir) and kills clients that linger. */
async function stopNode(ctx: BenchContext, node: LocalNode): Promise<{ killed: number; left: string[] }> {
  try {
    await node.stop();
  } catch (e) {
    ctx.progress(`clean-up of ${node.work} was incomplete (${(e as Error).message}); forcing it`);
  }
  const killed = await reapProcesses(node.work, 10_000);
  forceCleanUp(node);
  const left = mountsUnder(await readMountinfo(), node.work).map((m) => m.mountPoint);
  return { killed, left };
}

export const agentSection: Section = {
  name: "agent",
  summary:
    "annotation → data in a running container vs. the raw FUSE client; 256 MiB reads through propagation; 200 pods × 3 mounts",
  async run(ctx: BenchContext): Promise<SectionReport> {
    if (process.getuid?.() !== 0)
      throw new Error("the agent section needs root (mount namespaces, FUSE, runc): run it as root");
    const plan = ctx.quick ? QUICK : FULL;

    // The agent as the image runs it: compiled, without tsx's loader in its memory (tsx adds about
    // 25 MiB of resident memory, and every client the agent starts pays for it in fork time).
    ctx.progress("compiling the agent and the mounter (tsc -p tsconfig.build.json)");
    await promisify(execFile)(process.execPath, [TSC, "-p", "tsconfig.build.json"], { cwd: REPO_ROOT });
    const agentEntry = join(REPO_ROOT, "dist", "agent", "main.js");

    ctx.progress("starting the S3 server, two runc pods, the mounter and the agent");
    const node = await LocalNode.start({
      agentEntry,
      prefix: "dv-bench-agent-",
      buckets: { [LATENCY_BUCKET]: { [LATENCY_FILE]: LATENCY_CONTENT }, [BIG_BUCKET]: {} },
      agentArgs: ["--log-level", "debug"],
      // The FUSE engine, and its "client started" line, run in the mounter.
      mounterArgs: ["--log-level", "debug"],
    });
    ctx.defer(() => forceCleanUp(node));
    let latency: Awaited<ReturnType<typeof measureLatency>>;
    let throughput: Awaited<ReturnType<typeof measureThroughput>>;
    let killedClients = 0;
    const ourLeftovers: string[] = [];
    try {
      await node.writeSecret(NAMESPACE);
      for (const [mounter, name] of Object.entries(PODS))
        await node.addPod({ namespace: NAMESPACE, name, mounter });
      await startAgent(ctx, node, []);
      ctx.progress(`latency: ${plan.latency.rounds} rounds of raw client vs. agent, s3fs and rclone`);
      latency = await measureLatency(ctx, node, PODS, plan.latency);
      // Only now: a 256 MiB buffer in this process would slow every fork it makes.
      ctx.progress(`throughput: seeding a ${plan.bigMiB} MiB object with one PutObject`);
      const big = bigObject(plan.bigMiB * 1024 * 1024, randomBytes(1024 * 1024));
      await node.s3.put(BIG_BUCKET, BIG_KEY, big);
      ctx.progress(`throughput: ${plan.throughputRounds} rounds, container path vs. host path`);
      throughput = await measureThroughput(ctx, node, PODS.s3fs, big, { rounds: plan.throughputRounds });
    } finally {
      const r = await stopNode(ctx, node);
      killedClients += r.killed;
      ourLeftovers.push(...r.left);
    }

    ctx.progress(`scale: ${plan.scale.pods} pods × ${SCALE_BUCKETS.length} s3fs mounts`);
    const files = { [SCALE_FILE]: SCALE_CONTENT };
    const scaleNode = await LocalNode.start({
      agentEntry,
      prefix: "dv-bench-scale-",
      buckets: Object.fromEntries(SCALE_BUCKETS.map((b) => [b, files])),
    });
    ctx.defer(() => forceCleanUp(scaleNode));
    let scale: Awaited<ReturnType<typeof measureScale>>;
    try {
      scale = await measureScale(ctx, scaleNode, plan.scale, (extra) => startAgent(ctx, scaleNode, extra));
    } finally {
      ctx.progress("scale: unmounting everything");
      const r = await stopNode(ctx, scaleNode);
      killedClients += r.killed;
      ourLeftovers.push(...r.left);
    }

    return buildAgentReport({
      latencyPlan: plan.latency,
      latency,
      throughputRounds: plan.throughputRounds,
      throughput,
      scale,
      leftoverMounts: fuseMountsOnHost(),
      ourLeftovers,
      killedClients,
      ...(ctx.cpuProfDir !== undefined ? { cpuProfDir: ctx.cpuProfDir } : {}),
    });
  },
};
