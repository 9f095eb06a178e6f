/**
 * Seeds and run counts for the fuzz and property tests. CI runs the fixed defaults; to run more,
 * without an npm script:
 *
 *     DV_FUZZ_RUNS=10 npx mocha --no-config --node-option import=tsx --exit test/fuzz/webhook.fuzz.test.ts
 *
 * - `DV_FUZZ_RUNS`: multiplier applied to every count (default 1; fractions allowed, e.g. 0.1).
 * - `DV_FUZZ_SEED`: integer seed replacing every file's fixed seed (default: the fixed seeds), so
 *   that a failure seen in a long run can be replayed exactly.
 */

function readScale(env: NodeJS.ProcessEnv): number {
  const raw = env.DV_FUZZ_RUNS;
  if (raw === undefined || raw === "") return 1;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0)
    throw new Error(`DV_FUZZ_RUNS must be a positive number (a multiplier of the CI counts), got "${raw}"`);
  return n;
}

function readSeed(env: NodeJS.ProcessEnv): number | undefined {
  const raw = env.DV_FUZZ_SEED;
  if (raw === undefined || raw === "") return undefined;
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new Error(`DV_FUZZ_SEED must be an integer, got "${raw}"`);
  return n | 0;
}

/** Multiplier for every count. */
export const FUZZ_SCALE = readScale(process.env);
const SEED_OVERRIDE = readSeed(process.env);

/** The seed to use: the fixed one unless `DV_FUZZ_SEED` overrides it. */
export function fuzzSeed(fixed: number): number {
  return SEED_OVERRIDE ?? fixed;
}

/** A CI count scaled by `DV_FUZZ_RUNS`, at least 1. */
export function fuzzRuns(ciCount: number): number {
  return Math.max(1, Math.round(ciCount * FUZZ_SCALE));
}

/** A mocha timeout that grows with the scale (the CI budget times the multiplier, plus slack). */
export function fuzzTimeoutMs(ciBudgetMs: number): number {
  return Math.round(ciBudgetMs * Math.max(1, FUZZ_SCALE)) + 10_000;
}

/** Prints one line naming the seed and counts, so that any run can be replayed. */
export function announce(what: string, seed: number, counts: Record<string, number | string>): void {
  const parts = Object.entries(counts).map(([k, v]) => `${k}=${v}`);
  process.stdout.write(
    `      [fuzz] ${what}: seed=${seed} ${parts.join(" ")} (DV_FUZZ_RUNS=${FUZZ_SCALE}; replay with DV_FUZZ_SEED=${seed})\n`,
  );
}
