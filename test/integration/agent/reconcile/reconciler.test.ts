import { expect } from "chai";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_RECONCILER_CONFIG, Reconciler } from "../../../../agent/reconcile/reconciler.js";
import type { Timers } from "../../../../agent/reconcile/work-queue.js";
import { LocalPodSource } from "../../../../agent/sources/local.js";
import type { PodStatus } from "../../../../agent/reconcile/status.js";
import { AppError } from "../../../../shared/errors.js";
import { createLogger } from "../../../../shared/logger.js";
import { ANNOTATIONS } from "../../../../shared/names.js";
import { injectedPod, podIdOf, withBuckets, type Pod } from "../../../../scripts/lib/pods.js";
import { FakeEngine } from "../../../support/fake-engine.js";
import { createReconcilerMetrics, type ReconcilerMetrics } from "../../../../agent/reconcile/metrics.js";
import { Registry, seriesValue } from "../../../../shared/metrics.js";

const key = Buffer.from("reconciler-test-signing-key-0123");
const log = createLogger({ name: "test", level: "silent" });
const SECRET = {
  endpoint: "http://127.0.0.1:9",
  region: "us-east-1",
  accessKeyID: "AKIATEST",
  secretAccessKey: "sup3r-s3cret",
};

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("Reconciler (local pod source, fake mount engine)", () => {
  let dir: string;
  let root: string;
  let podsDir: string;
  let engine: FakeEngine;
  let rec: Reconciler;
  let registry: Registry;
  let metrics: ReconcilerMetrics;

  const writePod = (file: string, pod: Pod): void => {
    // Written then renamed, as editors and kubectl-like tools replace files.
    writeFileSync(join(podsDir, `${file}.tmp`), JSON.stringify(pod));
    writeFileSync(join(podsDir, file), JSON.stringify(pod));
    unlinkSync(join(podsDir, `${file}.tmp`));
  };
  const status = (file: string): PodStatus => {
    const p = join(podsDir, file.replace(/\.json$/, ".status.json"));
    return existsSync(p) ? (JSON.parse(readFileSync(p, "utf8")) as PodStatus) : {};
  };
  const events = (): Array<{ reason: string; message: string; name: string }> =>
    existsSync(join(podsDir, "events.jsonl"))
      ? readFileSync(join(podsDir, "events.jsonl"), "utf8")
          .trim()
          .split("\n")
          .map((l) => JSON.parse(l) as { reason: string; message: string; name: string })
      : [];
  const mk = (name: string, buckets: string, ns = "team-a"): Pod =>
    injectedPod({ namespace: ns, name, buckets }, { root, signingKey: key });

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-rec-"));
    root = join(dir, "root");
    podsDir = join(dir, "pods");
    mkdirSync(podsDir);
    mkdirSync(join(dir, "secrets", "team-a"), { recursive: true });
    writeFileSync(
      join(dir, "secrets", "team-a", "dynamic-volumes-credentials.json"),
      JSON.stringify({ stringData: SECRET }),
    );
    engine = new FakeEngine();
    registry = new Registry();
    metrics = createReconcilerMetrics(registry);
    rec = makeReconciler();
  });

  const makeReconciler = (backoff = { backoffBaseMs: 50, backoffMaxMs: 200 }): Reconciler =>
    new Reconciler(
      new LocalPodSource({ podsDir, secretsDir: join(dir, "secrets"), log, rescanMs: 50 }),
      engine,
      {
        ...DEFAULT_RECONCILER_CONFIG,
        root,
        signingKey: key,
        defaultMounter: "s3fs",
        ...backoff,
        resyncMs: 100,
      },
      log,
      undefined,
      metrics,
      // The top of each backoff window: the delays these tests wait on are exact.
      { random: () => 0.999999 },
    );

  afterEach(async () => {
    await rec.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("mounts the annotation's buckets, writes status and Mounted events, and keeps credentials out of both", async () => {
    const pod = mk("trainer", "data=bucket-a/2024:ro, scratch-bucket");
    writePod("trainer.json", pod);
    await rec.start();
    const id = podIdOf(pod);
    await until(
      "both mounted",
      () => Object.values(status("trainer.json")).filter((s) => s.state === "mounted").length === 2,
    );
    expect([...engine.mounted.keys()].sort()).to.deep.equal([
      join(root, "pods", id, "data"),
      join(root, "pods", id, "scratch-bucket"),
    ]);
    const req = engine.mounted.get(join(root, "pods", id, "data"))!.req;
    expect(req).to.deep.include({
      bucket: "bucket-a",
      prefix: "2024",
      readOnly: true,
      endpoint: SECRET.endpoint,
    });
    expect(req.stateDir).to.equal(join(root, "agent", "mounts", id, "data"));
    const s = status("trainer.json");
    expect(s.data).to.deep.include({ state: "mounted", bucket: "bucket-a", prefix: "2024", readOnly: true });
    expect(events().filter((e) => e.reason === "Mounted")).to.have.length(2);
    const everything = readFileSync(join(podsDir, "events.jsonl"), "utf8") + JSON.stringify(s);
    expect(everything).to.not.include(SECRET.secretAccessKey).and.not.include(SECRET.accessKeyID);
  });

  it("undoes a mount whose record cannot be written, reports the failure, and mounts again on the retry", async () => {
    const pod = mk("trainer", "data");
    const id = podIdOf(pod);
    // A file where the mount's private directory belongs: the record cannot be written. The
    // failed mount's clean-up removes it, so the retry succeeds.
    const stateDir = join(root, "agent", "mounts", id, "data");
    mkdirSync(join(root, "agent", "mounts", id), { recursive: true });
    writeFileSync(stateDir, "not a directory");
    writePod("trainer.json", pod);
    // A retry a second later leaves time to look at the state right after the failure.
    rec = makeReconciler({ backoffBaseMs: 1000, backoffMaxMs: 1000 });
    await rec.start();
    const mp = join(root, "pods", id, "data");
    await until("failed", () => status("trainer.json").data?.state === "failed");
    // Failed means not mounted: the mount made while the record failed is gone already.
    expect(engine.mounted.has(mp)).to.equal(false);
    await until("mounted after the retry", () => status("trainer.json").data?.state === "mounted");
    expect(engine.calls.filter((c) => c.endsWith(mp) || c.includes(`${mp} `))).to.deep.equal([
      `mount ${mp} data`,
      `unmount ${mp}`,
      `mount ${mp} data`,
    ]);
    expect(events().filter((e) => e.reason === "MountFailed")).to.have.length(1);
    expect(JSON.parse(readFileSync(join(stateDir, "spec.json"), "utf8"))).to.include({ name: "data" });
  });

  it("writes a mount's record and its mounting status only once the client runs", async () => {
    const pod = mk("trainer", "data");
    const specFile = join(root, "agent", "mounts", podIdOf(pod), "data", "spec.json");
    // An engine whose client takes 200 ms to start: what the reconciler wrote meanwhile is seen
    // right before the start.
    let beforeStart: { record: boolean; state: string | undefined } | undefined;
    const fakeMount = engine.mount.bind(engine);
    engine.mount = async (req, mounter, onStarted) => {
      await new Promise((r) => setTimeout(r, 200));
      beforeStart = { record: existsSync(specFile), state: status("trainer.json").data?.state };
      return fakeMount(req, mounter, onStarted);
    };
    writePod("trainer.json", pod);
    await rec.start();
    await until("mounted", () => status("trainer.json").data?.state === "mounted");
    expect(beforeStart).to.deep.equal({ record: false, state: undefined });
    expect(JSON.parse(readFileSync(specFile, "utf8"))).to.include({ name: "data", bucket: "data" });
  });

  it("unmounts a bucket removed from the annotation and forgets its status", async () => {
    const pod = mk("trainer", "a=bucket-a,b=bucket-b");
    writePod("trainer.json", pod);
    await rec.start();
    await until("mounted", () => engine.mounted.size === 2);
    writePod("trainer.json", withBuckets(pod, "a=bucket-a"));
    await until("b unmounted", () => engine.mounted.size === 1 && status("trainer.json").b === undefined);
    expect(events().some((e) => e.reason === "Unmounted" && e.message.includes("bucket-b"))).to.equal(true);
    expect(existsSync(join(root, "pods", podIdOf(pod), "b"))).to.equal(false);
  });

  it("retries a failed mount with backoff and reports the failure meanwhile", async () => {
    const pod = mk("trainer", "a=bucket-a");
    engine.failures.set("bucket-a", 2);
    writePod("trainer.json", pod);
    await rec.start();
    await until("failed status", () => status("trainer.json").a?.state === "failed");
    expect(status("trainer.json").a!.error).to.match(/does not exist/);
    await until("mounted after retries", () => status("trainer.json").a?.state === "mounted");
    expect(engine.calls.filter((c) => c.startsWith("mount")).length).to.equal(3);
    // The retries of a failed entry list the mount before the pod can see it.
    expect(engine.requests.map((r) => r.listBeforePlacing)).to.deep.equal([false, true, true]);
    // Two identical failures, one Event: retries do not repeat it.
    expect(events().filter((e) => e.reason === "MountFailed")).to.have.length(1);
    await rec.idle();
    expect(await seriesValue(metrics.failures, { reason: "MountFailed" })).to.equal(2);
    expect(
      await seriesValue(metrics.mountDuration, { mounter: "s3fs", result: "mounted" }, "count"),
    ).to.equal(1);
    expect(await seriesValue(metrics.mounts, { state: "mounted", mounter: "s3fs" })).to.equal(1);
    expect(await registry.render()).to.match(
      /dynamic_volumes_mount_failures_total\{reason="MountFailed"\} 2/,
    );
  });

  it("records one MountFailed Event per distinct failure, though each retry's client output has new timestamps", async () => {
    // rclone's own lines, as FuseMounter puts the client's output into the message; each attempt
    // prints them at a later time. The fourth attempt fails differently, the fifth mounts.
    const rclone = (second: number): string =>
      `rclone could not mount bucket "bucket-a" on /x: the client exited with code 1 before the mount was ready. Client output:\n2026/12/02 16:23:${String(second).padStart(2, "0")} ERROR : S3 bucket bucket-a: failed to read directory: AccessDenied\n2026/12/02 16:23:${String(second).padStart(2, "0")} Fatal error: failed to mount FUSE fs`;
    let attempt = 0;
    const mount = engine.mount.bind(engine);
    engine.mount = async (req, mounter, onStarted) => {
      attempt++;
      if (attempt <= 3) throw new AppError("MountFailed", rclone(attempt * 7));
      if (attempt === 4) throw new AppError("MountFailed", "s3fs could not mount: invalid credentials");
      return mount(req, mounter, onStarted);
    };
    writePod("trainer.json", mk("trainer", "a=bucket-a"));
    await rec.start();
    await until("mounted after retries", () => status("trainer.json").a?.state === "mounted", 10_000);
    expect(attempt).to.equal(5);
    const failed = events().filter((e) => e.reason === "MountFailed");
    expect(
      failed.map((e) => e.message),
      "the rclone failure once, the other failure once",
    ).to.deep.equal([`a: ${rclone(7)}`, "a: s3fs could not mount: invalid credentials"]);
  });

  it('reports an internal engine error as "internal error" in status and Events, and logs the details', async () => {
    const lines: string[] = [];
    const captured = createLogger(
      { name: "test", level: "info" },
      { write: (l: string) => void lines.push(l) },
    );
    const secretPath = "/var/lib/dynamic-volumes/agent/secret-path";
    engine.mount = async () => {
      throw new Error(`EACCES: permission denied, open '${secretPath}'`);
    };
    rec = new Reconciler(
      new LocalPodSource({ podsDir, secretsDir: join(dir, "secrets"), log, rescanMs: 50 }),
      engine,
      { ...DEFAULT_RECONCILER_CONFIG, root, signingKey: key, defaultMounter: "s3fs", resyncMs: 100 },
      captured,
    );
    writePod("trainer.json", mk("trainer", "a=bucket-a"));
    await rec.start();
    await until("failed", () => status("trainer.json").a?.state === "failed");
    await until("event", () => events().some((e) => e.reason === "MountFailed"));
    const error = status("trainer.json").a!.error!;
    expect(error).to.match(/^internal error/);
    expect(error).to.not.include(secretPath).and.not.include("EACCES");
    const failed = events().filter((e) => e.reason === "MountFailed");
    expect(failed.map((e) => e.message)).to.deep.equal([`a: ${error}`]);
    const logged = lines.map((l) => JSON.parse(l) as { msg: string; err?: string });
    expect(logged.some((l) => l.msg === "mount failed" && l.err?.includes(secretPath) === true)).to.equal(
      true,
    );
  });

  it("draws each retry's delay from the capped backoff window with the injected random source", async () => {
    const lines: string[] = [];
    const captured = createLogger(
      { name: "test", level: "info" },
      { write: (l: string) => void lines.push(l) },
    );
    engine.failures.set("bucket-a", 3);
    rec = new Reconciler(
      new LocalPodSource({ podsDir, secretsDir: join(dir, "secrets"), log, rescanMs: 50 }),
      engine,
      {
        ...DEFAULT_RECONCILER_CONFIG,
        root,
        signingKey: key,
        defaultMounter: "s3fs",
        backoffBaseMs: 100,
        backoffMaxMs: 300,
        resyncMs: 100,
      },
      captured,
      undefined,
      undefined,
      { random: () => 0.5 },
    );
    writePod("trainer.json", mk("trainer", "a=bucket-a"));
    await rec.start();
    await until("mounted after retries", () => status("trainer.json").a?.state === "mounted");
    const delays = lines
      .map((l) => JSON.parse(l) as { msg: string; retryInMs?: number })
      .filter((l) => l.msg === "mount failed")
      .map((l) => l.retryInMs);
    // Half of the windows [0, 100], [0, 200], [0, 300] (the cap).
    expect(delays).to.deep.equal([50, 100, 150]);
  });

  it("waits for the retry on its injected clock and timers: nothing is retried until the test moves time", async () => {
    let nowMs = Date.parse("2026-12-02T12:00:00Z");
    const due: Array<{ at: number; fn: () => void; cancelled: boolean }> = [];
    const timers: Timers = {
      setTimeout: (fn, ms) => {
        const t = { at: nowMs + ms, fn, cancelled: false };
        due.push(t);
        return { cancel: () => void (t.cancelled = true) };
      },
    };
    const advance = (ms: number): void => {
      nowMs += ms;
      for (const t of due.splice(0)) {
        if (t.cancelled) continue;
        if (t.at <= nowMs) t.fn();
        else due.push(t);
      }
    };
    engine.failures.set("bucket-a", 1);
    rec = new Reconciler(
      new LocalPodSource({ podsDir, secretsDir: join(dir, "secrets"), log, rescanMs: 50 }),
      engine,
      {
        ...DEFAULT_RECONCILER_CONFIG,
        root,
        signingKey: key,
        defaultMounter: "s3fs",
        backoffBaseMs: 30_000,
        backoffMaxMs: 30_000,
        resyncMs: 60_000,
      },
      log,
      () => new Date(nowMs),
      undefined,
      { random: () => 0.999999, timers },
    );
    writePod("trainer.json", mk("trainer", "a=bucket-a"));
    await rec.start();
    await until("failed", () => status("trainer.json").a?.state === "failed");
    await rec.idle();
    // Real time passes, the source rescans: still no second attempt.
    await new Promise((r) => setTimeout(r, 300));
    await rec.idle();
    const mounts = (): number => engine.calls.filter((c) => c.startsWith("mount")).length;
    expect(mounts()).to.equal(1);
    advance(29_999);
    await rec.idle();
    expect(mounts()).to.equal(1);
    advance(1);
    await until("mounted on the retry", () => status("trainer.json").a?.state === "mounted");
    expect(mounts()).to.equal(2);
    expect(status("trainer.json").a!.since).to.equal(new Date(nowMs).toISOString());
  });

  it("fails with the missing key's name when the Secret is incomplete, and mounts nothing", async () => {
    writeFileSync(
      join(dir, "secrets", "team-a", "dynamic-volumes-credentials.json"),
      JSON.stringify({ stringData: { endpoint: SECRET.endpoint, accessKeyID: "x" } }),
    );
    writePod("trainer.json", mk("trainer", "a=bucket-a"));
    await rec.start();
    await until("failed", () => status("trainer.json").a?.state === "failed");
    expect(status("trainer.json").a!.error).to.match(/lacks the key secretAccessKey/);
    expect(engine.mounted.size).to.equal(0);
  });

  it("reports malformed entries and hostile names as failed while mounting the good ones", async () => {
    writePod("trainer.json", mk("trainer", "good=bucket-a, ../x, y=bucket-b/-o, -o allow_root"));
    await rec.start();
    await until("good mounted", () => status("trainer.json").good?.state === "mounted");
    const s = status("trainer.json");
    expect(Object.keys(s).sort()).to.deep.equal(["#2", "#4", "good", "y"]);
    expect(s.y!.state).to.equal("failed");
    expect(engine.mounted.size).to.equal(1);
  });

  it("refuses a forged claim on another pod's directory and leaves the owner's mounts alone, also when it is deleted", async () => {
    const owner = mk("owner", "a=bucket-a");
    writePod("owner.json", owner);
    await rec.start();
    await until("owner mounted", () => engine.mounted.size === 1);
    // Another namespace copies the owner's injected volume and annotations.
    const forged = structuredClone(owner);
    forged.metadata.namespace = "team-b";
    forged.metadata.name = "thief";
    forged.metadata.annotations[ANNOTATIONS.buckets] = "a=bucket-a,b=bucket-b";
    writePod("thief.json", forged);
    await until("thief refused", () => status("thief.json").a?.state === "failed");
    expect(status("thief.json").a!.error).to.match(/does not verify for namespace "team-b"/);
    // The same namespace, same signature: a second live claim on one directory.
    const twin = structuredClone(owner);
    twin.metadata.name = "twin";
    writePod("twin.json", twin);
    await until("twin refused", () => status("twin.json").a?.state === "failed");
    expect(status("twin.json").a!.error).to.match(/already claimed by pod team-a\/owner/);
    unlinkSync(join(podsDir, "thief.json"));
    unlinkSync(join(podsDir, "twin.json"));
    await new Promise((r) => setTimeout(r, 300));
    await rec.idle();
    expect(engine.mounted.size).to.equal(1);
    expect(engine.calls.filter((c) => c.startsWith("unmount"))).to.deep.equal([]);
    expect(status("owner.json").a!.state).to.equal("mounted");
  });

  it("tears everything down and removes the directory when the pod is deleted", async () => {
    const pod = mk("trainer", "a=bucket-a,b=bucket-b");
    writePod("trainer.json", pod);
    await rec.start();
    await until("mounted", () => engine.mounted.size === 2);
    unlinkSync(join(podsDir, "trainer.json"));
    await until("unmounted", () => engine.mounted.size === 0);
    await rec.idle();
    expect(existsSync(join(root, "pods", podIdOf(pod)))).to.equal(false);
    expect(existsSync(join(root, "agent", "mounts", podIdOf(pod)))).to.equal(false);
  });

  it("ends in the latest desired state when the annotation changes while a mount is in flight", async () => {
    engine.mountDelayMs = 300;
    const pod = mk("trainer", "a=bucket-a");
    writePod("trainer.json", pod);
    await rec.start();
    await until("mount started", () => engine.calls.length === 1);
    writePod("trainer.json", withBuckets(pod, "b=bucket-b"));
    await until(
      "settled",
      () => status("trainer.json").b?.state === "mounted" && engine.mounted.size === 1,
      5000,
    );
    expect([...engine.mounted.keys()][0]).to.match(/\/b$/);
    expect(status("trainer.json").a).to.equal(undefined);
  });

  it("remounts a stale mount", async () => {
    const pod = mk("trainer", "a=bucket-a");
    writePod("trainer.json", pod);
    await rec.start();
    await until("mounted", () => engine.mounted.size === 1);
    engine.stale.add([...engine.mounted.keys()][0]!);
    await until("remounted", () => engine.calls.filter((c) => c.startsWith("mount")).length === 2);
    expect(engine.calls.slice(-2)[0]).to.match(/^unmount/);
    expect(await seriesValue(metrics.staleRecoveries)).to.equal(1);
    expect(engine.stale.size).to.equal(0);
  });

  describe("writes not uploaded yet", () => {
    /** rclone's data and metadata for `path` in the cache of mount `name` of pod `id`. */
    const cached = (id: string, name: string, path: string, dirty: boolean): string => {
      const cacheDir = join(root, "agent", "mounts", id, name, "cache");
      for (const [tree, content] of [
        ["vfs", "data"],
        ["vfsMeta", JSON.stringify({ Size: 4, Dirty: dirty })],
      ] as const) {
        const file = join(cacheDir, tree, "dv{a1B2c}", path);
        mkdirSync(join(file, ".."), { recursive: true });
        writeFileSync(file, content);
      }
      return cacheDir;
    };
    const warnings = (): Array<{ reason: string; message: string; name: string; type?: string }> =>
      events().filter((e) => e.reason === "WriteBackPending");

    it("an entry removed with a dirty cache: Unmounted and a WriteBackPending warning, the cache kept, and the entry added back mounts over it", async () => {
      const pod = mk("trainer", "out=bucket-a/p");
      writePod("trainer.json", pod);
      await rec.start();
      await until("mounted", () => engine.mounted.size === 1);
      const cacheDir = cached(podIdOf(pod), "out", "bucket-a/p/big.bin", true);
      writePod("trainer.json", withBuckets(pod, ""));
      await until("unmounted", () => engine.mounted.size === 0);
      await rec.idle();
      expect(events().filter((e) => e.reason === "Unmounted")).to.have.length(1);
      const w = warnings();
      expect(w).to.have.length(1);
      expect(w[0]!.type).to.equal("Warning");
      expect(w[0]!.message).to.equal(
        `out: 1 file written through this mount is not in S3 yet (bucket-a/p/big.bin): they were not uploaded when the mount went. ` +
          `The cache is kept in ${cacheDir}; add "out=bucket-a/p:rw" back to dynamic-volumes/buckets (same Secret) to upload them.`,
      );
      expect(existsSync(join(cacheDir, "vfsMeta", "dv{a1B2c}", "bucket-a", "p", "big.bin"))).to.equal(true);
      expect(status("trainer.json").out).to.equal(undefined);
      writePod("trainer.json", withBuckets(pod, "out=bucket-a/p"));
      await until("mounted again", () => status("trainer.json").out?.state === "mounted");
      expect([...engine.mounted.values()][0]!.req.stateDir).to.equal(join(cacheDir, ".."));
      expect(existsSync(join(cacheDir, "vfs", "dv{a1B2c}", "bucket-a", "p", "big.bin"))).to.equal(true);
    });

    it("a stale mount whose engine reports a kept cache: the warning says the new mount uploads it", async () => {
      const report = {
        outcome: "kept",
        mounter: "rclone",
        client: "died",
        graceMs: 60_000,
        stateDir: "/x",
        cacheDir: "/x/cache",
        verdict: { pending: true, dirty: ["bucket-a/f"], unsure: [], incomplete: false },
      } as const;
      const unmount = engine.unmount.bind(engine);
      engine.unmount = async (mp: string) => {
        await unmount(mp);
        return { writeBack: report } as unknown as void;
      };
      const pod = mk("trainer", "a=bucket-a");
      writePod("trainer.json", pod);
      await rec.start();
      await until("mounted", () => engine.mounted.size === 1);
      engine.stale.add([...engine.mounted.keys()][0]!);
      await until("remounted", () => engine.calls.filter((c) => c.startsWith("mount")).length === 2);
      await until("warned", () => warnings().length === 1);
      expect(warnings()[0]!.message).to.match(
        /^a: 1 file .* \(bucket-a\/f\): rclone died before uploading them\. The cache is kept in \/x\/cache and the new mount of a uploads them once S3 answers\.$/,
      );
    });

    it("a pod deleted with a dirty cache: the cache outlives teardown and garbage collection, a clean one goes", async () => {
      const pod = mk("trainer", "dirty=bucket-a, clean=bucket-b");
      writePod("trainer.json", pod);
      await rec.start();
      await until("mounted", () => engine.mounted.size === 2);
      const id = podIdOf(pod);
      const dirty = cached(id, "dirty", "bucket-a/x.bin", true);
      const clean = cached(id, "clean", "bucket-b/y.bin", false);
      unlinkSync(join(podsDir, "trainer.json"));
      await until("unmounted", () => engine.mounted.size === 0);
      await rec.idle();
      await rec.collectGarbage();
      await rec.collectGarbage();
      expect(existsSync(join(root, "pods", id))).to.equal(false);
      expect(existsSync(dirty)).to.equal(true);
      expect(existsSync(join(clean, ".."))).to.equal(false);
      // No pod to record it on: the agent logs it instead.
      expect(warnings()).to.deep.equal([]);
      // Once an operator has uploaded the writes (here: the metadata says so), the agent collects it.
      cached(id, "dirty", "bucket-a/x.bin", false);
      await rec.collectGarbage();
      expect(existsSync(join(root, "agent", "mounts", id))).to.equal(false);
    });

    it("a finished pod with a dirty cache: the warning says nothing will upload it", async () => {
      const pod = mk("job", "out=bucket-a");
      writePod("job.json", pod);
      await rec.start();
      await until("mounted", () => engine.mounted.size === 1);
      cached(podIdOf(pod), "out", "bucket-a/result.bin", true);
      writePod("job.json", { ...pod, status: { phase: "Succeeded" } } as Pod);
      await until("unmounted", () => engine.mounted.size === 0);
      await until("warned", () => warnings().length === 1);
      expect(warnings()[0]!.message).to.include("The pod has finished, so no mount will upload them");
    });
  });

  it("collects orphan mounts and directories at start-up", async () => {
    const orphan = join(root, "pods", "ffffffffffffffffffffffffffffffff");
    mkdirSync(join(orphan, "x"), { recursive: true });
    await engine.mount(
      {
        bucket: "bucket-z",
        prefix: "",
        readOnly: false,
        mountPoint: join(orphan, "x"),
        endpoint: "",
        region: "",
        credentials: { accessKeyID: "", secretAccessKey: "" },
        options: {},
        stateDir: "/nonexistent",
      },
      "s3fs",
    );
    mkdirSync(join(root, "agent", "mounts", "ffffffffffffffffffffffffffffffff", "x"), { recursive: true });
    const anHourAgo = new Date(Date.now() - 3600_000);
    utimesSync(orphan, anHourAgo, anHourAgo);
    // A directory the kubelet just created for a pod this agent has not heard of yet stays.
    const fresh = join(root, "pods", "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee");
    mkdirSync(fresh, { recursive: true });
    // A recent directory this agent mounted into, whose pod went while the agent was down, goes.
    const used = join(root, "pods", "dddddddddddddddddddddddddddddddd");
    mkdirSync(join(used, "data"), { recursive: true });
    mkdirSync(join(root, "agent", "mounts", "dddddddddddddddddddddddddddddddd", "data"), { recursive: true });
    await rec.start();
    expect(engine.mounted.size).to.equal(0);
    expect(existsSync(orphan)).to.equal(false);
    expect(existsSync(join(root, "agent", "mounts", "ffffffffffffffffffffffffffffffff"))).to.equal(false);
    expect(existsSync(fresh)).to.equal(true);
    expect(existsSync(used)).to.equal(false);
  });

  it("adopts a healthy mount it recorded before a restart instead of mounting it again", async () => {
    const pod = mk("trainer", "a=bucket-a");
    writePod("trainer.json", pod);
    await rec.start();
    await until("mounted", () => engine.mounted.size === 1);
    await rec.stop();
    const calls = engine.calls.length;
    const again = new Reconciler(
      new LocalPodSource({ podsDir, secretsDir: join(dir, "secrets"), log, rescanMs: 50 }),
      engine,
      {
        ...DEFAULT_RECONCILER_CONFIG,
        root,
        signingKey: key,
        defaultMounter: "s3fs",
        backoffBaseMs: 50,
        resyncMs: 100,
      },
      log,
    );
    rec = again;
    await again.start();
    await again.idle();
    expect(engine.calls.length).to.equal(calls);
    expect(again.statusOf("team-a/trainer")?.a?.state).to.equal("mounted");
  });
});
