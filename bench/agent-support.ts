/**
 * Shared pieces of the `agent` section: polling, small-sample statistics, the CPU that this run's
 * own processes used (so that a measurement disturbed by other work on the machine can be told),
 * process lookup by argv, the agent's and the mounter's logs, and a synchronous last-resort
 * clean-up for SIGINT.
 *
 * "This run's own processes" are this process and every process whose argv mentions the run's work
 * directory: the agent and the mounter (`--root <work>/root`), the FUSE clients (their staging
 * directory), the S3 server
 * (its data directory). Their reaped children (umount, fusermount3, exited clients) count through
 * the parents' `cutime`/`cstime`.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { readdir, readFile, readlink } from "node:fs/promises";
import { mountsUnder, parseMountinfo } from "../agent/mount/mountinfo.js";
import type { LocalNode } from "../scripts/lib/local-node.js";
import { percentile } from "./load.js";
import { otherLoad, readMachineCpu } from "./machine.js";

// /proc/<pid>/stat counts in USER_HZ, which is 100 on every Linux architecture that Node supports.
const MS_PER_TICK = 10;

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Milliseconds on the monotonic clock. */
export function now(): number {
  return performance.now();
}

/**
 * Calls `probe` every `intervalMs` (each call awaited before the next) until it returns true.
 * Throws when `timeoutMs` passes first, naming `what`.
 */
export async function waitUntil(
  what: string,
  probe: () => Promise<boolean>,
  timeoutMs: number,
  intervalMs: number,
): Promise<void> {
  const deadline = now() + timeoutMs;
  for (;;) {
    if (await probe()) return;
    if (now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** True when `path` reads as exactly `expected` (UTF-8); false on any error. Asynchronous on purpose. */
export function readsAs(path: string, expected: string): Promise<boolean> {
  return readFile(path, "utf8").then(
    (text) => text === expected,
    () => false,
  );
}

/** True when reading `path` fails (ENOENT once the mount and its directory are gone). */
export function unreadable(path: string): Promise<boolean> {
  return readFile(path).then(
    () => false,
    () => true,
  );
}

export interface Summary {
  readonly n: number;
  readonly p50: number;
  readonly p90: number;
  readonly max: number;
}

/** Nearest-rank p50/p90 and the maximum; NaN everywhere for an empty sample. */
export function summarize(values: readonly number[]): Summary {
  const sorted = Float64Array.from(values).sort();
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    max: sorted.length > 0 ? sorted[sorted.length - 1]! : Number.NaN,
  };
}

/** Fields of `/proc/<pid>/stat` after the command name, so that `rest[n - 3]` is field n of proc(5). */
async function statFields(pid: number): Promise<string[] | undefined> {
  const text = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => undefined);
  if (text === undefined) return undefined;
  // The command name may contain spaces and parentheses: cut after the last ')'.
  return text.slice(text.lastIndexOf(")") + 2).split(" ");
}

/** utime + stime + cutime + cstime of `pid`, in ms; undefined when it is gone. */
export async function processCpuMs(pid: number): Promise<number | undefined> {
  const f = await statFields(pid);
  if (f === undefined) return undefined;
  return [11, 12, 13, 14].reduce((sum, i) => sum + Number(f[i] ?? 0), 0) * MS_PER_TICK;
}

/** Live (not zombie) processes whose argv contains `needle` as a substring of one argument. */
export async function processesMentioning(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    if (!cmdline.split("\0").some((a) => a.includes(needle))) continue;
    const f = await statFields(Number(entry));
    if (f !== undefined && f[0] !== "Z") pids.push(Number(entry));
  }
  return pids;
}

/** CPU used so far by this process and by every process whose argv mentions `work`, in ms. */
export async function ownCpuMs(work: string): Promise<number> {
  const pids = new Set([process.pid, ...(await processesMentioning(work))]);
  let total = 0;
  for (const pid of pids) total += (await processCpuMs(pid)) ?? 0;
  return total;
}

/** `/proc/<pid>/status` memory fields, in KiB. */
export interface ProcessMemory {
  readonly rssKiB: number;
  /** Peak RSS since the process started. */
  readonly hwmKiB: number;
  /** Anonymous memory: the JS heaps, malloc, stacks. */
  readonly anonKiB: number;
  /** File-backed memory: mostly the node binary's pages. */
  readonly fileKiB: number;
}

export async function processMemory(pid: number): Promise<ProcessMemory | undefined> {
  const text = await readFile(`/proc/${pid}/status`, "utf8").catch(() => undefined);
  if (text === undefined) return undefined;
  const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1]);
  return {
    rssKiB: field("VmRSS"),
    hwmKiB: field("VmHWM"),
    anonKiB: field("RssAnon"),
    fileKiB: field("RssFile"),
  };
}

/** What a process is: the file its `/proc/<pid>/exe` points at, and its parent. */
export async function processIdentity(pid: number): Promise<{ exe: string; ppid: number } | undefined> {
  const f = await statFields(pid);
  if (f === undefined) return undefined;
  const exe = await readlink(`/proc/${pid}/exe`).catch(() => "?");
  return { exe, ppid: Number(f[1]) };
}

/** Direct children of `pid` (any state but zombie). */
export async function childrenOf(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const f = await statFields(Number(entry));
    if (f !== undefined && f[0] !== "Z" && Number(f[1]) === pid) out.push(Number(entry));
  }
  return out;
}

/**
 * Starts measuring how much CPU other processes (and hypervisor steal) took; the returned function
 * ends the window and gives that load in cores (undefined off Linux).
 */
export async function openCpuWindow(work: string): Promise<() => Promise<number | undefined>> {
  const machine0 = readMachineCpu();
  const own0 = await ownCpuMs(work);
  const t0 = now();
  return async () => {
    const own1 = await ownCpuMs(work);
    const machine1 = readMachineCpu();
    return otherLoad(machine0, machine1, own1 - own0, now() - t0);
  };
}

/** One line of the agent's or the mounter's pino log. */
export interface AgentLogLine {
  /** Milliseconds since the epoch. */
  readonly time: number;
  readonly msg: string;
  readonly [field: string]: unknown;
}

/** The agent's or the mounter's JSON log lines (non-JSON lines skipped); `time` as epoch ms whether pino wrote a number or ISO text. */
export function parseAgentLog(text: string): AgentLogLine[] {
  const out: AgentLogLine[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith("{")) continue;
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(line) as Record<string, unknown>;
    } catch {
      continue; // a line cut by a concurrent write
    }
    const time = typeof o.time === "string" ? Date.parse(o.time) : o.time;
    if (typeof time === "number" && Number.isFinite(time) && typeof o.msg === "string")
      out.push({ ...o, time, msg: o.msg });
  }
  return out;
}

function pidsMentioningSync(needle: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let cmdline = "";
    try {
      cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8");
    } catch {
      continue;
    }
    if (cmdline.split("\0").some((a) => a.includes(needle))) out.push(Number(entry));
  }
  return out;
}

/**
 * Last-resort clean-up of a {@link LocalNode}, synchronous so that it can run from an exit or
 * signal handler: kills the agent and the mounter, deletes the runc containers and their bundles, lazily unmounts everything under
 * the work directory (deepest first, without touching the mounts' content), kills every process
 * that still mentions the work directory (FUSE clients, the S3 server), and removes the directory
 * when nothing is mounted under it any more. Does nothing once the directory is gone.
 */
export function forceCleanUp(node: LocalNode): void {
  if (!existsSync(node.work)) return;
  for (const p of [node.agent, node.mounter])
    if (p !== undefined && p.exitStatus() === undefined) p.kill("SIGKILL");
  for (const c of node.runc.list()) {
    spawnSync("runc", ["delete", "--force", c.id], { timeout: 10_000 });
    rmSync(c.bundle, { recursive: true, force: true }); // config.json and runc.log; the rootfs is shared, elsewhere
  }
  const mounted = (): string[] =>
    mountsUnder(parseMountinfo(readFileSync("/proc/self/mountinfo", "utf8")), node.work).map(
      (m) => m.mountPoint,
    );
  for (let pass = 0; pass < 4 && mounted().length > 0; pass++)
    for (const mp of mounted()) spawnSync("umount", ["-c", "-l", mp], { timeout: 10_000 });
  for (const pid of pidsMentioningSync(node.work)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* already gone */
    }
  }
  if (mounted().length === 0) rmSync(node.work, { recursive: true, force: true });
  else process.stderr.write(`bench: not removing ${node.work}: still mounted: ${mounted().join(", ")}\n`);
}

/**
 * Waits until no live process mentions `work` any more (FUSE clients exit once unmounted), then
 * SIGKILLs the ones left, by pid. Returns how many had to be killed.
 */
export async function reapProcesses(work: string, graceMs: number): Promise<number> {
  const deadline = now() + graceMs;
  let left = await processesMentioning(work);
  while (left.length > 0 && now() < deadline) {
    await sleep(100);
    left = await processesMentioning(work);
  }
  for (const pid of left) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* already gone */
    }
  }
  return left.length;
}

/** `findmnt -rn -t fuse.s3fs,fuse.rclone`: every s3fs/rclone mount on the machine, one per line. */
export function fuseMountsOnHost(): string[] {
  const r = spawnSync("findmnt", ["-rn", "-t", "fuse.s3fs,fuse.rclone"], {
    encoding: "utf8",
    timeout: 10_000,
  });
  return (r.stdout ?? "").split("\n").filter((l) => l.trim() !== "");
}
