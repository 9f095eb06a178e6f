/**
 * `npm run bench [-- [section...] [--quick] [--cpu-prof=DIR]]`: runs the named benchmark sections
 * (all of them when none is named), prints each report, and rewrites those sections of
 * BENCHMARKS.md, keeping the others.
 *
 * Goals are printed PASS/FAIL and never change the exit code: this is a report, not a test. The
 * exit code is 1 when a measurement is broken (bad replies, a server that does not start), 2 for
 * bad arguments, 130/143 on SIGINT/SIGTERM. `--quick` and `--cpu-prof` runs do not touch
 * BENCHMARKS.md, since their numbers are not representative.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, release, type } from "node:os";
import { join } from "node:path";
import {
  renderHeader,
  renderSection,
  updateBenchmarks,
  type BenchContext,
  type RunInfo,
  type Section,
} from "./report.js";
import { agentSection } from "./agent.js";
import { consoleSection } from "./console.js";
import { REPO_ROOT } from "./server-child.js";
import { webhookSection } from "./webhook.js";

/** Every section, in the order they run and appear in BENCHMARKS.md. */
const SECTIONS: readonly Section[] = [webhookSection, agentSection, consoleSection];

const BENCHMARKS_FILE = join(REPO_ROOT, "BENCHMARKS.md");

interface Args {
  readonly sections: readonly Section[];
  readonly quick: boolean;
  readonly cpuProfDir?: string;
  readonly help: boolean;
}

class UsageError extends Error {}

function usage(): string {
  return [
    "usage: npm run bench -- [section...] [--quick] [--cpu-prof=DIR]",
    "",
    "Runs the named sections (all when none is named) and rewrites them in BENCHMARKS.md.",
    "  --quick          short warm-up and measurement, one round; BENCHMARKS.md is left alone",
    "  --cpu-prof=DIR   run the servers under --cpu-prof, profiles written to DIR; BENCHMARKS.md is left alone",
    "",
    "sections:",
    ...SECTIONS.map((s) => `  ${s.name.padEnd(16)} ${s.summary}`),
    "",
  ].join("\n");
}

function parseArgs(argv: readonly string[]): Args {
  const names: string[] = [];
  let quick = false;
  let cpuProfDir: string | undefined;
  let help = false;
  for (const a of argv) {
    if (a === "--quick") quick = true;
    else if (a === "--help" || a === "-h") help = true;
    else if (a.startsWith("--cpu-prof=") && a.length > "--cpu-prof=".length)
      cpuProfDir = a.slice("--cpu-prof=".length);
    else if (a.startsWith("-")) throw new UsageError(`unknown option ${a}`);
    else names.push(a);
  }
  const sections = names.map((n) => {
    const s = SECTIONS.find((x) => x.name === n);
    if (s === undefined)
      throw new UsageError(`unknown section "${n}"; known: ${SECTIONS.map((x) => x.name).join(", ")}`);
    return s;
  });
  return {
    sections: sections.length > 0 ? [...new Set(sections)] : SECTIONS,
    quick,
    help,
    ...(cpuProfDir !== undefined ? { cpuProfDir } : {}),
  };
}

function runInfo(argv: readonly string[]): RunInfo {
  const args = argv.length > 0 ? ` -- ${argv.join(" ")}` : "";
  const command =
    process.env.npm_lifecycle_event === "bench"
      ? `npm run bench${args}`
      : `npx tsx bench/main.ts${argv.map((a) => ` ${a}`).join("")}`;
  const model = cpus()[0]?.model.trim() ?? "unknown CPU";
  return {
    command,
    date: new Date(),
    nodeVersion: process.version,
    machine: `${availableParallelism()}-core machine (${model}, ${type()} ${release()})`,
  };
}

/** Synchronous clean-ups, run last-in first-out; each runs at most once. */
const cleanups: Array<() => void> = [];

function cleanUp(): void {
  for (let fn = cleanups.pop(); fn !== undefined; fn = cleanups.pop()) {
    try {
      fn();
    } catch (e) {
      process.stderr.write(`bench: clean-up failed: ${(e as Error).message}\n`);
    }
  }
}

process.on("exit", cleanUp);
for (const [signal, code] of [
  ["SIGINT", 130],
  ["SIGTERM", 143],
] as const)
  process.on(signal, () => {
    process.stderr.write(`bench: ${signal}, stopping the servers\n`);
    cleanUp();
    process.exit(code);
  });

async function main(argv: readonly string[]): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`bench: ${e.message}\n\n${usage()}`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(usage());
    return 0;
  }

  const run = runInfo(argv);
  const record = !args.quick && args.cpuProfDir === undefined;
  const blocks: Array<{ name: string; text: string }> = [];
  let broken = 0;
  for (const section of args.sections) {
    const ctx: BenchContext = {
      defer: (fn) => cleanups.push(fn),
      progress: (line) => process.stdout.write(`[${section.name}] ${line}\n`),
      quick: args.quick,
      ...(args.cpuProfDir !== undefined ? { cpuProfDir: args.cpuProfDir } : {}),
    };
    process.stdout.write(`[${section.name}] ${section.summary}\n`);
    try {
      const report = await section.run(ctx);
      const text = renderSection(section.name, report, run);
      blocks.push({ name: section.name, text });
      process.stdout.write(`\n${text}\n\n`);
      for (const row of report.rows)
        if (row.result !== "")
          process.stdout.write(`${row.result}  ${section.name}: ${row.metric}, ${row.goal}\n`);
    } catch (e) {
      broken++;
      process.stderr.write(
        `\n[${section.name}] BROKEN RUN: ${(e as Error).message}\n` +
          "The numbers of this section are not written down; fix the cause and run it again.\n",
      );
    } finally {
      cleanUp();
    }
  }

  if (!record) process.stdout.write("\nBENCHMARKS.md left alone (--quick or --cpu-prof run).\n");
  else if (blocks.length > 0) {
    const existing = existsSync(BENCHMARKS_FILE) ? readFileSync(BENCHMARKS_FILE, "utf8") : undefined;
    writeFileSync(BENCHMARKS_FILE, updateBenchmarks(existing, renderHeader(run), blocks));
    process.stdout.write(`\nwrote ${blocks.map((b) => b.name).join(", ")} to ${BENCHMARKS_FILE}\n`);
  }
  return broken > 0 ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`bench: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  },
);
