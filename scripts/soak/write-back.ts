/**
 * The write-back faults: writes that rclone acknowledged from its cache while S3 could not be
 * reached, then an unmount before the upload. Once per run each:
 *
 * - **S3 unreachable while an entry with pending writes is removed**: the agent waits out the
 *   upload grace, stops the client, must keep its cache and say so (`WriteBackPending`); the entry
 *   is added back once S3 answers, and the new mount must upload the write.
 * - **client killed with pending writes**: the agent remounts the stale mount, must keep the cache
 *   for the new client and say so; that client must upload the write once S3 answers.
 *
 * The pods of these faults live in a namespace of their own whose Secret points at a second S3
 * server, and only that server is frozen, with SIGSTOP (a connection stays open and nothing is
 * answered): a frozen endpoint holds every request of every client that uses it for as long as it
 * is frozen, and the rest of the load keeps its own server. The write is 16 MiB (more than the
 * loopback socket buffers take in, so a dead client's request cannot complete it), its file is
 * created while S3 answers and closed while it does not, and S3 stays frozen until the client that
 * took the write is gone. At the end the write must be in S3 with its SHA-256, uploaded by a mount,
 * and the pods stay reserved so that no random writer uses their server.
 */
import { createCipheriv, createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { GetObjectCommand } from "@aws-sdk/client-s3";
import { HeldWriter } from "../lib/held-writer.js";
import { BUCKETS, keyOf, markerText, PREFIXES } from "./catalog.js";
import { catFile, fuseProcesses } from "./observe.js";
import type { Prng } from "./prng.js";
import type { Tracker } from "./tracker.js";
import type { S3Server } from "../lib/s3-server.js";
import type { SoakPod, World } from "./world.js";
import type { WriteRecord } from "./writers.js";

/** Bigger than what loopback socket buffers hold, so that an upload to a frozen server stays pending. */
export const PENDING_WRITE_BYTES = 16 * 1024 * 1024;
/** The mount name of the write-back pods. */
const NAME = "wb";
/** Their namespace; its Secret points at {@link World.writeBackS3}. */
export const WRITE_BACK_NAMESPACE = "team-wb";

export interface WriteBackPlan {
  /** When the "entry removed while S3 is unreachable" fault starts (ms epoch). */
  readonly removeAt: number;
  /** When the "client killed with pending writes" fault starts (ms epoch). */
  readonly killAt: number;
}

/** Deterministic bytes for a file of the run (AES-CTR over zeros, keyed by seed and name). */
function contentOf(seed: number, file: string): Buffer {
  const key = createHash("sha256").update(`${seed}/${file}`).digest();
  return createCipheriv("aes-256-ctr", key, Buffer.alloc(16)).update(Buffer.alloc(PENDING_WRITE_BYTES));
}

interface PodEvent {
  readonly name: string;
  readonly reason: string;
  readonly type: string;
  readonly message: string;
  readonly time: string;
}

async function readEvents(w: World): Promise<PodEvent[]> {
  const text = await readFile(join(w.node.podsDir, "events.jsonl"), "utf8").catch(() => "");
  return text
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as PodEvent);
}

async function until(w: World, what: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !w.aborted) {
    if (await what()) return true;
    await w.sleep(200);
  }
  return false;
}

/** The SHA-256 of an object, or a description of why there is none (while the server runs). */
async function digestOf(s3: S3Server, bucket: string, key: string): Promise<string> {
  try {
    const r = await s3.client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    const body = await r.Body!.transformToByteArray();
    return createHash("sha256").update(body).digest("hex");
  } catch (e) {
    return (e as Error).name;
  }
}

/** SIGSTOP and SIGCONT of the write-back server, idempotent. */
class Freezer {
  private frozen = false;
  constructor(private readonly s3: S3Server) {}
  freeze(): void {
    if (this.frozen) return;
    process.kill(this.s3.pid, "SIGSTOP");
    this.frozen = true;
  }
  thaw(): void {
    if (!this.frozen) return;
    this.frozen = false;
    try {
      process.kill(this.s3.pid, "SIGCONT");
    } catch {
      /* gone */
    }
  }
}

/**
 * Both faults, at their planned times, each in a fresh rclone pod that the random actors leave
 * alone; their writes go to `writes`.
 */
export async function writeBackFaults(
  w: World,
  tracker: Tracker,
  writes: WriteRecord[],
  plan: WriteBackPlan,
): Promise<void> {
  const s3 = w.writeBackS3;
  if (s3 === undefined) return;
  const freezer = new Freezer(s3);
  const rng = w.rng("write-back");
  for (const [at, kind] of [
    [plan.removeAt, "remove"],
    [plan.killAt, "kill"],
  ] as const) {
    await w.until(at);
    if (w.aborted) return;
    // Alone among the agent and mounter kills: a mounter kill would take the pending write's client.
    await w.exclusive(() => oneFault(w, tracker, writes, s3, freezer, rng, kind));
  }
}

async function oneFault(
  w: World,
  tracker: Tracker,
  writes: WriteRecord[],
  s3: S3Server,
  freezer: Freezer,
  rng: Prng,
  kind: "remove" | "kill",
): Promise<void> {
  if (w.aborted) return;
  const bucket = rng.pick(BUCKETS);
  const prefix = rng.pick(PREFIXES);
  const entry = `${NAME}=${bucket}${prefix === "" ? "" : `/${prefix}`}`;
  // Reserved for good: the random writers would write to the other server.
  const pod = await w.createPod(rng, entry, "rclone", { reserved: true, namespace: WRITE_BACK_NAMESPACE });
  w.ledger.count("pods.created");
  w.ledger.count("pods.created.rclone");
  try {
    await fault(w, tracker, writes, s3, freezer, pod, kind, entry, { bucket, prefix });
  } catch (e) {
    w.ledger.harnessError(`write-back fault (${kind})`, e);
  } finally {
    freezer.thaw();
  }
}

async function fault(
  w: World,
  tracker: Tracker,
  writes: WriteRecord[],
  s3: S3Server,
  freezer: Freezer,
  pod: SoakPod,
  kind: "remove" | "kill",
  entry: string,
  target: { bucket: string; prefix: string },
): Promise<void> {
  const L = w.ledger;
  const mounted = async (): Promise<boolean> => (await w.node.status(pod.name))[NAME]?.state === "mounted";
  if (!(await until(w, mounted, 30_000))) {
    L.count(`writeBack.${kind}.notMounted`);
    return;
  }
  const marker = await catFile(`/proc/${pod.containerPid}/root/datasets/${NAME}/marker.txt`, 8000);
  if (!marker.ok || marker.text !== markerText(target.bucket, target.prefix)) {
    L.count(`writeBack.${kind}.markerUnreadable`);
    return;
  }
  const mp = `${pod.hostDir}/${NAME}`;
  const clients = async (): Promise<number[]> =>
    (await fuseProcesses(pod.hostDir)).filter((p) => p.mountPoint === mp).map((p) => p.pid);
  const file = `wb-${kind}-${w.opts.seed}.bin`;
  const data = contentOf(w.opts.seed, file);
  const writer = new HeldWriter(w.node.pod(pod.name).container.id, NAME, file);
  // Not an outage of the load's server: no window, so the convergence figures stay comparable.
  try {
    const opened = await Promise.race([
      writer.opened.then(
        () => true,
        () => false,
      ),
      w.sleep(20_000).then(() => false),
    ]);
    if (!opened) {
      L.count(`writeBack.${kind}.notOpened`);
      return;
    }
    w.log(
      `fault: S3 frozen; ${kind === "remove" ? "an entry with a pending write is removed" : "an rclone client with a pending write is killed"} (pod ${pod.name})`,
    );
    freezer.freeze();
    const t = Date.now();
    writer.finish(data);
    const r = await Promise.race([writer.done, w.sleep(60_000).then(() => undefined)]);
    const code = r === undefined ? null : r.code;
    L.count(code === 0 ? "writeBack.writesAcknowledged" : `writeBack.writesFailed.${code ?? "timeout"}`);
    writes.push({
      pod: pod.name,
      mounter: "rclone",
      name: NAME,
      file,
      sha256: createHash("sha256").update(data).digest("hex"),
      bytes: data.length,
      t,
      code,
      marker: markerText(target.bucket, target.prefix).trim(),
      stderr: (r?.stderr ?? "").trim().slice(0, 200),
    });
    if (code !== 0) return;
    const before = await clients();
    if (kind === "remove") {
      tracker.intend(pod, "", "flip");
      await w.node.setBuckets(pod.name, "");
      L.count("changes.flips");
      // The agent waits out the upload grace, then stops the client. S3 stays frozen until then.
      const grace = w.opts.profile.uploadGraceSeconds * 1000;
      const t0 = Date.now();
      const gone = await until(
        w,
        async () => (await clients()).length === 0 && (await w.node.status(pod.name))[NAME] === undefined,
        grace + 60_000,
      );
      L.checked("writeBack");
      if (!gone)
        L.violate(
          "writeBack",
          `pod ${pod.name}: the client of a removed entry still ran ${grace / 1000 + 60} s later (upload grace ${grace / 1000} s)`,
        );
      else L.count("writeBack.remove.unmountMs", Date.now() - t0);
    } else {
      // rclone starts the upload at the close (--vfs-write-back 0s): it is under way when the client dies.
      await w.sleep(1000);
      for (const pid of before) process.kill(pid, "SIGKILL");
      L.count("faults.fuseKills");
      L.count("faults.fuseKills.rclone");
      // S3 stays frozen until the agent has replaced the client.
      const replaced = await until(w, async () => (await clients()).some((p) => !before.includes(p)), 30_000);
      if (!replaced) L.count("writeBack.kill.notReplacedWhileFrozen");
    }
  } finally {
    freezer.thaw();
    writer.kill();
  }
  w.log("fault: S3 answers again");
  L.count(kind === "remove" ? "faults.writeBack.removedWhileUnreachable" : "faults.writeBack.clientKilled");
  const key = keyOf(target.prefix, file);
  const sha = createHash("sha256").update(data).digest("hex");
  if (kind === "remove") {
    // Only a write that was really pending tests anything: the stopped client must not have stored it.
    await w.sleep(1500);
    if ((await digestOf(s3, target.bucket, key)) === sha) L.count("writeBack.remove.notPending");
    else L.count("writeBack.remove.pendingConfirmed");
  }
  // The agent must have said so, on the pod, naming the mount.
  const said = await until(
    w,
    async () =>
      (await readEvents(w)).some(
        (e) =>
          e.name === pod.name &&
          e.reason === "WriteBackPending" &&
          e.type === "Warning" &&
          e.message.startsWith(`${NAME}: `),
      ),
    15_000,
  );
  L.checked("writeBack");
  if (!said) L.violate("writeBack", `pod ${pod.name}: no WriteBackPending event after the ${kind} fault`);
  if (kind === "remove") {
    // Added back, as the event tells a user to: the new mount must upload the kept write.
    tracker.intend(pod, entry, "flip");
    await w.node.setBuckets(pod.name, entry);
    L.count("changes.flips");
  }
}

/**
 * The end of the run: every acknowledged write of these faults is in the write-back server with its
 * SHA-256, uploaded by a mount made again from the kept cache (the soak uploads nothing there).
 */
export async function checkWriteBackWrites(w: World, writes: readonly WriteRecord[]): Promise<void> {
  const s3 = w.writeBackS3;
  if (s3 === undefined) return;
  const L = w.ledger;
  for (const x of writes) {
    if (x.code !== 0) continue;
    const [bucket, prefix] = x.marker.split(":");
    const key = keyOf(prefix ?? "", x.file);
    L.checked("data");
    L.checked("writeBack");
    // A mount that waited out an S3 outage may still be uploading: give it the time a user would.
    const deadline = Date.now() + 60_000;
    let got = await digestOf(s3, bucket ?? "", key);
    while (got !== x.sha256 && Date.now() < deadline && !w.aborted) {
      await w.sleep(1000);
      got = await digestOf(s3, bucket ?? "", key);
    }
    if (got === x.sha256) {
      L.count("writeBack.faultWritesVerified");
      continue;
    }
    L.violate(
      "data",
      `lost: ${x.pod}/${x.name}/${x.file} (rclone, ${x.bytes} B, acknowledged while S3 was frozen): S3 has ${got === "NoSuchKey" ? "no such object" : "other content under its key"}`,
    );
    L.violate("writeBack", `${x.pod}/${x.name}/${x.file}: no mount uploaded it from the kept cache`);
  }
}
