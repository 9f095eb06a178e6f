/**
 * The `webhook` section: sustained throughput and p50/p99 latency of `POST /mutate` over HTTPS
 * keep-alive at 16 connections, side by side with a baseline (the same express + HTTPS stack
 * answering a constant AdmissionReview), each server in its own child process. Each round runs
 * both servers, in an order that alternates from round to round (AB BA AB ...), and the throughput
 * ratio is the median of the rounds' own ratios:
 * this machine's speed drifts by ±15% over tens of seconds, and a ratio of two runs seconds apart
 * cancels that drift where a ratio of two separately taken medians does not.
 * A run during which other processes took more than {@link DISTURBED_CORES} of CPU (other engineers'
 * test runs on the same machine) is measured again while the time budget allows, and left out of
 * the median when clean runs exist.
 *
 * Goals: throughput ratio (webhook / baseline) ≥ 0.8, and webhook p99 ≤ 5 ms on the 2-core machine.
 */
import { randomUUID } from "node:crypto";
import { availableParallelism } from "node:os";
import { admissionReview, deploymentPod } from "../test/fixtures/pods.js";
import {
  keepAliveAgent,
  percentile,
  runLoad,
  throughput,
  type Exchange,
  type LoadResult,
  type ReplyCheck,
  type Target,
} from "./load.js";
import { allowedCpus, otherLoad, pinThreads, readMachineCpu } from "./machine.js";
import { makeBenchPki } from "./pki.js";
import type { BenchContext, MetricRow, Section, SectionReport } from "./report.js";
import { sampleDelta, spawnServer, type ServerChild } from "./server-child.js";

const CONNECTIONS = 16;
const GOAL_RATIO = 0.8;
const GOAL_P99_MS = 5;
/** A run during which other processes (or hypervisor steal) took more CPU than this, in cores, is measured again. */
const DISTURBED_CORES = 0.2;

interface Plan {
  /** Warm-up before a server's first run (JIT, connections), then before each later run. */
  readonly firstWarmupMs: number;
  readonly warmupMs: number;
  readonly measureMs: number;
  readonly rounds: number;
  /** Extra runs allowed for one disturbed slot. */
  readonly retries: number;
  /** All runs, retries included, fit in this; a retry only starts when the planned runs still fit after it. */
  readonly budgetMs: number;
}

/**
 * 18 rounds × 2 servers ≈ 93 s, plus retries within a 130 s budget. Many short rounds rather than
 * a few long ones: on this machine one round's ratio varies by ±30% whatever the run's length (runs
 * of 0.2 s and 1 s alternating side by side spread alike), so only the number of rounds narrows
 * the median.
 */
const FULL: Plan = {
  firstWarmupMs: 2_000,
  warmupMs: 500,
  measureMs: 2_000,
  rounds: 18,
  retries: 2,
  budgetMs: 130_000,
};
const QUICK: Plan = {
  firstWarmupMs: 500,
  warmupMs: 300,
  measureMs: 1_500,
  rounds: 1,
  retries: 0,
  budgetMs: 0,
};
const SERVER_ENTRY = "bench/webhook-server.ts";

type Subject = "baseline" | "webhook";
const SUBJECTS: readonly Subject[] = ["baseline", "webhook"];

/**
 * Odd rounds run the baseline first, even rounds the webhook: the machine's speed drifts within a
 * round too, and a fixed order would hand the drift to one server every time.
 */
function roundOrder(round: number): readonly Subject[] {
  return round % 2 === 1 ? SUBJECTS : [...SUBJECTS].reverse();
}

interface Run {
  readonly subject: Subject;
  readonly round: number;
  readonly load: LoadResult;
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  /** Server CPU (user + system) over the measurement, in ms. */
  readonly serverCpuMs: number;
  /** Server event-loop utilization over the measurement, 0..1. */
  readonly serverElu: number;
  /** CPU that was not ours during the measurement (other processes, steal), in cores; undefined off Linux. */
  readonly otherCores: number | undefined;
  readonly disturbed: boolean;
}

/**
 * Request bodies: the AdmissionReview of a Deployment's pod, serialized once, with a fresh uid
 * spliced in per request (the API server never repeats one).
 */
function exchanges(): { next: () => Exchange; bytes: number } {
  const placeholder = "00000000-0000-4000-8000-000000000000";
  const text = JSON.stringify(admissionReview(deploymentPod(), { uid: placeholder }));
  const [head, tail, ...rest] = text.split(placeholder);
  if (head === undefined || tail === undefined || rest.length > 0)
    throw new Error("the uid placeholder must occur exactly once in the AdmissionReview");
  const before = Buffer.from(head);
  const after = Buffer.from(tail);
  return {
    bytes: Buffer.byteLength(text),
    next: () => {
      const uid = randomUUID();
      return { uid, body: Buffer.concat([before, Buffer.from(uid), after]) };
    },
  };
}

/** Status 200, `response.uid` echoed, allowed, a non-empty JSONPatch: the same checks for both servers. */
function replyCheck(): ReplyCheck {
  return (status, text, uid) => {
    if (status !== 200) return `HTTP ${status}: ${text.slice(0, 300)}`;
    let review: { response?: { uid?: unknown; allowed?: unknown; patchType?: unknown; patch?: unknown } };
    try {
      review = JSON.parse(text) as typeof review;
    } catch {
      return `the reply is not JSON: ${text.slice(0, 300)}`;
    }
    const r = review.response;
    if (r?.uid !== uid) return `response.uid ${JSON.stringify(r?.uid)} does not echo the request's ${uid}`;
    if (r.allowed !== true) return `the pod was not allowed: ${text.slice(0, 300)}`;
    if (r.patchType !== "JSONPatch" || typeof r.patch !== "string" || r.patch === "")
      return `no JSONPatch in the reply: ${text.slice(0, 300)}`;
    return undefined;
  };
}

const fmt = {
  rps: (v: number) => v.toFixed(0),
  ms: (v: number) => v.toFixed(2),
  ratio: (v: number) => v.toFixed(3),
  pct: (v: number) => `${(v * 100).toFixed(0)}%`,
  us: (v: number) => v.toFixed(0),
  cores: (v: number | undefined) => (v === undefined ? "n/a" : v.toFixed(2)),
};

async function measure(
  ctx: BenchContext,
  subject: Subject,
  round: number,
  server: ServerChild,
  caPem: string,
  warmupMs: number,
  measureMs: number,
  next: () => Exchange,
): Promise<Run> {
  const target: Target = { port: server.port, path: "/mutate", ca: caPem, connections: CONNECTIONS };
  const agent = keepAliveAgent(target);
  try {
    const check = replyCheck();
    const warm = await runLoad(agent, target, warmupMs, next, check);
    const machine0 = readMachineCpu();
    const server0 = await server.sample();
    const load = await runLoad(agent, target, measureMs, next, check);
    const server1 = await server.sample();
    const machine1 = readMachineCpu();
    const { cpuMs, elu } = sampleDelta(server0, server1);
    const other = otherLoad(machine0, machine1, cpuMs + load.clientCpuMs, load.elapsedMs);
    // Warm-up errors count too: a broken reply is a broken run whenever it happens.
    const merged: LoadResult = {
      ...load,
      errors: load.errors + warm.errors,
      errorSamples: [...warm.errorSamples, ...load.errorSamples].slice(0, 3),
    };
    const run: Run = {
      subject,
      round,
      load: merged,
      rps: throughput(load),
      p50: percentile(load.latenciesMs, 50),
      p99: percentile(load.latenciesMs, 99),
      serverCpuMs: cpuMs,
      serverElu: elu,
      otherCores: other,
      disturbed: (other ?? 0) > DISTURBED_CORES,
    };
    ctx.progress(
      `  round ${round} ${subject.padEnd(8)} ${run.rps.toFixed(0).padStart(6)} req/s  ` +
        `p50 ${run.p50.toFixed(2)} ms  p99 ${run.p99.toFixed(2)} ms  ` +
        `server loop ${fmt.pct(elu)} busy  client ${fmt.pct(load.clientCpuMs / load.elapsedMs)}  ` +
        `others ${fmt.cores(run.otherCores)} cores  errors ${merged.errors}`,
    );
    return run;
  } finally {
    agent.destroy();
  }
}

/** The CPU of the load generator (this process) and the one both servers share. */
interface Placement {
  readonly client: number;
  readonly server: number;
}

/**
 * Gives the load generator and the server under test a CPU each, every thread of each, when this
 * process may use two or more; undefined (and nothing pinned) on one CPU. Left to the scheduler, the
 * two busy processes and their helper threads share both cores, and whenever a helper thread wakes,
 * one of the two main threads waits out a time slice with requests in flight: the p99 then measures
 * the scheduler. The load generator's own affinity is restored when the section ends.
 */
function pinning(ctx: BenchContext): Placement | undefined {
  const cpus = allowedCpus(process.pid);
  if (cpus === undefined || cpus.length < 2) {
    ctx.progress("fewer than 2 CPUs to use: the load generator and the servers are not pinned");
    return undefined;
  }
  const placement = { client: cpus[0]!, server: cpus[1]! };
  pinThreads(process.pid, [placement.client]);
  ctx.defer(() => pinThreads(process.pid, cpus));
  ctx.progress(`load generator pinned to CPU ${placement.client}, servers to CPU ${placement.server}`);
  return placement;
}

/** A bad reply means the numbers measure something else than a working webhook: stop loudly. */
function brokenRun(r: Run): Error {
  return new Error(
    `${r.load.errors} bad replies from the ${r.subject} server in round ${r.round}, e.g. ${r.load.errorSamples.join(" | ")}`,
  );
}

function verdict(pass: boolean, disturbed: boolean): string {
  return `${pass ? "PASS" : "FAIL"}${disturbed ? " (disturbed)" : ""}`;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((x, y) => x - y);
  const n = sorted.length;
  if (n === 0) throw new Error("no values to take the median of");
  return n % 2 === 1 ? sorted[n >> 1]! : (sorted[n / 2 - 1]! + sorted[n / 2]!) / 2;
}

/**
 * Each round's baseline and webhook runs, the last attempt of each (a retry replaces a disturbed
 * run). Rounds with a disturbed run are left out when clean rounds exist.
 */
function pairedRounds(runs: readonly Run[]): Array<[Run, Run]> {
  const byRound = new Map<number, { baseline?: Run; webhook?: Run }>();
  for (const r of runs) {
    const slot = byRound.get(r.round) ?? {};
    slot[r.subject] = r;
    byRound.set(r.round, slot);
  }
  const pairs: Array<[Run, Run]> = [];
  for (const { baseline, webhook } of byRound.values())
    if (baseline !== undefined && webhook !== undefined) pairs.push([baseline, webhook]);
  const clean = pairs.filter(([rb, rw]) => !rb.disturbed && !rw.disturbed);
  if (pairs.length === 0) throw new Error("no round has runs of both servers");
  return clean.length > 0 ? clean : pairs;
}

/** The run with the median throughput (the lower middle one for an even count). */
function medianRun(runs: readonly Run[]): Run {
  const sorted = [...runs].sort((a, b) => a.rps - b.rps);
  const m = sorted[(sorted.length - 1) >> 1];
  if (m === undefined) throw new Error("no runs to take the median of");
  return m;
}

function buildReport(
  runs: readonly Run[],
  plan: Plan,
  bodyBytes: number,
  cpuProfDir: string | undefined,
  placement: Placement | undefined,
): SectionReport {
  // Disturbed runs count only when a server has no clean one.
  const pool = (s: Subject): Run[] => {
    const mine = runs.filter((r) => r.subject === s);
    const clean = mine.filter((r) => !r.disturbed);
    return clean.length > 0 ? clean : mine;
  };
  const b = medianRun(pool("baseline"));
  const w = medianRun(pool("webhook"));
  const rounds = pairedRounds(runs);
  const ratio = median(rounds.map(([rb, rw]) => rw.rps / rb.rps));
  const ratioPass = ratio >= GOAL_RATIO;
  const cpuPerReq = (r: Run): number => (r.serverCpuMs * 1000) / (r.load.requests - r.load.errors);
  const cpuRatio = median(rounds.map(([rb, rw]) => cpuPerReq(rw) / cpuPerReq(rb)));
  const p99 = (s: Subject): number => median(pool(s).map((r) => r.p99));
  const p99Pass = p99("webhook") <= GOAL_P99_MS;
  const clientCpu = (r: Run): number => r.load.clientCpuMs / r.load.elapsedMs;
  const total = (s: Subject): string => {
    const mine = runs.filter((r) => r.subject === s);
    const replies = mine.reduce((n, r) => n + r.load.requests, 0);
    const errors = mine.reduce((n, r) => n + r.load.errors, 0);
    return `${replies} (${errors} errors)`;
  };
  const rows: MetricRow[] = [
    {
      metric: "throughput (req/s); ratio: median of the rounds' ratios",
      baseline: fmt.rps(b.rps),
      subject: fmt.rps(w.rps),
      ratio: fmt.ratio(ratio),
      goal: `ratio ≥ ${GOAL_RATIO}`,
      result: verdict(ratioPass, b.disturbed || w.disturbed),
    },
    {
      metric: "p50 latency (ms)",
      baseline: fmt.ms(b.p50),
      subject: fmt.ms(w.p50),
      ratio: fmt.ratio(w.p50 / b.p50),
      goal: "",
      result: "",
    },
    {
      metric: "p99 latency (ms), median of runs",
      baseline: fmt.ms(p99("baseline")),
      subject: fmt.ms(p99("webhook")),
      ratio: fmt.ratio(p99("webhook") / p99("baseline")),
      goal: `dynamic-volumes ≤ ${GOAL_P99_MS} ms`,
      result: verdict(p99Pass, w.disturbed),
    },
    {
      metric: "server CPU per request (µs); ratio: median of the rounds' ratios",
      baseline: fmt.us(cpuPerReq(b)),
      subject: fmt.us(cpuPerReq(w)),
      ratio: fmt.ratio(cpuRatio),
      goal: "",
      result: "",
    },
    {
      metric: "server event loop busy",
      baseline: fmt.pct(b.serverElu),
      subject: fmt.pct(w.serverElu),
      ratio: "",
      goal: "",
      result: "",
    },
    {
      metric: "load generator CPU (of one core)",
      baseline: fmt.pct(clientCpu(b)),
      subject: fmt.pct(clientCpu(w)),
      ratio: "",
      goal: "",
      result: "",
    },
    {
      metric: "CPU taken by others (cores)",
      baseline: fmt.cores(b.otherCores),
      subject: fmt.cores(w.otherCores),
      ratio: "",
      goal: "",
      result: "",
    },
    {
      metric: "replies checked, all runs",
      baseline: total("baseline"),
      subject: total("webhook"),
      ratio: "",
      goal: "",
      result: "",
    },
  ];

  const perRun = (s: Subject): string =>
    runs
      .filter((r) => r.subject === s)
      .map((r) => `${fmt.rps(r.rps)}${r.disturbed ? "*" : ""}`)
      .join(", ");
  const disturbed = runs.filter((r) => r.disturbed).length;
  const notes = [
    `Ratios are dynamic-volumes / baseline. The throughput ratio is the median over the ${rounds.length} rounds of ` +
      "each round's own ratio (the two runs of a round are seconds apart and their order alternates, so drift in the machine's speed cancels); " +
      "the other rows are the median run (by throughput) of each server. Runs marked * below are left out when clean runs exist.",
    `Round ratios: ${rounds.map(([rb, rw]) => fmt.ratio(rw.rps / rb.rps)).join(", ")}.`,
    `Every run, req/s: baseline ${perRun("baseline")}; dynamic-volumes ${perRun("webhook")}. ` +
      `* = disturbed: other processes on the machine (or hypervisor steal) took more than ${DISTURBED_CORES} cores while it measured ` +
      `(${disturbed} of ${runs.length} runs).`,
    "The throughput goal is 0.8, not the earlier 0.9: the webhook now signs with node:crypto's HMAC, checks paths " +
      "with regular expressions, encodes the patch with Buffer and counts with prom-client, where the 0.9 goal had pulled " +
      "in hand-written SHA-256, loops and pre-bound series (0.91–0.94 and p99 4.7–4.9 ms in the last runs with them). " +
      "What the plain code costs is this run's ratio against those.",
    "Where the gap is (a `--cpu-prof` profile of both servers under this load, at 9a3b3b2, scaled to unprofiled CPU" +
      "): of the ~55–65 µs the webhook spends per review beyond the constant responder, minting the id (`randomBytes(" +
      "16)`) takes 12–16 µs, the HMAC signature (`createHmac` with the KeyObject made once) about 15 µs, the JSON dep" +
      "th bound over the raw body 8–10 µs, the rest of the mutation (checks, regular expressions, building the patch)" +
      " 7–9 µs, encoding the patch 7 µs and prom-client 3–4 µs. Nothing is parsed, stringified or logged twice, and n" +
      "o per-request child logger is made. Each remaining item is either a security path #15 wants plain or the platf" +
      "orm's own call, so the 0.8 goal is not met with the plain code; reaching it would take back the kind of tricks" +
      " #15 removed. p99 ≤ 5 ms at 16 connections is out of reach on this machine: with 16 closed-loop connections on" +
      " one event loop, latency is about 16 × CPU per request, and the constant responder's own p99 is already above " +
      "5 ms.",
  ];
  if (b.disturbed || w.disturbed)
    notes.push(
      "**Unreliable:** no clean run was left for " +
        [b, w]
          .filter((r) => r.disturbed)
          .map((r) => (r.subject === "webhook" ? "dynamic-volumes" : "baseline"))
          .join(" and ") +
        "; other work on the machine took CPU while it measured. Run the benchmark again on a quiet machine.",
    );
  if (!b.disturbed && b.serverElu < 0.9)
    notes.push(
      `Caveat: the baseline server's event loop was only ${fmt.pct(b.serverElu)} busy while the load generator ` +
        `used ${fmt.pct(clientCpu(b))} of a core. ` +
        (placement === undefined
          ? `The load generator and the servers share the machine's ${availableParallelism()} cores, `
          : "The load generator has one core, like the server, ") +
        "and for the baseline the load generator set the pace, so the " +
        "throughput ratio flatters dynamic-volumes. Server CPU per request " +
        `(${fmt.ratio(cpuRatio)}×, median of the rounds) compares the two servers more directly.`,
    );
  if (cpuProfDir !== undefined) notes.push(`Servers ran with --cpu-prof; profiles in ${cpuProfDir}.`);

  return {
    title: "webhook: POST /mutate over HTTPS keep-alive",
    setup: [
      `Load: ${CONNECTIONS} concurrent request loops (closed loop) over one Node \`https.Agent\` with keepAlive and maxSockets ${CONNECTIONS}, ` +
        `${runs[0]?.load.tlsProtocol ?? "TLS"} to 127.0.0.1, trusting only a CA generated for the run (\`certs/generate.ts\`).`,
      `Body: \`admissionReview(deploymentPod())\` from \`test/fixtures/pods.ts\` (${bodyBytes} bytes), a fresh uid per request; ` +
        "every reply is checked for status 200, the echoed `response.uid`, `allowed` and a `JSONPatch`, the same checks for both servers.",
      "Servers: each in its own child process (`node --import tsx bench/webhook-server.ts`), both on `startHttpsServer` from `shared/https-server.ts`.",
      placement === undefined
        ? "Placement: fewer than 2 CPUs were available, so the load generator and the servers were not pinned."
        : `Placement: every thread of the load generator pinned to CPU ${placement.client}, every thread of both servers to CPU ${placement.server} ` +
          "(`taskset -a`; only one server is under load at a time), so that the load generator and the server under test never wait for each other's time slices.",
      "dynamic-volumes: `createWebhookApp` from `webhook/server.ts` with metrics, `mintPodId` and a random signing key; " +
        'its logger is at level "warn" and writes to a sink that discards, so per-request logging is not measured.',
      "baseline: express with the same settings (no x-powered-by, no etag) and the same `express.json` parser " +
        "(3 MiB, strict), answering a constant AdmissionReview that echoes the uid: allowed, with the JSONPatch the webhook " +
        "gives this pod (computed once at start-up), written the way the webhook writes its replies. So both send the same " +
        "patch and the client does the same work for both; the difference is the mutation logic and the Pod Security " +
        "warning the webhook adds to every injection (docs/design.md), about 250 bytes more per reply.",
      `Schedule: ${plan.rounds} round(s) of one run per server, baseline first in odd rounds and dynamic-volumes first in even ones, each run on fresh keep-alive connections: ` +
        `warm-up ${plan.firstWarmupMs / 1000} s for a server's first run and ${plan.warmupMs / 1000} s later, ` +
        `then ${plan.measureMs / 1000} s measured. A disturbed run is repeated up to ${plan.retries} times ` +
        `within a ${plan.budgetMs / 1000} s budget.`,
    ],
    rows,
    notes,
  };
}

export const webhookSection: Section = {
  name: "webhook",
  summary:
    "POST /mutate throughput and p50/p99 at 16 HTTPS keep-alive connections vs. a bare express baseline",
  async run(ctx: BenchContext): Promise<SectionReport> {
    const plan = ctx.quick ? QUICK : FULL;
    ctx.progress("generating a throwaway CA and serving certificate");
    const pki = makeBenchPki();
    ctx.defer(pki.remove);

    const nodeArgs = ctx.cpuProfDir !== undefined ? ["--cpu-prof", `--cpu-prof-dir=${ctx.cpuProfDir}`] : [];
    const placement = pinning(ctx);
    const servers = new Map<Subject, ServerChild>();
    for (const s of SUBJECTS) {
      const child = await spawnServer(SERVER_ENTRY, [s, pki.certFile, pki.keyFile], ctx.defer, nodeArgs);
      if (placement !== undefined) pinThreads(child.pid, [placement.server]);
      ctx.progress(`started the ${s} server (pid ${child.pid}, port ${child.port})`);
      servers.set(s, child);
    }

    const { next, bytes } = exchanges();
    const runs: Run[] = [];
    const started = performance.now();
    const runMs = plan.warmupMs + plan.measureMs;
    for (let round = 1; round <= plan.rounds; round++)
      for (const [i, s] of roundOrder(round).entries())
        for (let attempt = 0; ; attempt++) {
          const warmupMs = runs.some((r) => r.subject === s) ? plan.warmupMs : plan.firstWarmupMs;
          const run = await measure(
            ctx,
            s,
            round,
            servers.get(s)!,
            pki.caPem,
            warmupMs,
            plan.measureMs,
            next,
          );
          runs.push(run);
          if (run.load.errors > 0) throw brokenRun(run);
          const plannedLeft = (plan.rounds - round) * SUBJECTS.length + (SUBJECTS.length - 1 - i);
          const fits = performance.now() - started + (plannedLeft + 1) * runMs <= plan.budgetMs;
          if (!run.disturbed || attempt >= plan.retries || !fits) break;
          ctx.progress(`  other processes took ${fmt.cores(run.otherCores)} cores; measuring again`);
        }
    for (const child of servers.values()) await child.stop();

    return buildReport(runs, plan, bytes, ctx.cpuProfDir, placement);
  },
};
