/**
 * Machine-wide CPU time from `/proc/stat`, so that a run can tell how much CPU other processes took
 * while it measured: on a shared 2-core machine a concurrent test run halves the numbers.
 * Linux only; elsewhere `readMachineCpu` returns undefined and runs are not checked.
 */
import { execFileSync } from "node:child_process";
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

/**
 * Parses a kernel CPU list ("0-1", "0,2-3,7"), as in `Cpus_allowed_list`, into ascending CPU numbers.
 * Throws on anything else, so that a misread never pins a process to the wrong CPU.
 */
export function parseCpuList(text: string): number[] {
  const cpus = new Set<number>();
  for (const part of text.trim().split(",")) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (m === null) throw new Error(`not a CPU list: ${JSON.stringify(text)}`);
    const first = Number(m[1]);
    const last = m[2] === undefined ? first : Number(m[2]);
    if (last < first) throw new Error(`not a CPU list: ${JSON.stringify(text)}`);
    for (let c = first; c <= last; c++) cpus.add(c);
  }
  return [...cpus].sort((a, b) => a - b);
}

/** The CPUs process `pid` may run on; undefined where `/proc/<pid>/status` has no such line (not Linux). */
export function allowedCpus(pid: number): number[] | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    return undefined;
  }
  const line = /^Cpus_allowed_list:\s*(\S+)$/m.exec(text);
  return line === null ? undefined : parseCpuList(line[1]!);
}

/**
 * Restricts every thread of `pid` (`taskset -a`: V8's and libuv's helpers too) to `cpus`; threads
 * it starts later inherit the restriction. Run without a shell.
 */
export function pinThreads(pid: number, cpus: readonly number[]): void {
  if (cpus.length === 0) throw new Error("pinThreads needs at least one CPU");
  execFileSync("taskset", ["-a", "-p", "-c", cpus.join(","), String(pid)], { stdio: "ignore" });
}
