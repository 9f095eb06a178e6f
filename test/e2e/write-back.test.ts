/**
 * Writes that rclone acknowledged but could not upload, end to end: real runc pods, the real agent
 * (local mode, its own Bidirectional mount namespace), real rclone and s3rver. The S3 server is
 * frozen with SIGSTOP, so that a connection to it stays open and nothing it receives is stored.
 *
 * An upload only stays pending when it is larger than what the loopback socket buffers take in
 * (several MiB): a smaller one is stored by the server once it resumes, even from a client that is
 * dead by then. So every object here is 16 MiB, each file is created while the server is up (rclone
 * may fail to create one while it is down) and closed while it is down, and the server stays
 * stopped until the client that took the write is gone.
 */
import { expect } from "chai";
import { createHash, randomBytes } from "node:crypto";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { stagingPathOf } from "../../agent/mount/host.js";
import { GetObjectCommand } from "@aws-sdk/client-s3";
import { mountsUnder } from "../../agent/mount/mountinfo.js";
import { HeldWriter } from "../../scripts/lib/held-writer.js";
import { recoverKeptCache } from "../../scripts/lib/kept-cache.js";
import { LocalNode } from "../../scripts/lib/local-node.js";
import { readMountinfo } from "../../scripts/lib/namespaces.js";
import { pidsWithArg, waitFor as waitUntil } from "../support/processes.js";

const waitFor = <T>(
  what: string,
  probe: () => Promise<T | undefined | false>,
  timeoutMs = 30000,
): Promise<T> => waitUntil(what, probe, timeoutMs, 100);

/**
 * PIDs of the FUSE clients of mount point `mountPoint` (`<root>/pods/<id>/<name>`): a client's argv
 * names the staging directory it mounted on before the agent moved its mount there (agent/mount/host.ts).
 */
const pidsMentioning = (mountPoint: string): Promise<number[]> => {
  const path = stagingPathOf(join(mountPoint, "..", "..", ".."), mountPoint);
  return pidsWithArg((a) => a === path);
};

const SIZE = 16 * 1024 * 1024;
/** The agent's upload grace in these tests (the default is 60 s). */
const GRACE_SECONDS = 3;

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

const sha256 = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

describe("write-back: acknowledged rclone writes are never dropped silently (real agent, runc pods, rclone, s3rver)", function () {
  this.timeout(240_000);
  let node: LocalNode;
  let frozen = false;
  const writers: HeldWriter[] = [];

  /** SIGSTOP: the server keeps its connections but answers nothing and stores nothing. */
  const freezeS3 = (): void => {
    process.kill(node.s3.pid, "SIGSTOP");
    frozen = true;
  };
  const thawS3 = (): void => {
    if (frozen) process.kill(node.s3.pid, "SIGCONT");
    frozen = false;
  };

  /** The object's SHA-256, or a description of why there is none; only while the server runs. */
  const objectDigest = async (key: string): Promise<string> => {
    try {
      const r = await node.s3.client.send(new GetObjectCommand({ Bucket: "outbox", Key: key }));
      const body = await r.Body!.transformToByteArray();
      return body.length === SIZE ? sha256(body) : `${body.length} bytes`;
    } catch (e) {
      return (e as Error).name;
    }
  };

  const mounted = async (pod: string, name: string): Promise<boolean> =>
    (await node.status(pod))[name]?.state === "mounted";

  const stateDir = (pod: string, name: string): string =>
    join(node.root, "agent", "mounts", node.pod(pod).id, name);

  const writeBackEvents = async (pod: string) =>
    (await node.events()).filter((e) => e.name === pod && e.reason === "WriteBackPending");

  /**
   * Opens a file in the pod's mount while S3 answers, freezes S3, writes 16 MiB and closes the file:
   * the close is acknowledged while the upload cannot happen. Returns the data's SHA-256.
   */
  const acknowledgedWhileFrozen = async (pod: string, name: string, file: string): Promise<string> => {
    const data = randomBytes(SIZE);
    const w = new HeldWriter(node.pod(pod).container.id, name, file);
    writers.push(w);
    await w.opened;
    freezeS3();
    w.finish(data);
    const r = await w.done;
    expect(r.code, `writer: ${r.stderr}`).to.equal(0);
    expect(r.stdout).to.include("closed");
    return sha256(data);
  };

  before(async function () {
    if (process.getuid?.() !== 0)
      throw new Error("the end-to-end tests need root; run scripts/setup.sh and npm test as root");
    node = await LocalNode.start({
      prefix: "dv-e2e-writeback-",
      buckets: { outbox: { "marker.txt": "outbox\n" } },
      agentArgs: [
        "--default-mounter",
        "rclone",
        "--resync-seconds",
        "1",
        "--backoff-max-seconds",
        "2",
        "--log-level",
        "debug",
      ],
      mounterArgs: ["--mount-timeout-seconds", "10", "--upload-grace-seconds", String(GRACE_SECONDS)],
    });
    await node.writeSecret("team-a");
    await node.startAgent();
  });

  afterEach(function () {
    // Whatever happened, the server runs again and no writer is left.
    thawS3();
    for (const w of writers.splice(0)) w.kill();
  });

  after(async function () {
    if (node === undefined) return;
    thawS3();
    const log = await node.agentLog();
    await node.stop();
    const leaked = mountsUnder(await readMountinfo(), node.work);
    if (this.currentTest?.state === "failed" || leaked.length > 0)
      console.log(log.split("\n").slice(-60).join("\n"));
    expect(leaked.map((m) => m.mountPoint)).to.deep.equal([]);
  });

  it("S3 unreachable while an entry with pending writes is removed: the cache is kept, WriteBackPending says so, and adding the entry back uploads it", async () => {
    await node.addPod({ namespace: "team-a", name: "pod-a", buckets: "out=outbox" });
    await waitFor("out mounted in pod-a", () => mounted("pod-a", "out"));
    const mp = join(node.pod("pod-a").hostDir, "out");
    const clients = await pidsMentioning(mp);
    expect(clients).to.have.length(1);
    const digest = await acknowledgedWhileFrozen("pod-a", "out", "big-a.bin");

    // The entry goes while S3 cannot be reached: the agent waits out the upload grace, then stops
    // the client. S3 stays frozen until that client is dead, so that it cannot finish the upload.
    await node.setBuckets("pod-a", "");
    await waitFor(
      "the mount gone and its client stopped",
      async () =>
        (await node.status("pod-a")).out === undefined &&
        (await pidsMentioning(mp)).length === 0 &&
        mountsUnder(await readMountinfo(), mp).length === 0,
      GRACE_SECONDS * 1000 + 30_000,
    );
    thawS3();
    // The stopped client did not upload it (s3rver may keep a truncated body of the dead request).
    await new Promise((r) => setTimeout(r, 2000));
    expect(
      await objectDigest("big-a.bin"),
      "the write was still pending when the client was stopped",
    ).to.not.equal(digest);

    await node.setBuckets("pod-a", "out=outbox");
    await waitFor("out mounted again", () => mounted("pod-a", "out"));
    expect(
      await waitFor(
        "big-a.bin in S3 with all its content",
        async () => (await objectDigest("big-a.bin")) === digest && digest,
        60_000,
      ),
    ).to.equal(digest);

    const events = await writeBackEvents("pod-a");
    expect(events, "one WriteBackPending event").to.have.length(1);
    expect(events[0]!.type).to.equal("Warning");
    expect(events[0]!.message).to.match(
      /^out: 1 file written through this mount is not in S3 yet \(outbox\/big-a\.bin\)/,
    );
    expect(events[0]!.message).to.include(`was stopped`);
    expect(events[0]!.message).to.include(join(stateDir("pod-a", "out"), "cache"));
    expect(events[0]!.message).to.include(`add "out=outbox:rw" back`);

    // Once uploaded, the cache is clean: the next unmount removes it like any other.
    await node.setBuckets("pod-a", "");
    await waitFor("the state directory removed", async () => !(await exists(stateDir("pod-a", "out"))));
    expect(await writeBackEvents("pod-a")).to.have.length(1);
  });

  it("client killed with pending writes: the stale mount's cache is kept, the new client uploads it, WriteBackPending says so", async () => {
    await node.addPod({ namespace: "team-a", name: "pod-b", buckets: "out=outbox" });
    await waitFor("out mounted in pod-b", () => mounted("pod-b", "out"));
    const mp = join(node.pod("pod-b").hostDir, "out");
    const [old] = await pidsMentioning(mp);
    expect(old).to.be.a("number");
    const digest = await acknowledgedWhileFrozen("pod-b", "out", "big-b.bin");
    // rclone starts the upload at once (--vfs-write-back 0s); it is under way when the client dies.
    await new Promise((r) => setTimeout(r, 1000));
    process.kill(old!, "SIGKILL");
    // S3 stays frozen until the agent has replaced the client.
    await waitFor(
      "a new client for the mount",
      async () => (await pidsMentioning(mp)).some((p) => p !== old),
      30_000,
    );
    thawS3();

    expect(
      await waitFor(
        "big-b.bin in S3 with all its content",
        async () => (await objectDigest("big-b.bin")) === digest && digest,
        90_000,
      ),
    ).to.equal(digest);
    await waitFor("out mounted again in pod-b", () => mounted("pod-b", "out"), 60_000);
    const inside = await node.exec("pod-b", ["sha256sum", "/datasets/out/big-b.bin"]);
    expect(inside.stdout.split(" ")[0]).to.equal(digest);

    const events = await writeBackEvents("pod-b");
    expect(events.length, "WriteBackPending events").to.be.at.least(1);
    expect(events[0]!.type).to.equal("Warning");
    expect(events[0]!.message).to.match(
      /^out: 1 file written through this mount is not in S3 yet \(outbox\/big-b\.bin\)/,
    );
    expect(events[0]!.message).to.include("rclone died before uploading them");
    expect(events[0]!.message).to.include("the new mount of out uploads them once S3 answers");
  });

  it("pod deleted with pending writes: the cache outlives the pod and garbage collection, and the documented recovery uploads it", async () => {
    await node.addPod({ namespace: "team-a", name: "pod-c", buckets: "out=outbox" });
    await waitFor("out mounted in pod-c", () => mounted("pod-c", "out"));
    const pod = node.pod("pod-c");
    const mp = join(pod.hostDir, "out");
    const dir = stateDir("pod-c", "out");
    const digest = await acknowledgedWhileFrozen("pod-c", "out", "big-c.bin");
    await node.deletePod("pod-c");
    await waitFor(
      "the pod's mounts, client and directory gone",
      async () =>
        (await pidsMentioning(mp)).length === 0 &&
        mountsUnder(await readMountinfo(), pod.hostDir).length === 0 &&
        !(await exists(pod.hostDir)),
      GRACE_SECONDS * 1000 + 30_000,
    );
    thawS3();
    // Several garbage collections (every resync, 1 s here) pass; the cache stays.
    await new Promise((r) => setTimeout(r, 4000));
    expect(await exists(join(dir, "cache")), "the cache of the deleted pod is kept").to.equal(true);
    expect((await readdir(dir)).sort(), "only the cache, the record and the log stay").to.deep.equal([
      "cache",
      "client.log",
      "spec.json",
    ]);
    expect(await objectDigest("big-c.bin")).to.not.equal(digest);
    expect(await node.agentLog()).to.include("a deleted pod's cache is kept");

    // What docs/troubleshooting.md tells an operator to do.
    const uploaded = await recoverKeptCache(node.s3.client, dir);
    expect(uploaded.map((o) => `${o.bucket}/${o.key}`)).to.deep.equal(["outbox/big-c.bin"]);
    expect(await objectDigest("big-c.bin")).to.equal(digest);
    await new Promise((r) => setTimeout(r, 2000));
    expect(
      await exists(join(node.root, "agent", "mounts", pod.id)),
      "the agent collects what is left",
    ).to.equal(false);
  });
});
