/**
 * The load and the faults, each an independent loop with its own seeded stream: pod churn, the
 * annotation flipper, the isolation prober, FUSE client kills, agent kills, mounter kills, the S3 outage, and the
 * --sabotage negative control (the writers are in ./writers.ts, the console in ./console-load.ts).
 * Every loop stops by itself at the end of its phase or on abort.
 */
import { join } from "node:path";
import { DeleteObjectCommand } from "@aws-sdk/client-s3";
import { expectedOf, markerText, randomBuckets } from "./catalog.js";
import { catFile, fuseProcesses, listDir, readMountinfo, servedPath } from "./observe.js";
import type { Prng } from "./prng.js";
import type { Tracker } from "./tracker.js";
import type { Readers } from "./readers.js";
import type { Mounter, SoakPod, World } from "./world.js";
import type { WriteBackPlan } from "./write-back.js";
import { locationOf, type WriteRecord } from "./writers.js";

const ms = (seconds: number): number => seconds * 1000;
const between = (rng: Prng, range: readonly [number, number]): number => ms(rng.uniform(range[0], range[1]));

/** Creates pods up to the profile's minimum before the load starts. */
export async function initialPods(w: World): Promise<void> {
  const rng = w.rng("churn");
  for (let i = 0; i < w.opts.profile.minPods && !w.aborted; i++) await createOne(w, rng);
}

async function createOne(w: World, rng: Prng): Promise<void> {
  const mounter: Mounter = rng.chance(w.opts.profile.rcloneShare) ? "rclone" : "s3fs";
  const { value, bad } = randomBuckets(rng, w.opts.profile.badEntryChance);
  if (bad !== undefined) w.ledger.count("bad.annotationEntries");
  await w.createPod(rng, value, mounter);
  w.ledger.count("pods.created");
  w.ledger.count(`pods.created.${mounter}`);
}

/** Pods created and deleted continuously, the live set kept within the profile's bounds. */
export function churn(w: World): Promise<void> {
  const rng = w.rng("churn");
  const p = w.opts.profile;
  return w.loop(
    "churn",
    w.loadEnd,
    () => between(rng, p.churnEvery),
    async () => {
      const live = w.livePods();
      const create = live.length < p.minPods || (live.length < p.maxPods && rng.chance(0.5));
      if (create) {
        await createOne(w, rng);
        return;
      }
      const idle = live.filter((x) => x.inflight === 0 && !x.reserved);
      if (idle.length === 0) return;
      await w.deletePod(rng.pick(idle));
      w.ledger.count("pods.deleted");
    },
  );
}

/** Random changes of live pods' `dynamic-volumes/buckets` annotations. */
export function flipper(w: World, tracker: Tracker): Promise<void> {
  const rng = w.rng("flipper");
  const mean = 1000 / w.opts.profile.changesPerSecond;
  return w.loop(
    "flipper",
    w.loadEnd,
    () => rng.uniform(0, 2 * mean),
    async () => {
      const live = w.pickable();
      if (live.length === 0) return;
      const pod = rng.pick(live);
      let next = randomBuckets(rng, w.opts.profile.badEntryChance);
      for (let i = 0; i < 5 && next.value === (pod.annotation ?? ""); i++)
        next = randomBuckets(rng, w.opts.profile.badEntryChance);
      if (next.value === (pod.annotation ?? "")) return;
      pod.inflight++;
      try {
        tracker.intend(pod, next.value === "" ? undefined : next.value, "flip");
        await w.node.setBuckets(pod.name, next.value);
        w.ledger.count("changes.flips");
        if (next.bad !== undefined) w.ledger.count("bad.annotationEntries");
      } finally {
        pod.inflight--;
      }
    },
  );
}

/**
 * Isolation, from inside random containers: every FUSE mount a container sees must sit at
 * `/datasets/<name>` for a name the pod asked for, be a slave of a mount in *this* pod's host
 * directory (same peer group), and show a bucket and prefix the pod asked for under that name.
 */
export function isolation(w: World): Promise<void> {
  const rng = w.rng("isolation");
  return w.loop(
    "isolation",
    w.loadEnd,
    () => between(rng, w.opts.profile.isolationEvery),
    async () => {
      const live = w.livePods();
      if (live.length === 0) return;
      const pod = rng.pick(live);
      await checkIsolation(w, pod.name, rng, 2);
    },
  );
}

/** One isolation probe of one pod; `reads` markers are read through the container's view. */
export async function checkIsolation(w: World, name: string, rng: Prng, reads: number): Promise<void> {
  const pod = w.pods.get(name);
  if (pod === undefined) return;
  const host = await readMountinfo();
  let inside;
  try {
    inside = await readMountinfo(pod.containerPid);
  } catch {
    return; // the container is gone
  }
  if (pod.deleting || !w.pods.has(name)) return;
  const hostAfter = await readMountinfo();
  const groups = new Map<number, string>();
  for (const m of [...host, ...hostAfter])
    if (m.sharedGroup !== undefined && m.mountPoint.startsWith(join(w.node.root, "pods") + "/"))
      groups.set(m.sharedGroup, m.mountPoint);
  const fuse = inside.filter((m) => m.fsType.startsWith("fuse"));
  w.ledger.count("isolation.probes");
  for (const m of fuse) {
    w.ledger.checked("isolation");
    const rel = /^\/datasets\/([^/]+)$/.exec(m.mountPoint)?.[1];
    if (rel === undefined) {
      w.ledger.violate(
        "isolation",
        `pod ${name} sees a FUSE mount at ${m.mountPoint}, outside /datasets/<name>`,
      );
      continue;
    }
    if (!pod.history.has(rel)) {
      w.ledger.violate("isolation", `pod ${name} sees /datasets/${rel}, a name it never asked for`);
      continue;
    }
    const hostPoint = m.masterGroup !== undefined ? groups.get(m.masterGroup) : undefined;
    if (hostPoint === undefined) {
      w.ledger.count("isolation.unverifiedPeer");
    } else if (hostPoint !== `${pod.hostDir}/${rel}`) {
      w.ledger.violate(
        "isolation",
        `pod ${name}'s /datasets/${rel} is a slave of ${hostPoint}, not of its own ${pod.hostDir}/${rel}`,
      );
    }
  }
  for (const m of rng.shuffle(fuse).slice(0, reads)) {
    const rel = /^\/datasets\/([^/]+)$/.exec(m.mountPoint)?.[1];
    if (rel === undefined || !pod.history.has(rel)) continue;
    const probe = await catFile(`/proc/${pod.containerPid}/root/datasets/${rel}/marker.txt`, 4000);
    if (!probe.ok) {
      w.ledger.count(`isolation.unreadable.${probe.error}`);
      continue;
    }
    w.ledger.count("isolation.markersRead");
    const allowed = [...(pod.history.get(rel) ?? [])].some((s) => {
      const [bucket, prefix] = s.split(":");
      return markerText(bucket!, prefix!) === probe.text;
    });
    if (!allowed && !pod.deleting)
      w.ledger.violate(
        "isolation",
        `pod ${name} reads ${JSON.stringify(probe.text.trim())} at /datasets/${rel}; it only asked for ${[...(pod.history.get(rel) ?? [])].join(" | ")}`,
      );
  }
  // Entries in /datasets are directories the agent made for this pod's own names.
  for (const entry of await listDir(`/proc/${pod.containerPid}/root/datasets`)) {
    if (!pod.history.has(entry) && !pod.deleting && w.pods.has(name))
      w.ledger.violate("isolation", `pod ${name} sees /datasets/${entry}, a name it never asked for`);
  }
}

/**
 * The fault plan, drawn from the seed: when the S3 outage, the agent kills, the mounter kills and
 * the write-back faults happen. Agent kills, mounter kills and write-back faults never overlap
 * (each holds {@link World.exclusive} until it is over); the plan also keeps them apart in time.
 */
export interface FaultPlan {
  readonly s3At: number;
  readonly agentKills: ReadonlyArray<{ at: number; downMs: number }>;
  readonly mounterKills: ReadonlyArray<{ at: number; downMs: number }>;
  readonly writeBack: WriteBackPlan;
}

export function planFaults(w: World): FaultPlan {
  const rng = w.rng("faults");
  const span = w.loadEnd - w.loadStart;
  const p = w.opts.profile;
  const kills: Array<{ at: number; downMs: number }> = [];
  // Agent kills spread over [5%, 30%] of the load, so that the last incarnation runs long enough
  // to show whether descriptors or memory grow, and so that each is over (with the comparison of
  // the mounts after it) before the S3 outage: a mount that hangs on a dead S3 may rightly be
  // found stale and made again, which would hide whether the kill alone made it again.
  const slot = (0.25 * span) / Math.max(1, p.agentKills);
  for (let i = 0; i < p.agentKills; i++)
    kills.push({
      at: w.loadStart + 0.05 * span + slot * i + rng.uniform(0.1, 0.9) * slot,
      downMs: between(rng, p.agentDownSeconds),
    });
  // The S3 outage starts in [40%, 44%] and ends by about 55 % of the load (30 s of 300 s at most).
  const s3At = w.loadStart + span * rng.uniform(0.4, 0.44);
  // Mounter kills over [56%, 64%], early in their slots so that the mounts are back before the next.
  const mounterSlot = (0.08 * span) / Math.max(1, p.mounterKills);
  const mounterKills: Array<{ at: number; downMs: number }> = [];
  for (let i = 0; i < p.mounterKills; i++)
    mounterKills.push({
      at: w.loadStart + 0.56 * span + mounterSlot * i + rng.uniform(0, 0.4) * mounterSlot,
      downMs: between(rng, p.mounterDownSeconds),
    });
  // The write-back faults freeze S3 for a while each: after the outage and the kills, so that each
  // fault is alone with the load.
  const writeBack = {
    removeAt: w.loadStart + span * rng.uniform(0.66, 0.69),
    killAt: w.loadStart + span * rng.uniform(0.74, 0.77),
  };
  return { s3At, agentKills: kills, mounterKills, writeBack };
}

/** The S3 server killed and, after the profile's outage, started again on the same port. */
export async function s3Outage(w: World, plan: FaultPlan): Promise<void> {
  await w.until(plan.s3At);
  if (w.aborted) return;
  const window = w.openWindow("s3");
  w.log(`fault: S3 server down for ${w.opts.profile.s3OutageSeconds} s`);
  await w.s3.kill();
  w.ledger.count("faults.s3Outages");
  await w.sleep(ms(w.opts.profile.s3OutageSeconds));
  // Always restart, even on abort: the cleanup is faster with a live S3 behind the mounts.
  await w.s3.start();
  window.to = Date.now();
  w.log("fault: S3 server back on the same port");
}

/** A FUSE client of a kill: when and which mount point (from the fuse-kill actor). */
export type FuseKill = { t: number; mountPoint: string };

/** The FUSE clients of the node by pod mount point, from the mounter. */
async function clientsByMountPoint(w: World): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const [mp, pid] of await w.node.clients()) out.set(servedPath(mp), pid);
  return out;
}

/** The live pod whose directory holds `mountPoint`, and the mount's name. */
function ownerOf(w: World, mountPoint: string): { pod: SoakPod; name: string } | undefined {
  for (const pod of w.livePods())
    if (mountPoint.startsWith(`${pod.hostDir}/`))
      return { pod, name: mountPoint.slice(pod.hostDir.length + 1) };
  return undefined;
}

/** How long after an agent's restart its mounts are compared with those before the kill. */
const IDENTITY_SETTLE_MS = 6000;

/**
 * kill -9 of the agent, down for a while, started again. The FUSE clients live in the mounter, so
 * every mount must stay the same mount: a client that ran before the kill for a mount that is
 * still wanted, unchanged, must be the same process once the agent is back and has resynced. Not
 * compared: mounts of pods edited, converging or deleted meanwhile, mounts whose client the
 * fuse-kill actor killed meanwhile, and every mount when an S3 outage overlaps (the agent may
 * rightly find a mount that hangs on a dead S3 stale).
 */
export async function agentKills(w: World, plan: FaultPlan, fuseKills: readonly FuseKill[]): Promise<void> {
  for (const k of plan.agentKills) {
    await w.until(k.at);
    if (w.aborted) return;
    await w.exclusive(async () => {
      if (w.aborted) return;
      const t0 = Date.now();
      const edits = new Map(w.livePods().map((p) => [p.name, p.edits]));
      const converging = new Set(
        w
          .livePods()
          .filter((p) => p.pending !== undefined)
          .map((p) => p.name),
      );
      const before = await clientsByMountPoint(w).catch((e: unknown) => {
        w.ledger.harnessError("clients before an agent kill", e);
        return new Map<string, number>();
      });
      w.log(`fault: agent killed with -9, down for ${(k.downMs / 1000).toFixed(1)} s`);
      await w.killAgent(k.downMs);
      await w.sleep(IDENTITY_SETTLE_MS);
      if (w.aborted) return;
      const after = await clientsByMountPoint(w);
      const t1 = Date.now();
      if (w.windows.some((x) => x.kind === "s3" && x.from <= t1 && (x.to ?? Infinity) >= t0 - 5000)) {
        w.ledger.count("agentKill.identity.skippedS3Outage", before.size);
        return;
      }
      let compared = 0;
      let same = 0;
      for (const [mp, pid] of before) {
        const owner = ownerOf(w, mp);
        const unchanged =
          owner !== undefined &&
          edits.get(owner.pod.name) === owner.pod.edits &&
          owner.pod.pending === undefined &&
          !converging.has(owner.pod.name) &&
          expectedOf(owner.pod.annotation).valid.some((e) => e.name === owner.name) &&
          !fuseKills.some((f) => f.mountPoint === mp && f.t >= t0 - 5000);
        if (!unchanged) {
          w.ledger.count("agentKill.identity.skipped");
          continue;
        }
        w.ledger.checked("agentKill");
        compared++;
        const now = after.get(mp);
        if (now === pid) {
          same++;
          w.ledger.count("agentKill.identity.sameClient");
          continue;
        }
        w.ledger.violate(
          "agentKill",
          `${owner.pod.name}/${owner.name} (${owner.pod.mounter}): client ${pid} before the agent kill, ` +
            `${now === undefined ? "none" : `client ${now}`} ${IDENTITY_SETTLE_MS / 1000} s after the agent was back`,
        );
      }
      w.log(
        `fault: agent back; ${same} of ${compared} mounts comparable across the kill kept their FUSE client ` +
          `(${before.size - compared} not comparable)`,
      );
    });
  }
}

/**
 * kill -9 of the mounter, which takes every FUSE client of the node with it, as the end of its
 * container would; started again after a short while. The mounts go stale, and the agent (which
 * reconnects by itself and looks at every mount again) must make them again. Holds the faults'
 * turn until the long-lived readers read again (at most 60 s).
 */
export async function mounterKills(w: World, plan: FaultPlan, readers: Readers | undefined): Promise<void> {
  for (const k of plan.mounterKills) {
    await w.until(k.at);
    if (w.aborted) return;
    await w.exclusive(async () => {
      if (w.aborted) return;
      w.log(
        `fault: mounter killed with -9 with its FUSE clients, down for ${(k.downMs / 1000).toFixed(1)} s`,
      );
      const clients = await w.killMounter(k.downMs);
      w.log(`fault: mounter back (it ran ${clients} FUSE clients when it was killed)`);
      const back = Date.now();
      if (readers === undefined) return;
      const ok = await readers.recovered(back, 60_000);
      w.log(
        ok
          ? `fault: the readers read again ${((Date.now() - back) / 1000).toFixed(1)} s after the mounter was back`
          : "fault: the readers did not read again within 60 s of the mounter's restart",
      );
    });
  }
}

/** kill -9 of a random FUSE client of a live or deleted pod, except those below `spare` (the readers'). */
export function fuseKills(w: World, kills: FuseKill[], spare: readonly string[] = []): Promise<void> {
  const rng = w.rng("fuse-kills");
  return w.loop(
    "fuse-kills",
    w.faultEnd,
    () => between(rng, w.opts.profile.fuseKillEvery),
    async () => {
      const procs = (await fuseProcesses(join(w.node.root, "pods")))
        .filter((p) => !spare.some((dir) => p.mountPoint?.startsWith(`${dir}/`)))
        .sort((a, b) => a.pid - b.pid);
      if (procs.length === 0) return;
      const victim = rng.pick(procs);
      try {
        process.kill(victim.pid, "SIGKILL");
      } catch {
        return;
      }
      kills.push({ t: Date.now(), mountPoint: victim.mountPoint ?? "?" });
      w.ledger.count("faults.fuseKills");
      w.ledger.count(`faults.fuseKills.${victim.comm}`);
    },
  );
}

/**
 * Negative control (--sabotage): near the end of the load, freeze the agent (SIGSTOP), then kill a
 * FUSE client, delete a pod, change an annotation, and delete an acknowledged write from S3. A
 * soak that still passes after this checks nothing; the run must report violations of
 * convergence, stale mounts, leaks and data.
 */
export async function sabotage(w: World, tracker: Tracker, writes: readonly WriteRecord[]): Promise<void> {
  await w.until(w.faultEnd + (w.loadEnd - w.faultEnd) / 2);
  if (w.aborted) return;
  const rng = w.rng("sabotage");
  w.log("sabotage: freezing the agent and breaking things; this run must FAIL");
  w.freezeAgent();
  const live = w.livePods().filter((p) => p.inflight === 0);
  const procs = await fuseProcesses(join(w.node.root, "pods"));
  const victim = procs.find((p) => live.some((x) => p.mountPoint?.startsWith(`${x.hostDir}/`)));
  if (victim !== undefined) process.kill(victim.pid, "SIGKILL");
  const doomed = live.find((p) => !victim?.mountPoint?.startsWith(`${p.hostDir}/`));
  if (doomed !== undefined && procs.some((p) => p.mountPoint?.startsWith(`${doomed.hostDir}/`)))
    await w.deletePod(doomed);
  const flipped = w.livePods().find((p) => p.inflight === 0);
  if (flipped !== undefined) {
    const value = `sab=${rng.pick(["alpha", "beta", "gamma"])}:ro`;
    tracker.intend(flipped, value, "flip");
    await w.node.setBuckets(flipped.name, value);
  }
  const acked = writes.find((x) => x.code === 0 && locationOf(`${x.marker}\n`, x.file) !== undefined);
  if (acked !== undefined) {
    const loc = locationOf(`${acked.marker}\n`, acked.file)!;
    await w.node.s3.client.send(new DeleteObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
  }
  w.ledger.count("sabotage.done");
}
