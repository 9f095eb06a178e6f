/**
 * The `console` section's measurements and how they become its report. Pure: no I/O.
 */
import type { Delivery } from "./console-fanout.js";
import type { RoundTripResult } from "./console-roundtrip.js";
import { percentile } from "./load.js";
import type { MetricRow, SectionReport } from "./report.js";

export type Subject = "baseline" | "console";

/** Fan-out goal: every watcher has every event within this, from the trigger. */
export const GOAL_DELIVERY_MS = 1_000;
/** Fan-out goal: at least this many watchers served within {@link GOAL_DELIVERY_MS}. */
export const GOAL_WATCHERS = 1_000;
/** A run during which other processes (or hypervisor steal) took more CPU than this, in cores, is disturbed. */
export const DISTURBED_CORES = 0.2;

export interface RoundTripRun {
  readonly subject: Subject;
  readonly connections: number;
  readonly round: number;
  readonly result: RoundTripResult;
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  /** Server CPU (user + system) over the measurement, in ms. */
  readonly serverCpuMs: number;
  /** Server event-loop utilization over the measurement, 0..1. */
  readonly serverElu: number;
  readonly otherCores: number | undefined;
  readonly disturbed: boolean;
}

export interface FanoutRun {
  readonly subject: Subject;
  readonly watchers: number;
  readonly deliveries: readonly Delivery[];
  /** Server CPU over the measured triggers, in ms. */
  readonly serverCpuMs: number;
  /** CPU of all watcher processes over the measured triggers, in ms. */
  readonly clientCpuMs: number;
  readonly otherCores: number | undefined;
  readonly disturbed: boolean;
}

export interface ConsoleBenchInfo {
  readonly statusReplyBytes: number;
  readonly eventBytes: { readonly mounted: number; readonly removed: number };
  readonly tlsProtocol: string;
  readonly roundTrip: {
    readonly connections: readonly number[];
    readonly requests: (connections: number) => number;
    readonly rounds: number;
    readonly firstWarmupMs: number;
    readonly warmupMs: number;
  };
  readonly fanout: {
    readonly steps: readonly number[];
    readonly pairs: number;
    readonly warmupPairs: number;
    readonly timeoutMs: number;
    readonly watcherProcesses: number;
    readonly openFileLimit: number | undefined;
    /** Why the ladder stopped before its last step, if it did. */
    readonly stoppedEarly?: string;
  };
  readonly cpuProfDir?: string;
}

const fmt = {
  rps: (v: number) => v.toFixed(0),
  ms: (v: number) => (Number.isFinite(v) ? v.toFixed(2) : "never"),
  ms1: (v: number) => (Number.isFinite(v) ? v.toFixed(1) : "never"),
  ratio: (v: number) => (Number.isFinite(v) ? v.toFixed(3) : "n/a"),
  pct: (v: number) => `${(v * 100).toFixed(0)}%`,
  us: (v: number) => v.toFixed(0),
  cores: (v: number | undefined) => (v === undefined ? "n/a" : v.toFixed(2)),
};

function verdict(pass: boolean, disturbed: boolean): string {
  return `${pass ? "PASS" : "FAIL"}${disturbed ? " (disturbed)" : ""}`;
}

/** The run with the median throughput (the lower middle one), clean runs preferred. */
export function medianRoundTrip(runs: readonly RoundTripRun[]): RoundTripRun {
  const clean = runs.filter((r) => !r.disturbed);
  const sorted = [...(clean.length > 0 ? clean : runs)].sort((a, b) => a.rps - b.rps);
  const m = sorted[(sorted.length - 1) >> 1];
  if (m === undefined) throw new Error("no round-trip runs to take the median of");
  return m;
}

/** The run of one (subject, watchers) step to report: the last clean one, else the last one. */
export function fanoutRunOf(
  runs: readonly FanoutRun[],
  subject: Subject,
  watchers: number,
): FanoutRun | undefined {
  const mine = runs.filter((r) => r.subject === subject && r.watchers === watchers);
  return mine.filter((r) => !r.disturbed).at(-1) ?? mine.at(-1);
}

/** Until the last watcher had the event, worst trigger of the run. */
export function worstMs(r: FanoutRun): number {
  return Math.max(...r.deliveries.map((d) => d.allMs));
}

export function stepPasses(r: FanoutRun): boolean {
  return r.deliveries.length > 0 && worstMs(r) <= GOAL_DELIVERY_MS;
}

/**
 * Event frames each watcher gets for one trigger: for a mount the console sends `mounting` before
 * `mounted`; for the removal of a name only `removed` (`unmounting` is for a changed spec). The
 * baseline broadcasts one frame.
 */
export function framesPerTrigger(subject: Subject, final: Delivery["final"]): number {
  return subject === "console" && final === "mounted" ? 2 : 1;
}

/** Server CPU per event frame sent to one watcher, in µs. */
function cpuPerFrame(r: FanoutRun): number {
  const frames = r.deliveries.reduce((n, d) => n + framesPerTrigger(r.subject, d.final), 0) * r.watchers;
  return (r.serverCpuMs * 1000) / frames;
}

function median(values: readonly number[]): number {
  return percentile(Float64Array.from(values).sort(), 50);
}

/** The largest step at which this and every smaller step delivered within the goal; 0 when none. */
export function servedWatchers(
  runs: readonly FanoutRun[],
  subject: Subject,
  steps: readonly number[],
): number {
  let served = 0;
  for (const w of steps) {
    const r = fanoutRunOf(runs, subject, w);
    if (r === undefined || !stepPasses(r)) break;
    served = w;
  }
  return served;
}

export function buildConsoleReport(
  rt: readonly RoundTripRun[],
  fan: readonly FanoutRun[],
  info: ConsoleBenchInfo,
): SectionReport {
  const rows: MetricRow[] = [];
  const row = (metric: string, b: string, s: string, ratio = "", goal = "", result = ""): void => {
    rows.push({ metric, baseline: b, subject: s, ratio, goal, result });
  };

  for (const c of info.roundTrip.connections) {
    const mine = rt.filter((r) => r.connections === c);
    if (!mine.some((r) => r.subject === "console") || !mine.some((r) => r.subject === "baseline")) continue;
    const b = medianRoundTrip(mine.filter((r) => r.subject === "baseline"));
    const s = medianRoundTrip(mine.filter((r) => r.subject === "console"));
    const cpuPerReq = (r: RoundTripRun): number =>
      (r.serverCpuMs * 1000) / (r.result.requests - r.result.errors);
    const label = `status, ${c} connection${c === 1 ? "" : "s"}`;
    row(`${label}: throughput (req/s)`, fmt.rps(b.rps), fmt.rps(s.rps), fmt.ratio(s.rps / b.rps));
    row(`${label}: p50 latency (ms)`, fmt.ms(b.p50), fmt.ms(s.p50), fmt.ratio(s.p50 / b.p50));
    row(`${label}: p99 latency (ms)`, fmt.ms(b.p99), fmt.ms(s.p99), fmt.ratio(s.p99 / b.p99));
    row(
      `${label}: server CPU per request (µs)`,
      fmt.us(cpuPerReq(b)),
      fmt.us(cpuPerReq(s)),
      fmt.ratio(cpuPerReq(s) / cpuPerReq(b)),
    );
    row(`${label}: server event loop busy`, fmt.pct(b.serverElu), fmt.pct(s.serverElu));
  }

  const measuredSteps = info.fanout.steps.filter((w) => fan.some((r) => r.watchers === w));
  for (const w of measuredSteps) {
    const b = fanoutRunOf(fan, "baseline", w);
    const s = fanoutRunOf(fan, "console", w);
    // The step's verdict against the 1 s goal is in the "watchers that get every event" row.
    const cell = (r: FanoutRun | undefined): string =>
      r === undefined
        ? "not run"
        : `${fmt.ms1(worstMs(r))}${r.disturbed ? "*" : ""} (p50 watcher ${fmt.ms1(median(r.deliveries.map((d) => d.p50Ms)))})`;
    row(
      `${w} watchers: every watcher has the event (ms, worst of ${s?.deliveries.length ?? b?.deliveries.length ?? 0})`,
      cell(b),
      cell(s),
      b !== undefined && s !== undefined ? fmt.ratio(worstMs(s) / worstMs(b)) : "",
    );
  }
  const both = measuredSteps.filter(
    (w) => fanoutRunOf(fan, "console", w) !== undefined && fanoutRunOf(fan, "baseline", w) !== undefined,
  );
  const perFrameAt = both.at(-1);
  if (perFrameAt !== undefined) {
    const b = fanoutRunOf(fan, "baseline", perFrameAt)!;
    const s = fanoutRunOf(fan, "console", perFrameAt)!;
    row(
      `${perFrameAt} watchers: server CPU per event frame sent (µs)`,
      fmt.us(cpuPerFrame(b)),
      fmt.us(cpuPerFrame(s)),
      fmt.ratio(cpuPerFrame(s) / cpuPerFrame(b)),
    );
  }
  const top = measuredSteps.at(-1);
  const servedText = (subject: Subject): string => {
    const n = servedWatchers(fan, subject, measuredSteps);
    return n > 0 && n === top ? `≥ ${n}` : String(n);
  };
  const served = servedWatchers(fan, "console", measuredSteps);
  const servedRun = fanoutRunOf(fan, "console", served);
  row(
    `watchers that get every event within ${GOAL_DELIVERY_MS / 1000} s`,
    servedText("baseline"),
    servedText("console"),
    "",
    `≥ ${GOAL_WATCHERS}`,
    verdict(served >= GOAL_WATCHERS, servedRun?.disturbed ?? fan.some((r) => r.disturbed)),
  );
  const worstOther = (
    runs: ReadonlyArray<{ subject: Subject; otherCores: number | undefined }>,
    s: Subject,
  ) => {
    const v = runs.filter((r) => r.subject === s).map((r) => r.otherCores ?? 0);
    return v.length > 0 ? fmt.cores(Math.max(...v)) : "n/a";
  };
  row(
    "CPU taken by others, worst run (cores)",
    `${worstOther(rt, "baseline")} / ${worstOther(fan, "baseline")}`,
    `${worstOther(rt, "console")} / ${worstOther(fan, "console")}`,
  );
  const total = (s: Subject): string => {
    const mine = rt.filter((r) => r.subject === s);
    return `${mine.reduce((n, r) => n + r.result.requests, 0)} (${mine.reduce((n, r) => n + r.result.errors, 0)} errors)`;
  };
  row("status replies checked, all runs", total("baseline"), total("console"));

  const notes: string[] = [
    "Ratios are console / baseline. Round trips: each column is the median run (by throughput) of that server, " +
      "clean runs preferred. Fan-out: the last clean run of each step. " +
      `\`CPU taken by others\` is round trips / fan-out; a run is disturbed (*) when others took more than ${DISTURBED_CORES} cores.`,
  ];
  for (const c of info.roundTrip.connections) {
    const per = (s: Subject): string =>
      rt
        .filter((r) => r.connections === c && r.subject === s)
        .map((r) => `${fmt.rps(r.rps)}${r.disturbed ? "*" : ""}`)
        .join(", ");
    notes.push(
      `Status at ${c} connection(s), every run, req/s: baseline ${per("baseline")}; console ${per("console")}.`,
    );
  }
  for (const w of measuredSteps) {
    const s = fanoutRunOf(fan, "console", w);
    const b = fanoutRunOf(fan, "baseline", w);
    if (s === undefined) continue;
    const ctl = s.deliveries.map((d) => d.controlMs).filter((v): v is number => v !== undefined);
    const lastList = (r: FanoutRun): string => r.deliveries.map((d) => fmt.ms1(d.allMs)).join(", ");
    notes.push(
      `${w} watchers: last watcher per trigger, ms: console ${lastList(s)}${s.disturbed ? " *" : ""}` +
        (b !== undefined ? `; baseline ${lastList(b)}${b.disturbed ? " *" : ""}` : "") +
        `. Of the console's time, ${fmt.ms1(median(ctl))} ms (median) passed before the control connection had its own ` +
        "final progress frame (the reconciler's work, plus the fan-out of the intermediate event, which the event loop finishes first). " +
        `Server CPU per trigger: console ${fmt.ms1(s.serverCpuMs / s.deliveries.length)} ms` +
        (b !== undefined ? `, baseline ${fmt.ms1(b.serverCpuMs / b.deliveries.length)} ms` : "") +
        `; watcher processes ${fmt.ms1(s.clientCpuMs / s.deliveries.length)} ms` +
        (b !== undefined ? ` and ${fmt.ms1(b.clientCpuMs / b.deliveries.length)} ms` : "") +
        (s.deliveries.some((d) => d.missing > 0 || d.closed > 0)
          ? `; **${Math.max(...s.deliveries.map((d) => d.missing))} watchers missed an event, ${Math.max(...s.deliveries.map((d) => d.closed))} closed**`
          : "") +
        ".",
    );
  }
  if (info.fanout.stoppedEarly !== undefined)
    notes.push(`The fan-out ladder stopped early: ${info.fanout.stoppedEarly}.`);
  const disturbed = [...rt, ...fan].filter((r) => r.disturbed).length;
  if (disturbed > 0)
    notes.push(
      `**${disturbed} of ${rt.length + fan.length} runs were disturbed** by other work on the machine; ` +
        "runs marked (disturbed) in the table had no clean repeat. Run the benchmark again on a quiet machine.",
    );
  if (info.cpuProfDir !== undefined)
    notes.push(`Servers ran with --cpu-prof; profiles in ${info.cpuProfDir}.`);

  const rtPlan = info.roundTrip;
  const fp = info.fanout;
  return {
    title: "console: wss round trips and watch fan-out",
    setup: [
      "Servers: each in its own child process (`node --import tsx bench/console-server.ts`), both on `startHttpsServer` " +
        `(${info.tlsProtocol}, RSA 2048 certificate from \`certs/generate.ts\`) and \`ws\` without compression.`,
      "console: the real `ConsoleServer` wired as `agent/main.ts` wires local mode (static token, every authenticated user allowed), " +
        'over a `LocalPodSource` and a `Reconciler` with production timings on the tests\' `FakeEngine`; logger at "warn" into a sink that discards. ' +
        "The per-connection rate limit (default 20 req/s) is lifted and the connection cap raised; every other limit is the default.",
      `baseline: a bare \`ws\` server that answers any frame with a constant ${info.statusReplyBytes}-byte reply (the size of the console's \`status\` reply) ` +
        'and relays a frame that starts with `{"event"` to every other client (one broadcast, the same string sent to each).',
      `Round trips: ${rtPlan.connections.join(" and ")} wss connection(s) from the bench process, closed loop, \`{"op":"status"}\` of a pod with one mount; ` +
        `${rtPlan.connections.map((c) => `${rtPlan.requests(c)} requests at ${c}`).join(", ")} after a warm-up (${rtPlan.firstWarmupMs / 1000} s first, ${rtPlan.warmupMs / 1000} s later) ` +
        `on fresh connections; ${rtPlan.rounds} round(s) of baseline then console; a disturbed run is repeated once when time allows. Every reply is parsed; the console's must echo the id.`,
      `Fan-out: watchers in ${fp.watcherProcesses} child processes (\`bench/console-watchers.ts\`; open-file limit ${fp.openFileLimit ?? "unknown"}), ` +
        'each console watcher a `{"op":"watch"}` of every namespace (what `dvctl watch` sends). ' +
        "A control connection in the bench process triggers: on the console a `mount` (then `unmount`) of a fresh name on a watched pod, " +
        "so the console edits the annotation and the reconciler emits `mounting` then `mounted` (for the unmount: `removed`) to every watcher; " +
        `on the baseline it sends the final event frame itself (${info.eventBytes.mounted} / ${info.eventBytes.removed} bytes) for the server to broadcast. ` +
        "Time runs from the trigger to the final event's arrival at the last watcher (clock `performance.timeOrigin + now()`, shared by the processes).",
      `Ladder: ${fp.steps.join(", ")} watchers, each step ${fp.warmupPairs} mount/unmount pair(s) of warm-up then ${fp.pairs} measured (${2 * fp.pairs} triggers), ` +
        `time-out ${fp.timeoutMs / 1000} s; the ladder stops after the first step at which the console misses the ${GOAL_DELIVERY_MS} ms goal.`,
    ],
    rows,
    notes,
  };
}
