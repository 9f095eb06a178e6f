/**
 * The `console` section: the agent's websocket console against a bare `ws` server, both on the same
 * HTTPS/TLS stack, each in its own child process, measured side by side in the same run.
 *
 * 1. Round trips (`console-roundtrip.ts`): `status` at 1 and 16 connections, closed loop; p50/p99
 *    and throughput against the baseline's constant reply. Ratios only, no goal.
 * 2. Fan-out (`console-fanout.ts`): a ladder of watcher counts, watchers in child processes; the time
 *    from a trigger until every watcher has its event, against the baseline broadcasting one frame.
 *    Goal: every event at every watcher within 1 s for ≥ 1,000 watchers.
 *
 * Runs during which other processes took more than {@link DISTURBED_CORES} of CPU are repeated once
 * while the time budget allows and marked when no clean run is left.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { eventFrame, statusRequest } from "./console-fixture.js";
import { openFileLimit } from "./console-fanout.js";
import { fanout, type LadderPlan } from "./console-ladder.js";
import { DISTURBED_CORES, buildConsoleReport, type RoundTripRun, type Subject } from "./console-report.js";
import {
  closeConnections,
  openConnections,
  runRoundTrips,
  type RoundTripTarget,
} from "./console-roundtrip.js";
import { percentile } from "./load.js";
import { otherLoad, readMachineCpu } from "./machine.js";
import { makeBenchPki, type BenchPki } from "./pki.js";
import type { BenchContext, Section, SectionReport } from "./report.js";
import { sampleDelta, spawnServer, type ServerChild } from "./server-child.js";

interface Plan extends LadderPlan {
  readonly rtConnections: readonly number[];
  readonly rtRequests: (connections: number) => number;
  readonly rtRounds: number;
  readonly rtFirstWarmupMs: number;
  readonly rtWarmupMs: number;
  /** Round-trip runs (retries included) fit in this. */
  readonly rtBudgetMs: number;
}

const FULL: Plan = {
  rtConnections: [1, 16],
  rtRequests: (c) => (c === 1 ? 3_000 : 24_000),
  rtRounds: 3,
  rtFirstWarmupMs: 1_000,
  rtWarmupMs: 500,
  rtBudgetMs: 45_000,
  steps: [250, 500, 1_000, 2_000, 4_000],
  warmupPairs: 1,
  pairs: 3,
  timeoutMs: 10_000,
  budgetMs: 120_000,
};
const QUICK: Plan = {
  rtConnections: [1, 16],
  rtRequests: (c) => (c === 1 ? 500 : 4_000),
  rtRounds: 1,
  rtFirstWarmupMs: 300,
  rtWarmupMs: 300,
  rtBudgetMs: 0,
  steps: [100, 1_000],
  warmupPairs: 1,
  pairs: 1,
  timeoutMs: 10_000,
  budgetMs: 60_000,
};

const SERVER_ENTRY = "bench/console-server.ts";
const SUBJECTS: readonly Subject[] = ["baseline", "console"];

const fmtCores = (v: number | undefined): string => (v === undefined ? "n/a" : v.toFixed(2));

/** Byte length of the console's `status` reply, so that the baseline answers with as many. */
async function statusReplyBytes(port: number, ca: string): Promise<{ bytes: number; tls: string }> {
  const [ws] = await openConnections({ port, ca, connections: 1, checkId: true });
  try {
    const reply = await new Promise<Buffer>((resolve, reject) => {
      ws!.once("message", (d) => resolve(d as Buffer));
      ws!.once("close", (code) => reject(new Error(`the console closed the connection with ${code}`)));
      ws!.send(statusRequest(1));
    });
    const text = reply.toString("utf8");
    if (!(JSON.parse(text) as { ok?: unknown }).ok) throw new Error(`status failed: ${text.slice(0, 300)}`);
    const socket = (ws as unknown as { _socket?: TLSSocket })._socket;
    return { bytes: reply.length, tls: socket?.getProtocol() ?? "TLS" };
  } finally {
    closeConnections([ws!]);
  }
}

async function measureRoundTrip(
  ctx: BenchContext,
  subject: Subject,
  server: ServerChild,
  target: RoundTripTarget,
  round: number,
  warmupMs: number,
  requests: number,
): Promise<RoundTripRun> {
  const conns = await openConnections(target);
  try {
    const warm = await runRoundTrips(conns, target, { durationMs: warmupMs });
    const machine0 = readMachineCpu();
    const server0 = await server.sample();
    const result = await runRoundTrips(conns, target, { requests });
    const server1 = await server.sample();
    const machine1 = readMachineCpu();
    const { cpuMs, elu } = sampleDelta(server0, server1);
    const other = otherLoad(machine0, machine1, cpuMs + result.clientCpuMs, result.elapsedMs);
    const errors = warm.errors + result.errors;
    if (errors > 0)
      throw new Error(
        `${errors} bad replies from the ${subject} server (${target.connections} connections), e.g. ` +
          [...warm.errorSamples, ...result.errorSamples].slice(0, 3).join(" | "),
      );
    const run: RoundTripRun = {
      subject,
      connections: target.connections,
      round,
      result,
      rps: (result.requests - result.errors) / (result.elapsedMs / 1000),
      p50: percentile(result.latenciesMs, 50),
      p99: percentile(result.latenciesMs, 99),
      serverCpuMs: cpuMs,
      serverElu: elu,
      otherCores: other,
      disturbed: (other ?? 0) > DISTURBED_CORES,
    };
    ctx.progress(
      `  status ×${String(target.connections).padStart(2)} round ${round} ${subject.padEnd(8)} ` +
        `${run.rps.toFixed(0).padStart(6)} req/s  p50 ${run.p50.toFixed(3)} ms  p99 ${run.p99.toFixed(3)} ms  ` +
        `server loop ${(elu * 100).toFixed(0)}% busy  client ${((result.clientCpuMs / result.elapsedMs) * 100).toFixed(0)}%  ` +
        `others ${fmtCores(other)} cores`,
    );
    return run;
  } finally {
    closeConnections(conns);
  }
}

async function roundTrips(
  ctx: BenchContext,
  plan: Plan,
  servers: ReadonlyMap<Subject, ServerChild>,
  ca: string,
): Promise<RoundTripRun[]> {
  const runs: RoundTripRun[] = [];
  const started = performance.now();
  for (const connections of plan.rtConnections)
    for (let round = 1; round <= plan.rtRounds; round++)
      for (const subject of SUBJECTS)
        for (let attempt = 0; ; attempt++) {
          const server = servers.get(subject)!;
          const first = !runs.some((r) => r.subject === subject && r.connections === connections);
          const t0 = performance.now();
          const run = await measureRoundTrip(
            ctx,
            subject,
            server,
            { port: server.port, ca, connections, checkId: subject === "console" },
            round,
            first ? plan.rtFirstWarmupMs : plan.rtWarmupMs,
            plan.rtRequests(connections),
          );
          runs.push(run);
          const fits = performance.now() - started + (performance.now() - t0) <= plan.rtBudgetMs;
          if (!run.disturbed || attempt >= 1 || !fits) break;
          ctx.progress(`  other processes took ${fmtCores(run.otherCores)} cores; measuring again`);
        }
  return runs;
}

async function startServers(
  ctx: BenchContext,
  pki: BenchPki,
  maxConnections: number,
): Promise<{ servers: Map<Subject, ServerChild>; replyBytes: number; tls: string }> {
  const nodeArgs = ctx.cpuProfDir !== undefined ? ["--cpu-prof", `--cpu-prof-dir=${ctx.cpuProfDir}`] : [];
  const workDir = mkdtempSync(join(tmpdir(), "dv-bench-console-"));
  ctx.defer(() => rmSync(workDir, { recursive: true, force: true }));
  const servers = new Map<Subject, ServerChild>();
  const console = await spawnServer(
    SERVER_ENTRY,
    ["console", pki.certFile, pki.keyFile, workDir, String(maxConnections)],
    ctx.defer,
    nodeArgs,
  );
  ctx.progress(`started the console server (pid ${console.pid}, port ${console.port})`);
  servers.set("console", console);
  const { bytes, tls } = await statusReplyBytes(console.port, pki.caPem);
  const baseline = await spawnServer(
    SERVER_ENTRY,
    ["baseline", pki.certFile, pki.keyFile, String(bytes)],
    ctx.defer,
    nodeArgs,
  );
  ctx.progress(
    `started the baseline server (pid ${baseline.pid}, port ${baseline.port}), ${bytes}-byte replies`,
  );
  servers.set("baseline", baseline);
  return { servers, replyBytes: bytes, tls };
}

export const consoleSection: Section = {
  name: "console",
  summary:
    "wss console: status round trips (1 and 16 connections) and watch fan-out to 250–4000 watchers vs. a bare ws server",
  async run(ctx: BenchContext): Promise<SectionReport> {
    const plan = ctx.quick ? QUICK : FULL;
    const started = performance.now();
    ctx.progress("generating a throwaway CA and serving certificate");
    const pki = makeBenchPki();
    ctx.defer(pki.remove);
    const maxStep = Math.max(...plan.steps);
    // Room for every watcher, the control connection and a few more.
    const { servers, replyBytes, tls } = await startServers(ctx, pki, maxStep + 64);

    const rt = await roundTrips(ctx, plan, servers, pki.caPem);
    const fan = await fanout(ctx, plan, servers, pki.caPem, started + plan.budgetMs);
    for (const child of servers.values()) await child.stop();

    return buildConsoleReport(rt, fan.runs, {
      statusReplyBytes: replyBytes,
      eventBytes: {
        mounted: Buffer.byteLength(eventFrame("e1", "mounted")),
        removed: Buffer.byteLength(eventFrame("e1", "removed")),
      },
      tlsProtocol: tls,
      roundTrip: {
        connections: plan.rtConnections,
        requests: plan.rtRequests,
        rounds: plan.rtRounds,
        firstWarmupMs: plan.rtFirstWarmupMs,
        warmupMs: plan.rtWarmupMs,
      },
      fanout: {
        steps: fan.steps,
        pairs: plan.pairs,
        warmupPairs: plan.warmupPairs,
        timeoutMs: plan.timeoutMs,
        watcherProcesses: fan.processes,
        openFileLimit: openFileLimit(),
        ...(fan.stoppedEarly !== undefined ? { stoppedEarly: fan.stoppedEarly } : {}),
      },
      ...(ctx.cpuProfDir !== undefined ? { cpuProfDir: ctx.cpuProfDir } : {}),
    });
  },
};
