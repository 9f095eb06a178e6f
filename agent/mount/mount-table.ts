/**
 * The mount table as this process sees it, shared by everyone who looks at many mounts in a row,
 * and the health probe of one mount. Both the mounter (which changes the table) and the agent
 * (which only reads it, through its read-only view of the root) use them.
 */
import { readFileSync } from "node:fs";
import { stat } from "node:fs/promises";
import type { Logger } from "../../shared/logger.js";
import { findMount, parseMountinfo, parseMountinfoUnder, type MountInfo } from "./mountinfo.js";

export type ProbeResult = "ok" | "stale" | "absent";

/** One read of the mount table: its text, and its full parse once someone asked for it. */
interface TableRead {
  readonly text: Promise<string>;
  /** When the read started. */
  readonly at: number;
  all?: Promise<readonly MountInfo[]>;
}

// Read synchronously: procfs makes the text in memory and never waits on a disk, while an
// asynchronous read of a file whose size reads 0 is five round trips through the thread pool
// (open, fstat, two reads, close), and a mount waits on two such reads before its client starts.
const readProcMountinfo = async (): Promise<string> => readFileSync("/proc/self/mountinfo", "utf8");

export class MountTable {
  /** The latest read, finished or not; cleared by {@link changed}. */
  private latest: TableRead | undefined;

  constructor(private readonly readText: () => Promise<string> = readProcMountinfo) {}

  /**
   * The mount table (only the mounts at or below `under`, when given), read at most `maxAgeMs` ago
   * and after the last {@link changed}. With hundreds of mounts, reading and parsing the table
   * costs about a millisecond; probing every mount against a fresh copy made a resync cost
   * O(mounts²), so callers that look at many mounts in a row share one copy. 0 always reads anew.
   */
  async read(maxAgeMs = 0, under?: string): Promise<readonly MountInfo[]> {
    const read = this.tableRead(maxAgeMs);
    if (under !== undefined) return parseMountinfoUnder(await read.text, under);
    return (read.all ??= read.text.then(parseMountinfo));
  }

  /** The topmost mount on `mp` itself, if any. */
  async at(mp: string, maxAgeMs: number): Promise<MountInfo | undefined> {
    return findMount(parseMountinfoUnder(await this.tableRead(maxAgeMs).text, mp), mp);
  }

  /** Marks every read made so far as out of date. */
  changed(): void {
    this.latest = undefined;
  }

  private tableRead(maxAgeMs: number): TableRead {
    const now = Date.now();
    const latest = this.latest;
    if (maxAgeMs > 0 && latest !== undefined && now - latest.at <= maxAgeMs) return latest;
    const read: TableRead = { text: this.readText(), at: now };
    this.latest = read;
    // A failed read is not shared: the next caller tries again.
    read.text.catch(() => {
      if (this.latest === read) this.latest = undefined;
    });
    return read;
  }
}

const STALE_CODES = new Set(["ENOTCONN", "EIO", "ECONNABORTED", "ETIMEDOUT"]);

/** Rejects with an `ETIMEDOUT` errno-like error when `p` takes longer than `ms`. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(Object.assign(new Error(`${what} timed out after ${ms} ms`), { code: "ETIMEDOUT" })),
      ms,
    );
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export function errnoOf(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e instanceof Error ? e.message : String(e));
}

export interface ProbeOptions {
  /** A `stat` through the mount slower than this reports "stale". */
  readonly timeoutMs: number;
  /** How old a copy of the table may be. */
  readonly tableMaxAgeMs: number;
  /** The mount's client is known to have exited. */
  readonly clientExited?: boolean;
  readonly log?: Logger;
}

/**
 * Health of a mount point: "absent" when nothing is mounted there, "stale" when a `stat` through
 * it fails (`ENOTCONN` after the client died, `EIO`) or hangs past the timeout, else "ok".
 */
export async function probeMount(
  table: MountTable,
  mountPoint: string,
  o: ProbeOptions,
): Promise<ProbeResult> {
  if ((await table.at(mountPoint, o.tableMaxAgeMs)) === undefined) return "absent";
  // The kernel may answer stat from cached attributes for a while after the client died, so a
  // client known to have exited settles it.
  if (o.clientExited === true) return "stale";
  try {
    await withTimeout(stat(mountPoint), o.timeoutMs, `stat ${mountPoint}`);
    return "ok";
  } catch (e) {
    const code = errnoOf(e);
    if (code === "ENOENT") return "absent";
    if (!STALE_CODES.has(code)) o.log?.warn({ mountPoint, err: code }, "probe failed");
    return "stale";
  }
}
