/**
 * The fan-out ladder of the `console` section: for each watcher count, grow the watchers of both
 * servers to it and measure mount/unmount triggers on each (`console-fanout.ts` does one trigger).
 * The ladder stops after the first step at which the console misses the goal, or when the next step
 * would not fit in the section's time budget.
 */
import { availableParallelism } from "node:os";
import {
  Control,
  WatcherPool,
  deliverOnce,
  openFileLimit,
  socketsPerProcess,
  type Delivery,
} from "./console-fanout.js";
import {
  DISTURBED_CORES,
  GOAL_DELIVERY_MS,
  stepPasses,
  worstMs,
  type FanoutRun,
  type Subject,
} from "./console-report.js";
import { otherLoad, readMachineCpu } from "./machine.js";
import type { BenchContext } from "./report.js";
import { sampleDelta, type ServerChild } from "./server-child.js";

export interface LadderPlan {
  /** Watcher counts, smallest first. */
  readonly steps: readonly number[];
  /** Unmeasured mount/unmount pairs at each step, before the measured ones. */
  readonly warmupPairs: number;
  readonly pairs: number;
  /** How long a trigger may take to reach every watcher before they count as missing it. */
  readonly timeoutMs: number;
  /** The section's whole time budget, for messages. */
  readonly budgetMs: number;
}

const SUBJECTS: readonly Subject[] = ["baseline", "console"];

const fmtCores = (v: number | undefined): string => (v === undefined ? "n/a" : v.toFixed(2));

/** Warm-up pairs, then measured pairs of mount/unmount on `subject`, with CPU accounting. */
async function measureStep(
  ctx: BenchContext,
  plan: LadderPlan,
  pool: WatcherPool,
  control: Control,
  server: ServerChild,
  watchers: number,
  names: () => string,
): Promise<FanoutRun> {
  const pair = async (): Promise<Delivery[]> => {
    const name = names();
    const out: Delivery[] = [];
    for (const final of ["mounted", "removed"] as const) {
      const d = await deliverOnce(pool, control, name, final, plan.timeoutMs);
      out.push(d);
      // A watcher that misses one event (dropped, timed out) fails the step; more triggers add nothing.
      if (d.missing > 0) break;
    }
    return out;
  };
  for (let i = 0; i < plan.warmupPairs; i++) await pair();
  const machine0 = readMachineCpu();
  const server0 = await server.sample();
  const clients0 = await pool.cpuMs();
  const own0 = process.cpuUsage();
  const t0 = performance.now();
  const deliveries: Delivery[] = [];
  for (let i = 0; i < plan.pairs; i++) {
    const d = await pair();
    deliveries.push(...d);
    if (d.some((x) => x.missing > 0)) break;
  }
  const wallMs = performance.now() - t0;
  const own = process.cpuUsage(own0);
  const clients1 = await pool.cpuMs();
  const server1 = await server.sample();
  const machine1 = readMachineCpu();
  const { cpuMs } = sampleDelta(server0, server1);
  const clientCpuMs = clients1 - clients0;
  const other = otherLoad(machine0, machine1, cpuMs + clientCpuMs + (own.user + own.system) / 1000, wallMs);
  const run: FanoutRun = {
    subject: control.subject,
    watchers,
    deliveries,
    serverCpuMs: cpuMs,
    clientCpuMs,
    otherCores: other,
    disturbed: (other ?? 0) > DISTURBED_CORES,
  };
  ctx.progress(
    `  ${String(watchers).padStart(5)} watchers ${control.subject.padEnd(8)} last watcher ` +
      `${deliveries.map((d) => (Number.isFinite(d.allMs) ? d.allMs.toFixed(1) : "never")).join(", ")} ms  ` +
      (control.subject === "console"
        ? `reconciler ${deliveries.map((d) => d.controlMs?.toFixed(1) ?? "?").join(", ")} ms  `
        : "") +
      `server ${(cpuMs / Math.max(1, deliveries.length)).toFixed(1)} ms CPU/trigger  others ${fmtCores(other)} cores` +
      (deliveries.some((d) => d.missing > 0)
        ? `  MISSED by ${Math.max(...deliveries.map((d) => d.missing))} watchers`
        : ""),
  );
  return run;
}

export async function fanout(
  ctx: BenchContext,
  plan: LadderPlan,
  servers: ReadonlyMap<Subject, ServerChild>,
  ca: string,
  deadline: number,
): Promise<{ runs: FanoutRun[]; steps: number[]; processes: number; stoppedEarly?: string }> {
  const limit = openFileLimit();
  const perProcess = socketsPerProcess(limit);
  // The server holds one subject's watchers; each watcher process its share of both subjects'.
  const steps = plan.steps.filter((w) => w + 1 <= perProcess);
  const top = steps.at(-1) ?? 0;
  const processes = Math.max(Math.min(2, availableParallelism()), Math.ceil((2 * top) / perProcess));
  let stoppedEarly =
    steps.length < plan.steps.length
      ? `the open-file limit (${limit}) leaves room for ${perProcess} connections per process`
      : undefined;
  ctx.progress(`starting ${processes} watcher processes (open-file limit ${limit ?? "unknown"})`);
  const pool = await WatcherPool.start(processes, ctx.defer);
  const controls = new Map<Subject, Control>();
  for (const s of SUBJECTS) {
    const c = await Control.open(s, servers.get(s)!.port, ca);
    ctx.defer(() => c.close());
    controls.set(s, c);
  }
  let n = 0;
  const names = (): string => `e${++n}`;
  const runs: FanoutRun[] = [];
  let lastStepMs = 0;
  try {
    for (const [i, w] of steps.entries()) {
      // The next step has about twice the watchers of the last: allow twice its time.
      if (i > 0 && performance.now() + 2 * lastStepMs > deadline) {
        stoppedEarly = `the next step (${w} watchers) would not fit in the section's ${plan.budgetMs / 1000} s budget`;
        break;
      }
      const stepStart = performance.now();
      let consoleFailed = false;
      for (const s of SUBJECTS) {
        const server = servers.get(s)!;
        const t = performance.now();
        await pool.grow(s, server.port, ca, w);
        ctx.progress(
          `  ${String(w).padStart(5)} watchers ${s.padEnd(8)} open (${((performance.now() - t) / 1000).toFixed(1)} s)`,
        );
        for (let attempt = 0; ; attempt++) {
          const t0 = performance.now();
          const run = await measureStep(ctx, plan, pool, controls.get(s)!, server, w, names);
          runs.push(run);
          if (s === "console" && !stepPasses(run)) consoleFailed = true;
          const fits = 2 * performance.now() - t0 <= deadline;
          if (!run.disturbed || attempt >= 1 || !fits) break;
          ctx.progress(`  other processes took ${fmtCores(run.otherCores)} cores; measuring again`);
        }
      }
      lastStepMs = performance.now() - stepStart;
      if (consoleFailed) {
        const r = runs.filter((x) => x.subject === "console" && x.watchers === w).at(-1)!;
        if (i < steps.length - 1)
          stoppedEarly = `the console missed the ${GOAL_DELIVERY_MS} ms goal at ${w} watchers (worst ${worstMs(r).toFixed(0)} ms)`;
        break;
      }
    }
  } finally {
    for (const c of controls.values()) c.close();
    await pool.stop();
  }
  return { runs, steps, processes, ...(stoppedEarly !== undefined ? { stoppedEarly } : {}) };
}
