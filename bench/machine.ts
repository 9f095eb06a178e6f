/**
 * Machine-wide CPU time from `/proc/stat`, so that a run can tell how much CPU other processes took
 * while it measured: on a shared 2-core machine a concurrent test run halves the numbers.
 * Linux only; elsewhere `readMachineCpu` returns undefined and runs are not checked.
 */
import { readFileSync } from "node:fs";

/** Cumulative CPU time of all cores, in ms. */
export interface MachineCpu {
  /** user + nice + system (interrupt time excluded: loopback traffic lands there, not in a process). */
  readonly busyMs: number;
  /** Time the hypervisor gave to someone else. */
  readonly stealMs: number;
}

// /proc/stat counts in USER_HZ, which is 100 on every Linux architecture that Node supports.
const MS_PER_TICK = 10;

export function readMachineCpu(): MachineCpu | undefined {
  let text: string;
  try {
    text = readFileSync("/proc/stat", "utf8");
  } catch {
    return undefined;
  }
  const fields = text.split("\n", 1)[0]?.trim().split(/\s+/);
  if (fields?.[0] !== "cpu" || fields.length < 9) return undefined;
  const n = fields.slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , , , steal = 0] = n;
  return { busyMs: (user + nice + system) * MS_PER_TICK, stealMs: steal * MS_PER_TICK };
}

/**
 * CPU that was not ours during `wallMs`, in cores: other processes' time (everything busy minus
 * `ownMs`) plus hypervisor steal. Undefined when `/proc/stat` could not be read.
 */
export function otherLoad(
  before: MachineCpu | undefined,
  after: MachineCpu | undefined,
  ownMs: number,
  wallMs: number,
): number | undefined {
  if (before === undefined || after === undefined || wallMs <= 0) return undefined;
  const others = Math.max(0, after.busyMs - before.busyMs - ownMs);
  return (others + (after.stealMs - before.stealMs)) / wallMs;
}
