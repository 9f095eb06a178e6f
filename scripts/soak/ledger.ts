/**
 * What the soak counts: load, faults, bad inputs, violations per invariant (with a few examples
 * each), and errors of the harness itself, which are reported but are not the product's fault.
 */

export const INVARIANTS = {
  convergence: "convergence: live pods match their annotation within the bound",
  leak: "nothing leaked (mounts, FUSE processes, state and pod directories, fds, RSS)",
  stale: "no stale mount (ENOTCONN) at the end",
  data: "no acknowledged write lost or corrupted",
  writeBack:
    "write-back: writes an unmount could not upload are kept and announced (WriteBackPending), and the next mount uploads them",
  isolation: "no pod observed a mount of another pod or a bucket it never asked for",
  agentKill:
    "an agent kill (-9) leaves every mount as it was: the same FUSE client once the agent is back, no remount",
  readers:
    "files held open on mounts the soak never changes read without error, except across a mounter kill or an S3 outage, and read again after them",
  crash: "no crash or unhandled error of the agent that the soak did not cause",
  console:
    "console: bad inputs refused cleanly (never accepted, never an internal error), every request answered, the agent keeps serving",
} as const;
export type Invariant = keyof typeof INVARIANTS;

const MAX_EXAMPLES = 12;

interface Tally {
  count: number;
  examples: string[];
}

function add(t: Tally, detail: string): void {
  t.count++;
  if (t.examples.length < MAX_EXAMPLES) t.examples.push(detail);
}

export class Ledger {
  readonly violations = new Map<Invariant, Tally>();
  readonly counters = new Map<string, number>();
  readonly harness: Tally = { count: 0, examples: [] };
  /** Violations that match a known failure signature: a bug seen before, so a regression. */
  readonly signatures = new Map<string, Tally>();
  /** Per invariant: how many times it was checked (samples, probes, objects). */
  readonly checks = new Map<Invariant, number>();
  private readonly t0 = Date.now();

  constructor(private readonly log: (line: string) => void) {}

  /** Seconds since the start of the run, for messages. */
  at(): string {
    return `t+${((Date.now() - this.t0) / 1000).toFixed(1)}s`;
  }

  violate(invariant: Invariant, detail: string): void {
    const t = this.violations.get(invariant) ?? { count: 0, examples: [] };
    this.violations.set(invariant, t);
    add(t, `${this.at()} ${detail}`);
    this.log(`VIOLATION [${invariant}] ${detail}`);
  }

  /** A violation of `invariant` that matches a known failure signature (named in the report). */
  violateMatching(invariant: Invariant, signature: string, detail: string): void {
    const t = this.signatures.get(signature) ?? { count: 0, examples: [] };
    this.signatures.set(signature, t);
    add(t, `${this.at()} ${detail}`);
    this.violate(invariant, `${detail} [signature: ${signature}]`);
  }

  checked(invariant: Invariant, n = 1): void {
    this.checks.set(invariant, (this.checks.get(invariant) ?? 0) + n);
  }

  count(name: string, n = 1): void {
    this.counters.set(name, (this.counters.get(name) ?? 0) + n);
  }

  get(name: string): number {
    return this.counters.get(name) ?? 0;
  }

  harnessError(where: string, e: unknown): void {
    const msg = `${where}: ${e instanceof Error ? e.message : String(e)}`.split("\n")[0]!.slice(0, 300);
    add(this.harness, `${this.at()} ${msg}`);
  }

  violationCount(): number {
    let n = 0;
    for (const t of this.violations.values()) n += t.count;
    return n;
  }
}
