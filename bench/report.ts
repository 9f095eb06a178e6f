/**
 * What a benchmark section is and how its report becomes Markdown. Pure: no I/O. `main.ts` runs the
 * sections and writes BENCHMARKS.md; each section lives between its own markers,
 * `<!-- bench:<name>:start -->` and `<!-- bench:<name>:end -->`, so that a run of one section keeps
 * the others.
 */

/** What `main.ts` hands a running section. */
export interface BenchContext {
  /**
   * Registers a synchronous clean-up (kill a child process, remove a temporary directory). Clean-ups
   * run in reverse order when the section ends, when it throws, and on SIGINT/SIGTERM.
   */
  readonly defer: (fn: () => void) => void;
  /** Prints a progress line. */
  readonly progress: (line: string) => void;
  /** Short warm-up, measurement and rounds, for a smoke run; its numbers are not written down. */
  readonly quick: boolean;
  /** When set, server child processes run with `--cpu-prof` and write their profiles here. */
  readonly cpuProfDir?: string;
}

/** One line of a section's table: `metric | baseline | dynamic-volumes | ratio | goal | result`. */
export interface MetricRow {
  readonly metric: string;
  readonly baseline: string;
  readonly subject: string;
  readonly ratio: string;
  readonly goal: string;
  /** "PASS" or "FAIL" (possibly qualified, e.g. "PASS (disturbed)") for a goal; "" otherwise. */
  readonly result: string;
}

export interface SectionReport {
  /** Heading of the section in BENCHMARKS.md. */
  readonly title: string;
  /** How it was measured, one bullet each. */
  readonly setup: readonly string[];
  readonly rows: readonly MetricRow[];
  /** Anything worth a sentence below the table (per-round numbers, caveats). */
  readonly notes: readonly string[];
}

export interface Section {
  /** Command-line name and marker name: lowercase letters, digits and dashes. */
  readonly name: string;
  /** One line for `--help`. */
  readonly summary: string;
  /** Throws when the measurement itself is broken (errors, a server that did not start). */
  run(ctx: BenchContext): Promise<SectionReport>;
}

/** Where the run happened and how it was started; shown in the header and in each section. */
export interface RunInfo {
  readonly command: string;
  readonly date: Date;
  readonly nodeVersion: string;
  /** e.g. "2-core machine (AMD EPYC), Linux 6.8". */
  readonly machine: string;
}

const COLUMNS = ["metric", "baseline", "dynamic-volumes", "ratio", "goal", "result"] as const;

/** A Markdown table padded the way Prettier pads it, so that formatting the file changes nothing. */
export function renderTable(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = header.map((h, i) => Math.max(3, h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]): string =>
    `| ${widths.map((w, i) => (cells[i] ?? "").padEnd(w)).join(" | ")} |`;
  return [line(header), `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`, ...rows.map(line)].join("\n");
}

export function markerStart(name: string): string {
  return `<!-- bench:${name}:start -->`;
}

export function markerEnd(name: string): string {
  return `<!-- bench:${name}:end -->`;
}

/** The whole marked block of one section. */
export function renderSection(name: string, report: SectionReport, run: RunInfo): string {
  const rows = report.rows.map((r) => [r.metric, r.baseline, r.subject, r.ratio, r.goal, r.result]);
  return [
    markerStart(name),
    "",
    `## ${report.title}`,
    "",
    `Produced by \`${run.command}\` on ${run.date.toISOString()}, Node ${run.nodeVersion}, ${run.machine}.`,
    "",
    ...report.setup.map((s) => `- ${s}`),
    "",
    renderTable(COLUMNS, rows),
    "",
    ...report.notes.flatMap((n) => [n, ""]),
    markerEnd(name),
  ].join("\n");
}

/** The part of BENCHMARKS.md above the first section; rewritten on every run. */
export function renderHeader(run: RunInfo): string {
  return [
    "# Benchmarks",
    "",
    "Written by `npm run bench` (`bench/main.ts`); edit the code, not this file.",
    "",
    `The numbers come from one ${run.machine} and say little about any other machine. ` +
      "That is why every goal is either a ratio against a baseline measured in the same run, " +
      "side by side, or an absolute latency that only holds for this machine. " +
      "Each section names the command, date and Node version that produced it; " +
      "`npm run bench -- <section>` regenerates that section and keeps the others.",
    "",
    `Last run: \`${run.command}\` on ${run.date.toISOString()}, Node ${run.nodeVersion}.`,
  ].join("\n");
}

interface Block {
  readonly name: string;
  readonly text: string;
}

const BLOCK = /<!-- bench:([a-z0-9-]+):start -->[\s\S]*?<!-- bench:\1:end -->/g;

/** The marked blocks of an existing BENCHMARKS.md, in file order. */
export function parseBlocks(existing: string): Block[] {
  return [...existing.matchAll(BLOCK)].map((m) => ({ name: m[1]!, text: m[0] }));
}

/**
 * The new BENCHMARKS.md: the new header, then every block of `existing` in its place with the blocks
 * in `updated` replacing theirs, then updated blocks that were not there before.
 */
export function updateBenchmarks(
  existing: string | undefined,
  header: string,
  updated: ReadonlyArray<{ name: string; text: string }>,
): string {
  const fresh = new Map(updated.map((b) => [b.name, b.text]));
  const kept = parseBlocks(existing ?? "").map((b) => {
    const text = fresh.get(b.name) ?? b.text;
    fresh.delete(b.name);
    return text;
  });
  return `${[header, ...kept, ...fresh.values()].join("\n\n")}\n`;
}
