/**
 * The soak's command line and its two profiles, pure. A profile fixes the rates of every actor and
 * the size of every fault; `--minutes` only stretches or shrinks the load phase.
 */
import { parseArgs } from "node:util";
import { randomSeed } from "./prng.js";

export type ProfileName = "short" | "long";

export interface Profile {
  readonly name: ProfileName;
  /** Default length of the load phase, in minutes. */
  readonly minutes: number;
  /** Live pods are kept within [minPods, maxPods]. */
  readonly minPods: number;
  readonly maxPods: number;
  /** Seconds between pod creations or deletions: uniform in this range. */
  readonly churnEvery: readonly [number, number];
  /** Annotation changes per second, on average, from the flipper. */
  readonly changesPerSecond: number;
  /** Probability that a flipped annotation carries one malformed entry. */
  readonly badEntryChance: number;
  /** Share of pods that use rclone instead of s3fs. */
  readonly rcloneShare: number;
  readonly writerEvery: readonly [number, number];
  readonly isolationEvery: readonly [number, number];
  readonly consoleEvery: readonly [number, number];
  /** Seconds the S3 server stays down, once per run. */
  readonly s3OutageSeconds: number;
  /** Times the agent is killed with -9 and restarted. */
  readonly agentKills: number;
  /** Seconds the agent stays down after a kill: uniform in this range. */
  readonly agentDownSeconds: readonly [number, number];
  /** Times the mounter is killed with -9 (with every FUSE client of the node) and restarted. */
  readonly mounterKills: number;
  /** Seconds the mounter stays down after a kill: uniform in this range. */
  readonly mounterDownSeconds: readonly [number, number];
  /** Seconds between kills of a random FUSE client: uniform in this range. */
  readonly fuseKillEvery: readonly [number, number];
  /** After the load stops, every live pod must match its annotation within this many seconds. */
  readonly convergenceBoundSeconds: number;
  /**
   * The agent's `--upload-grace-seconds`: shorter than its default (60 s), so that the S3 outage
   * makes unmounts give up on pending uploads too, and the write-back faults keep S3 frozen briefly.
   */
  readonly uploadGraceSeconds: number;
}

export const PROFILES: Readonly<Record<ProfileName, Profile>> = {
  // About 2.5 minutes from start to report on this 2-core machine: for CI.
  short: {
    name: "short",
    minutes: 1.5,
    minPods: 5,
    maxPods: 8,
    churnEvery: [2, 5],
    changesPerSecond: 2.5,
    badEntryChance: 0.05,
    rcloneShare: 0.3,
    writerEvery: [1, 2.5],
    isolationEvery: [1, 2.5],
    consoleEvery: [1.5, 4],
    s3OutageSeconds: 10,
    agentKills: 2,
    agentDownSeconds: [0.5, 3],
    mounterKills: 1,
    mounterDownSeconds: [0.5, 2],
    fuseKillEvery: [4, 9],
    convergenceBoundSeconds: 60,
    uploadGraceSeconds: 5,
  },
  long: {
    name: "long",
    minutes: 5,
    minPods: 6,
    maxPods: 12,
    churnEvery: [2, 6],
    changesPerSecond: 4,
    badEntryChance: 0.05,
    rcloneShare: 0.3,
    writerEvery: [0.8, 2],
    isolationEvery: [1, 2.5],
    consoleEvery: [1.5, 4],
    s3OutageSeconds: 30,
    agentKills: 4,
    agentDownSeconds: [0.5, 5],
    mounterKills: 2,
    mounterDownSeconds: [0.5, 3],
    fuseKillEvery: [4, 10],
    convergenceBoundSeconds: 60,
    uploadGraceSeconds: 10,
  },
};

export interface SoakOptions {
  readonly seed: number;
  readonly profile: Profile;
  /** Length of the load phase. */
  readonly loadSeconds: number;
  /** Where the markdown report goes; undefined: nowhere. */
  readonly report: string | undefined;
  /** Keep the work directory's logs after the run (copied next to the report). */
  readonly keepLogs: boolean;
  /** Negative control: break things near the end; the run must fail. */
  readonly sabotage: boolean;
  /** The command line as a user would type it. */
  readonly command: string;
}

export const USAGE = `usage: npm run soak -- [--profile short|long] [--seed N] [--minutes M] [--report FILE|--no-report]
                      [--keep-logs] [--sabotage]

A seeded soak of the agent on this machine (root, /dev/fuse, runc, s3fs, rclone): pods created and
deleted, annotations flipped, S3 outages, FUSE clients, the agent and the mounter killed with -9,
writes left pending by an unreachable S3 (an entry removed, a client killed), console clients,
long-lived readers holding files open; invariants checked all along and at the end. Exit status 0 when no invariant was
violated, 1 when one was, 2 on a usage or harness error.

  --profile   short (CI, about 2.5 minutes in all) or long (default: long)
  --seed      32-bit seed; printed at start (default: random)
  --minutes   length of the load phase (default: 1.5 for short, 5 for long)
  --report    markdown report (default: RELIABILITY.md); --no-report writes none
  --keep-logs keep the agent's logs, pod files and events in a temporary directory (always
              kept when an invariant is violated)
  --sabotage  negative control: near the end, freeze the agent and break mounts, pods and data;
              the run must then FAIL (exit 1), which shows that the checks can fail
`;

export class UsageError extends Error {}

/** Parses argv (without node and the script). Throws {@link UsageError}. */
export function parseOptions(argv: readonly string[]): SoakOptions | "help" {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: {
        profile: { type: "string" },
        seed: { type: "string" },
        minutes: { type: "string" },
        report: { type: "string" },
        "no-report": { type: "boolean" },
        "keep-logs": { type: "boolean" },
        sabotage: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const v = parsed.values;
  if (v.help === true) return "help";
  const profileName = v.profile ?? "long";
  if (profileName !== "short" && profileName !== "long")
    throw new UsageError(`--profile must be short or long, not "${profileName}"`);
  const profile = PROFILES[profileName];
  let seed = randomSeed();
  if (v.seed !== undefined) {
    if (!/^\d{1,10}$/.test(v.seed) || Number(v.seed) > 0xffffffff)
      throw new UsageError(`--seed must be an integer from 0 to ${0xffffffff}, not "${v.seed}"`);
    seed = Number(v.seed);
  }
  let minutes = profile.minutes;
  if (v.minutes !== undefined) {
    minutes = Number(v.minutes);
    if (!Number.isFinite(minutes) || minutes < 0.5 || minutes > 120)
      throw new UsageError(`--minutes must be a number from 0.5 to 120, not "${v.minutes}"`);
  }
  if (v.report !== undefined && v["no-report"] === true)
    throw new UsageError("--report and --no-report exclude each other");
  const report = v["no-report"] === true ? undefined : (v.report ?? "RELIABILITY.md");
  // The command as it reproduces this run: the seed always, the rest as given.
  const args = [`--profile ${profile.name}`, `--seed ${seed}`];
  if (v.minutes !== undefined) args.push(`--minutes ${v.minutes}`);
  if (v.report !== undefined) args.push(`--report ${v.report}`);
  if (v["no-report"] === true) args.push("--no-report");
  if (v["keep-logs"] === true) args.push("--keep-logs");
  if (v.sabotage === true) args.push("--sabotage");
  return {
    seed,
    profile,
    loadSeconds: Math.round(minutes * 60),
    report,
    keepLogs: v["keep-logs"] === true,
    sabotage: v.sabotage === true,
    command: `npm run soak -- ${args.join(" ")}`,
  };
}
