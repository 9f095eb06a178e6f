/**
 * Writers inside containers, and the data they must not lose: `dd conv=fsync` into a mounted rw
 * bucket, so that an error of the FUSE client's flush reaches the writer's exit status (a shell
 * redirect ignores close() errors). Besides the random writers, one probe per mounter writes and
 * then has its mount removed at once, every run: what an unmount does to acknowledged data.
 */
import { createHash } from "node:crypto";
import { BUCKETS, keyOf, markerText, PREFIXES } from "./catalog.js";
import type { Prng } from "./prng.js";
import type { Tracker } from "./tracker.js";
import type { Mounter, SoakPod, World } from "./world.js";

/** One write from inside a container, and what became of it. */
export interface WriteRecord {
  readonly pod: string;
  readonly mounter: Mounter;
  readonly name: string;
  readonly file: string;
  readonly sha256: string;
  readonly bytes: number;
  readonly t: number;
  /** Exit code of the writer: 0 acknowledged; 90 marker unreadable; 91 write failed; null timeout. */
  readonly code: number | null;
  /** The marker read just before writing: which bucket and prefix the mount showed. */
  readonly marker: string;
  readonly stderr: string;
}

function content(rng: Prng, label: string): string {
  const size = rng.pick([64, 1024, 16 * 1024, 200 * 1024]);
  const head = `soak ${label}\n`;
  let body = "";
  while (body.length < size) body += `${rng.hex(63)}\n`;
  return head + body.slice(0, size);
}

/** Writes `file` at the root of mount `name` of `pod`, from inside its container. */
async function writeOnce(
  w: World,
  rng: Prng,
  target: { pod: string; mounter: Mounter; name: string },
  file: string,
): Promise<WriteRecord> {
  const text = content(rng, `seed ${w.opts.seed} ${file}`);
  const script =
    `m=$(cat /datasets/${target.name}/marker.txt) || exit 90; ` +
    `dd of=/datasets/${target.name}/${file} conv=fsync 2>/dev/null || exit 91; printf '%s' "$m"`;
  const t = Date.now();
  const r = await w.node.runc
    .exec(w.node.pod(target.pod).container, ["sh", "-c", script], { input: text, timeoutMs: 30_000 })
    .catch((e: unknown) => ({ code: -1, stdout: "", stderr: String(e), timedOut: false }));
  const code = r.timedOut ? null : r.code;
  w.ledger.count(code === 0 ? "writes.acknowledged" : `writes.failed.${code ?? "timeout"}`);
  return {
    ...target,
    file,
    sha256: createHash("sha256").update(text).digest("hex"),
    bytes: Buffer.byteLength(text),
    t,
    code,
    marker: r.stdout,
    stderr: r.stderr.trim().slice(0, 200),
  };
}

/** Random writes into rw mounts of settled pods. */
export function writers(w: World, writes: WriteRecord[]): Promise<void> {
  const rng = w.rng("writers");
  let seq = 0;
  return w.loop(
    "writers",
    w.loadEnd,
    () => rng.uniform(w.opts.profile.writerEvery[0], w.opts.profile.writerEvery[1]) * 1000,
    async () => {
      const candidates: Array<{ pod: string; mounter: Mounter; name: string }> = [];
      for (const pod of w.pickable()) {
        if (pod.pending !== undefined) continue;
        const status = await w.node.status(pod.name);
        for (const [name, s] of Object.entries(status))
          if (s.state === "mounted" && !s.readOnly)
            candidates.push({ pod: pod.name, mounter: pod.mounter, name });
      }
      if (candidates.length === 0) {
        w.ledger.count("writes.noTarget");
        return;
      }
      writes.push(await writeOnce(w, rng, rng.pick(candidates), `w-${w.opts.seed}-${++seq}.txt`));
    },
  );
}

async function mountedNow(w: World, pod: SoakPod, name: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !w.aborted) {
    if ((await w.node.status(pod.name))[name]?.state === "mounted") return true;
    await w.sleep(100);
  }
  return false;
}

/**
 * The unmount probe, once per mounter early in the load (before any fault): a pod of its own
 * writes one file into an rw mount and, as soon as the writer has exited 0, its annotation drops
 * the mount, as `kubectl annotate` or a console `unmount` would. The file must reach S3 anyway.
 */
export async function unmountProbes(w: World, tracker: Tracker, writes: WriteRecord[]): Promise<void> {
  const rng = w.rng("probe");
  await w.until(w.loadStart + (w.loadEnd - w.loadStart) * 0.05);
  for (const mounter of ["s3fs", "rclone"] as const) {
    for (let attempt = 1; attempt <= 3 && !w.aborted; attempt++) {
      const pod = await w.createPod(rng, "out=beta/p2", mounter, { reserved: true });
      w.ledger.count("pods.created");
      w.ledger.count(`pods.created.${mounter}`);
      try {
        if (!(await mountedNow(w, pod, "out", 30_000))) continue;
        const x = await writeOnce(
          w,
          rng,
          { pod: pod.name, mounter, name: "out" },
          `probe-${mounter}-${w.opts.seed}-${attempt}.txt`,
        );
        writes.push(x);
        tracker.intend(pod, undefined, "flip");
        await w.node.setBuckets(pod.name, "");
        w.ledger.count("changes.flips");
        if (x.code === 0) {
          w.ledger.count(`probes.unmountAfterWrite.${mounter}`);
          break;
        }
      } finally {
        pod.reserved = false;
      }
    }
  }
}

/** Where `marker` says a file named `file` went: the bucket and key, or undefined. */
export function locationOf(marker: string, file: string): { bucket: string; key: string } | undefined {
  for (const b of BUCKETS)
    for (const p of PREFIXES) if (markerText(b, p) === marker) return { bucket: b, key: keyOf(p, file) };
  return undefined;
}
