/**
 * Part 1 of the `agent` section: from a change of a running pod's `dynamic-volumes/buckets`
 * annotation to a seeded file reading correctly inside its runc container, against the raw FUSE
 * client's own mount-to-readable time, both measured in the same run.
 *
 * - baseline: this process builds the client's command with the agent's own builder
 *   (`buildMount`, same flags, same environment), writes its files, starts it with `agent/exec`
 *   `start` on a fresh directory, and polls the seeded file on that directory; then `unmount`. The
 *   time counts from the client running (`start` resolves once it is forked and exec'd): this
 *   process's own fork, slow for a large Node process, is not the client's.
 * - agent: `LocalNode.setBuckets` rewrites the pod file (as `kubectl annotate` would), and the file
 *   is polled inside the running container through `/proc/<container init>/root/datasets/...`,
 *   timed from the moment the new pod file is renamed into place; then the entry is removed again and the agent is waited for until the mount, its client and its
 *   status entry are gone.
 *
 * Both sides poll with the same loop (an async `readFile` every `pollMs`, one at a time). Each round
 * runs one pair per mounter, baseline first in odd rounds and agent first in even ones; a pair
 * during which other processes took more than {@link DISTURBED_CORES} is measured again while the
 * budget allows.
 */
import { chmod, mkdir, open, rm, rmdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { start, unmount } from "../agent/mount/exec.js";
import { defaultBaseEnv } from "../agent/mount/fuse-mount.js";
import { buildMount, type MountCommand, type MounterName } from "../agent/mount/mounters/index.js";
import { stagingPathOf } from "../agent/mount/host.js";
import { findMount } from "../agent/mount/mountinfo.js";
import type { LocalNode } from "../scripts/lib/local-node.js";
import { readMountinfo } from "../scripts/lib/namespaces.js";
import { S3RVER_CREDENTIALS, S3RVER_REGION } from "../scripts/lib/s3-server.js";
import {
  now,
  openCpuWindow,
  parseAgentLog,
  processesMentioning,
  readsAs,
  sleep,
  unreadable,
  waitUntil,
} from "./agent-support.js";
import type { BenchContext } from "./report.js";

export const LATENCY_BUCKET = "lat";
export const LATENCY_FILE = "hello.txt";
export const LATENCY_CONTENT = "hello from the latency bucket\n";
/** A pair during which other processes (or steal) took more than this, in cores, is measured again. */
export const DISTURBED_CORES = 0.25;
const STEP_TIMEOUT_MS = 30_000;

export type LatencySubject = "baseline" | "agent";
/** The clients measured; geesefs is not packaged on these machines. */
export type LatencyMounter = Extract<MounterName, "s3fs" | "rclone">;

export interface LatencyPlan {
  readonly rounds: number;
  /** Extra measurements allowed for one disturbed pair. */
  readonly retries: number;
  /** A retry only starts while the whole part is within this. */
  readonly budgetMs: number;
  readonly pollMs: number;
}

export interface LatencySample {
  readonly mounter: LatencyMounter;
  readonly round: number;
  readonly subject: LatencySubject;
  /**
   * The measured time. Baseline: from the client running (`start` resolved: forked and exec'd) to the
   * file reading correctly, the raw client's own mount-to-readable time. Agent: from the annotation
   * write to the file reading correctly inside the container.
   */
  readonly readableMs: number;
  /**
   * Baseline: how long this process took to fork and exec the client (not part of `readableMs`).
   * Agent: from the annotation write to the mounter's "client started" log line (undefined when not found).
   */
  spawnMs: number | undefined;
  /** Agent only: from the annotation write to the status file reading `mounted`. */
  readonly statusMs?: number;
  /** Agent only: from removing the entry to the file no longer readable in the container. */
  readonly removalMs?: number;
  /** Wall-clock time of the trigger, to find the agent's log lines. */
  readonly wallStart: number;
  /** CPU others took during the pair, in cores; undefined off Linux. */
  readonly otherCores: number | undefined;
  readonly disturbed: boolean;
}

/** Writes the command's files (0600), its cache directory and the mount point, as `FuseMounter` does. */
async function prepare(cmd: MountCommand, stateDir: string, mountPoint: string): Promise<void> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  await chmod(stateDir, 0o700);
  for (const f of cmd.files) {
    await mkdir(dirname(f.path), { recursive: true, mode: 0o700 });
    const fh = await open(f.path, "w", f.mode);
    try {
      await fh.writeFile(f.content);
    } finally {
      await fh.close();
    }
  }
  if (cmd.cacheDir !== undefined) await mkdir(cmd.cacheDir, { recursive: true, mode: 0o700 });
  await mkdir(mountPoint, { recursive: true, mode: 0o755 });
}

/** The raw client on a fresh directory: start → seeded file readable; then unmount. */
async function baselineOnce(
  node: LocalNode,
  mounter: MounterName,
  tag: string,
  pollMs: number,
): Promise<Pick<LatencySample, "readableMs" | "spawnMs" | "wallStart">> {
  const mountPoint = join(node.work, "baseline", tag);
  const stateDir = join(node.work, "baseline-state", tag);
  const cmd = buildMount(
    mounter,
    {
      bucket: LATENCY_BUCKET,
      prefix: "",
      readOnly: false,
      mountPoint,
      endpoint: node.s3.endpoint,
      region: S3RVER_REGION,
      credentials: {
        accessKeyID: S3RVER_CREDENTIALS.accessKeyId,
        secretAccessKey: S3RVER_CREDENTIALS.secretAccessKey,
      },
      options: {},
      stateDir,
    },
    { baseEnv: defaultBaseEnv() },
  );
  await prepare(cmd, stateDir, mountPoint);
  const file = join(mountPoint, LATENCY_FILE);
  const wallStart = Date.now();
  const t0 = now();
  const client = await start(cmd.command, cmd.argv, {
    env: cmd.env,
    logFile: join(stateDir, "client.log"),
  });
  const running = now();
  const spawnMs = running - t0;
  try {
    await waitUntil(
      `${LATENCY_FILE} through the raw ${mounter} mount`,
      async () => {
        if (client.exitStatus() !== undefined)
          throw new Error(`the raw ${mounter} exited: ${client.stderrTail().slice(-500)}`);
        return readsAs(file, LATENCY_CONTENT);
      },
      STEP_TIMEOUT_MS,
      pollMs,
    );
    return { readableMs: now() - running, spawnMs, wallStart };
  } finally {
    await unmount(mountPoint);
    await Promise.race([client.exited, sleep(3000)]);
    await client.stop(1000);
    await rm(stateDir, { recursive: true, force: true });
    await rmdir(mountPoint);
  }
}

/** Annotation entry added → readable in the container → status mounted; removed → unreadable → all gone. */
async function agentOnce(
  node: LocalNode,
  podName: string,
  pollMs: number,
): Promise<Pick<LatencySample, "readableMs" | "statusMs" | "removalMs" | "wallStart">> {
  const pod = node.pod(podName);
  const inside = `/proc/${pod.container.pid}/root/datasets/${LATENCY_BUCKET}/${LATENCY_FILE}`;
  const mountPoint = join(pod.hostDir, LATENCY_BUCKET);
  const state = async (): Promise<string | undefined> => (await node.status(podName))[LATENCY_BUCKET]?.state;

  // From the moment the new pod file is in place: writing it is the harness's work, not the agent's.
  const t0 = await node.setBuckets(podName, LATENCY_BUCKET);
  // Log lines carry whole milliseconds.
  const wallStart = Math.floor(performance.timeOrigin + t0);
  await waitUntil(
    `${LATENCY_FILE} inside ${podName}`,
    () => readsAs(inside, LATENCY_CONTENT),
    STEP_TIMEOUT_MS,
    pollMs,
  );
  const readableMs = now() - t0;
  await waitUntil(`${podName} status mounted`, async () => (await state()) === "mounted", STEP_TIMEOUT_MS, 5);
  const statusMs = now() - t0;

  const t1 = await node.setBuckets(podName, "");
  await waitUntil(`${LATENCY_FILE} gone from ${podName}`, () => unreadable(inside), STEP_TIMEOUT_MS, pollMs);
  const removalMs = now() - t1;
  // The next round starts from nothing: no mount, no client, no status entry.
  await waitUntil(
    `the agent to finish unmounting ${mountPoint}`,
    async () =>
      (await state()) === undefined &&
      findMount(await readMountinfo(), mountPoint) === undefined &&
      // A client names its staging directory, not the mount point (agent/mount/host.ts).
      (await processesMentioning(stagingPathOf(node.root, mountPoint))).length === 0,
    STEP_TIMEOUT_MS,
    20,
  );
  return { readableMs, statusMs, removalMs, wallStart };
}

/**
 * Runs the rounds. `pods` names, per mounter, a running pod whose mounter annotation selects it.
 * Returns every sample, disturbed ones included (flagged); warm-up pairs are not returned.
 */
export async function measureLatency(
  ctx: BenchContext,
  node: LocalNode,
  pods: Readonly<Record<LatencyMounter, string>>,
  plan: LatencyPlan,
): Promise<LatencySample[]> {
  const samples: LatencySample[] = [];
  const started = now();
  const pair = async (mounter: LatencyMounter, round: number, tag: string): Promise<LatencySample[]> => {
    const close = await openCpuWindow(node.work);
    const order: LatencySubject[] = round % 2 === 1 ? ["baseline", "agent"] : ["agent", "baseline"];
    const got: Array<Omit<LatencySample, "otherCores" | "disturbed">> = [];
    for (const subject of order) {
      if (subject === "baseline") {
        const r = await baselineOnce(node, mounter, tag, plan.pollMs);
        got.push({ mounter, round, subject, ...r });
      } else {
        const r = await agentOnce(node, pods[mounter], plan.pollMs);
        got.push({ mounter, round, subject, spawnMs: undefined, ...r });
      }
      await sleep(100);
    }
    const otherCores = await close();
    const disturbed = (otherCores ?? 0) > DISTURBED_CORES;
    return got.map((s) => ({ ...s, otherCores, disturbed }));
  };

  for (const mounter of ["s3fs", "rclone"] as const) {
    const warm = await pair(mounter, 1, `${mounter}-warmup`);
    ctx.progress(
      `  warm-up ${mounter}: ${warm.map((s) => `${s.subject} ${s.readableMs.toFixed(0)} ms`).join(", ")}`,
    );
  }
  for (let round = 1; round <= plan.rounds; round++)
    for (const mounter of ["s3fs", "rclone"] as const)
      for (let attempt = 0; ; attempt++) {
        const got = await pair(mounter, round, `${mounter}-${round}-${attempt}`);
        samples.push(...got);
        const b = got.find((s) => s.subject === "baseline")!;
        const a = got.find((s) => s.subject === "agent")!;
        ctx.progress(
          `  round ${round} ${mounter.padEnd(6)} raw ${b.readableMs.toFixed(1).padStart(6)} ms  ` +
            `agent ${a.readableMs.toFixed(1).padStart(6)} ms (status mounted ${a.statusMs?.toFixed(0)} ms, ` +
            `removed ${a.removalMs?.toFixed(0)} ms)  others ${b.otherCores?.toFixed(2) ?? "n/a"} cores`,
        );
        if (!b.disturbed || attempt >= plan.retries || now() - started > plan.budgetMs) break;
        ctx.progress("  other processes took CPU; measuring this pair again");
      }

  // When each client was started, from the mounter's debug log line (the agent asks the mounter
  // over its socket; the mounter forks and execs the client).
  const log = parseAgentLog(await node.mounterLog());
  for (const s of samples) {
    if (s.subject !== "agent") continue;
    const pod = node.pod(pods[s.mounter]);
    const mountPoint = join(pod.hostDir, LATENCY_BUCKET);
    const line = log.find(
      (l) => l.msg === "client started" && l.mountPoint === mountPoint && l.time >= s.wallStart,
    );
    s.spawnMs = line !== undefined ? line.time - s.wallStart : undefined;
  }
  return samples;
}
