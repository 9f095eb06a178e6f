/**
 * Part 2 of the `agent` section: sequential read throughput of one large object through the pod's
 * propagated path (`/proc/<container init>/root/datasets/<name>/big.bin`) against the very same
 * FUSE mount read on the host (`<root>/pods/<id>/<name>/big.bin`), alternating.
 *
 * What makes the two comparable: both paths reach the same mount (same s3fs process, same kernel
 * superblock, so the same page cache), so every read must start from the same cache state.
 * - s3fs is not given `kernel_cache`, so FUSE drops the file's pages at every open; on top of that,
 *   when `/proc/sys/vm/drop_caches` is writable, the page cache is dropped before every read
 *   (dentries are kept: both paths end at the same FUSE dentry anyway).
 * - Dropping also evicts the S3 server's copy of the object, which would make each read a disk
 *   read of varying speed; so the server's file is read once right after the drop (outside the
 *   timing), and every timed read finds the source in memory and the FUSE side cold.
 * - The data is checked against what was uploaded; the comparison time is taken out of the timing.
 * - One read varies by ±10–15% (S3 server, s3fs's parallel ranged GETs and the reader share two
 *   cores), so there are many rounds and the order alternates within them. The report judges the
 *   goal on all bytes over all time per path and gives a bootstrap interval, the median of the
 *   rounds' own ratios and the ratio of the medians beside it.
 */
import { createReadStream } from "node:fs";
import { open, readdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { stagingPathOf } from "../agent/mount/host.js";
import type { LocalNode } from "../scripts/lib/local-node.js";
import {
  now,
  openCpuWindow,
  processesMentioning,
  summarize,
  unreadable,
  waitUntil,
} from "./agent-support.js";
import { DISTURBED_CORES } from "./agent-latency.js";
import type { BenchContext } from "./report.js";

export const BIG_BUCKET = "big";
export const BIG_KEY = "big.bin";
const MIB = 1024 * 1024;
const CHUNK = MIB;

export type ReadPath = "container" | "host";

export interface ThroughputPlan {
  readonly rounds: number;
}

export interface ReadSample {
  readonly path: ReadPath;
  readonly round: number;
  readonly mibPerS: number;
  /** The `open()` alone: the only step where the path matters (`read` on an open fd never looks at it). */
  readonly openMs: number;
  readonly otherCores: number | undefined;
  readonly disturbed: boolean;
}

export interface ThroughputResult {
  readonly bytes: number;
  readonly samples: readonly ReadSample[];
  /** First read (host path), not counted. */
  readonly warmupMibPerS: number;
  /** A host read right after the warm-up without dropping anything: shows whether a cache served it. */
  readonly rereadMibPerS: number;
  /** One read through the container path before the rounds, not counted, so that neither path's first read is measured. */
  readonly containerWarmupMibPerS: number;
  /**
   * Median time of one `stat()` of the object through each path, in µs, alternating, with FUSE's
   * attributes cached: the path walk alone, which is all that differs between the two paths.
   */
  readonly statUs: Readonly<Record<ReadPath, number>>;
  readonly droppedCaches: boolean;
  /** The S3 server's file of the object, re-read after each drop; undefined when not found. */
  readonly sourceFile: string | undefined;
}

/**
 * `bytes` (a multiple of 1 MiB) of incompressible data: one random MiB repeated, each copy stamped
 * with its index in its first 8 bytes, so that a chunk served from the wrong offset is caught.
 */
export function bigObject(bytes: number, random: Buffer): Buffer {
  if (random.length !== MIB || bytes % MIB !== 0) throw new Error("bigObject: whole MiB only");
  const out = Buffer.allocUnsafe(bytes);
  for (let i = 0; i < bytes / MIB; i++) {
    random.copy(out, i * MIB);
    out.writeBigUInt64LE(BigInt(i), i * MIB);
  }
  return out;
}

/**
 * Reads `path` sequentially in 1 MiB reads and checks every byte. Returns the whole time in ms
 * (open included, checks excluded) and the time of the open alone.
 */
async function timedRead(path: string, expected: Buffer): Promise<{ ms: number; openMs: number }> {
  const buf = Buffer.allocUnsafe(CHUNK);
  let checkMs = 0;
  let pos = 0;
  const t0 = now();
  const fh = await open(path, "r");
  const openMs = now() - t0;
  try {
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, CHUNK, pos);
      if (bytesRead === 0) break;
      const c0 = now();
      if (!buf.subarray(0, bytesRead).equals(expected.subarray(pos, pos + bytesRead)))
        throw new Error(`${path}: the bytes at offset ${pos} differ from the uploaded object`);
      checkMs += now() - c0;
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
  const ms = now() - t0 - checkMs;
  if (pos !== expected.length) throw new Error(`${path}: read ${pos} bytes, expected ${expected.length}`);
  return { ms, openMs };
}

/** The S3 server's file holding the object: the file of exactly `size` bytes under its data directory. */
async function findSourceFile(dir: string, size: number): Promise<string | undefined> {
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      const found = await findSourceFile(p, size);
      if (found !== undefined) return found;
    } else if (e.isFile() && (await stat(p)).size === size) return p;
  }
  return undefined;
}

/** `n` alternating `stat()` pairs; the median of each path, in µs. */
async function statWalk(
  paths: Readonly<Record<ReadPath, string>>,
  n: number,
): Promise<Record<ReadPath, number>> {
  const times: Record<ReadPath, number[]> = { container: [], host: [] };
  for (let i = 0; i < n; i++)
    for (const p of i % 2 === 0 ? (["container", "host"] as const) : (["host", "container"] as const)) {
      const t0 = now();
      await stat(paths[p]);
      times[p].push((now() - t0) * 1000);
    }
  return { container: summarize(times.container).p50, host: summarize(times.host).p50 };
}

async function readToEnd(path: string): Promise<void> {
  for await (const _chunk of createReadStream(path, { highWaterMark: CHUNK })) {
    /* only to bring it into the page cache */
  }
}

async function dropCaches(): Promise<boolean> {
  // 1: the page cache only. Dentries stay, so that open() compares path walks rather than disk
  // reads of directories that differ between the two paths.
  return writeFile("/proc/sys/vm/drop_caches", "1\n").then(
    () => true,
    () => false,
  );
}

/** Mounts `big` read-only in `podName`, runs the reads, and removes the mount again. */
export async function measureThroughput(
  ctx: BenchContext,
  node: LocalNode,
  podName: string,
  expected: Buffer,
  plan: ThroughputPlan,
): Promise<ThroughputResult> {
  const pod = node.pod(podName);
  const paths: Record<ReadPath, string> = {
    container: `/proc/${pod.container.pid}/root/datasets/${BIG_BUCKET}/${BIG_KEY}`,
    host: join(pod.hostDir, BIG_BUCKET, BIG_KEY),
  };
  const mib = (ms: number): number => expected.length / MIB / (ms / 1000);
  const sourceFile = await findSourceFile(join(node.work, "s3", "data"), expected.length);
  const state = async (): Promise<string | undefined> => (await node.status(podName))[BIG_BUCKET]?.state;

  await node.setBuckets(podName, `${BIG_BUCKET}:ro`);
  try {
    await waitUntil(
      `${BIG_BUCKET} mounted in ${podName}`,
      async () => (await state()) === "mounted",
      30_000,
      20,
    );
    const warmupMibPerS = mib((await timedRead(paths.host, expected)).ms);
    const rereadMibPerS = mib((await timedRead(paths.host, expected)).ms);
    const containerWarmupMibPerS = mib((await timedRead(paths.container, expected)).ms);
    const statUs = await statWalk(paths, 500);
    ctx.progress(
      `  warm-up read ${warmupMibPerS.toFixed(0)} MiB/s; re-read without dropping caches ${rereadMibPerS.toFixed(0)} MiB/s; ` +
        `container path warm-up ${containerWarmupMibPerS.toFixed(0)} MiB/s; ` +
        `stat() ${statUs.container.toFixed(1)} µs through the container, ${statUs.host.toFixed(1)} µs on the host`,
    );
    let droppedCaches = true;
    const samples: ReadSample[] = [];
    for (let round = 1; round <= plan.rounds; round++) {
      const order: ReadPath[] = round % 2 === 1 ? ["container", "host"] : ["host", "container"];
      for (const path of order) {
        droppedCaches = (await dropCaches()) && droppedCaches;
        if (sourceFile !== undefined) await readToEnd(sourceFile);
        const close = await openCpuWindow(node.work);
        const { ms, openMs } = await timedRead(paths[path], expected);
        const otherCores = await close();
        const s: ReadSample = {
          path,
          round,
          mibPerS: mib(ms),
          openMs,
          otherCores,
          disturbed: (otherCores ?? 0) > DISTURBED_CORES,
        };
        samples.push(s);
        ctx.progress(
          `  round ${round} ${path.padEnd(9)} ${s.mibPerS.toFixed(0).padStart(5)} MiB/s (${(ms / 1000).toFixed(2)} s, open ${openMs.toFixed(2)} ms)  ` +
            `others ${otherCores?.toFixed(2) ?? "n/a"} cores`,
        );
      }
    }
    return {
      bytes: expected.length,
      samples,
      warmupMibPerS,
      rereadMibPerS,
      containerWarmupMibPerS,
      statUs,
      droppedCaches,
      sourceFile,
    };
  } finally {
    await node.setBuckets(podName, "");
    const mountPoint = join(pod.hostDir, BIG_BUCKET);
    await waitUntil(
      `${BIG_BUCKET} unmounted from ${podName}`,
      async () =>
        (await state()) === undefined &&
        (await unreadable(paths.container)) &&
        // A client names its staging directory, not the mount point (agent/mount/host.ts).
        (await processesMentioning(stagingPathOf(node.root, mountPoint))).length === 0,
      30_000,
      20,
    );
  }
}
