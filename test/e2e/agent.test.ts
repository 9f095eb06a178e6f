/**
 * The agent end to end, for real: an S3 server on loopback, pods as runc containers whose volume
 * went through the webhook's patch, and the agent as its own process in a Bidirectional mount
 * namespace, running real s3fs and rclone. Every assertion about a pod is made from inside its
 * running container. The same scenario runs in both volume modes: hostPath (the webhook's signed
 * directory) and csi (the kubelet stand-in publishes `<root>/pods/<uid>` at its target, which the
 * container binds).
 */
import { expect } from "chai";
import { fastAgentArgs } from "../support/harness.js";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { stagingPathOf } from "../../agent/mount/host.js";
import { mountsUnder } from "../../agent/mount/mountinfo.js";
import { readMountinfo } from "../../scripts/lib/namespaces.js";
import { LocalNode } from "../../scripts/lib/local-node.js";
import { ANNOTATIONS } from "../../shared/names.js";
import { pidsWithArg, waitFor as waitUntil } from "../support/processes.js";

const waitFor = <T>(
  what: string,
  probe: () => Promise<T | undefined | false>,
  timeoutMs = 20000,
): Promise<T> => waitUntil(what, probe, timeoutMs, 25);

/**
 * PIDs of the FUSE clients of mount point `mountPoint` (`<root>/pods/<id>/<name>`): a client's argv
 * names the staging directory it mounted on before the agent moved its mount there (agent/mount/host.ts).
 */
const pidsMentioning = (mountPoint: string): Promise<number[]> => {
  const path = stagingPathOf(join(mountPoint, "..", "..", ".."), mountPoint);
  return pidsWithArg((a) => a === path);
};

async function staleMounts(root: string): Promise<string[]> {
  const stale: string[] = [];
  for (const m of mountsUnder(await readMountinfo(), join(root, "pods"))) {
    if (m.mountPoint === join(root, "pods")) continue;
    await stat(m.mountPoint).catch((e: NodeJS.ErrnoException) => {
      if (e.code === "ENOTCONN") stale.push(m.mountPoint);
    });
  }
  return stale;
}

const SCENARIOS = (["hostPath", "csi"] as const).flatMap((volumeMode) =>
  (["s3fs", "rclone"] as const).map((mounter) => ({ volumeMode, mounter })),
);

for (const { volumeMode, mounter } of SCENARIOS) {
  describe(`agent end to end with ${mounter}, ${volumeMode} mode`, function () {
    this.timeout(120_000);
    let node: LocalNode;

    const read = async (pod: string, path: string): Promise<string | undefined> => {
      const r = await node.exec(pod, ["cat", path]);
      return r.code === 0 ? r.stdout : undefined;
    };
    const state = async (pod: string, name: string): Promise<string | undefined> =>
      (await node.status(pod))[name]?.state;

    before(async function () {
      if (process.getuid?.() !== 0)
        throw new Error("the end-to-end tests need root; run scripts/setup.sh and npm test as root");
      node = await LocalNode.start({
        prefix: `dv-e2e-${mounter}-${volumeMode}-`,
        volumeMode,
        buckets: {
          alpha: { "hello.txt": "hello alpha\n", "sub/x.txt": "x\n" },
          beta: { "b.txt": "beta\n" },
          outbox: {},
        },
        agentArgs: [...fastAgentArgs(mounter), "--log-level", "debug"],
      });
      await node.writeSecret("team-a");
      await node.writeSecret("team-b");
      await node.addPod({ namespace: "team-a", name: "pod-a" });
      await node.addPod({ namespace: "team-a", name: "pod-b" });
      await node.startAgent();
    });

    after(async function () {
      if (node === undefined) return;
      const log = await node.agentLog();
      const leakedBefore = mountsUnder(await readMountinfo(), node.work).map((m) => m.mountPoint);
      await node.stop();
      const leaked = mountsUnder(await readMountinfo(), node.work);
      if (this.currentTest?.state === "failed" || leaked.length > 0)
        console.log(log.split("\n").slice(-40).join("\n"));
      expect(leaked, `mounts left behind (before cleanup: ${leakedBefore.join(", ")})`).to.deep.equal([]);
    });

    it("1. a bucket added to a running pod's annotation is readable inside its container; writes land in S3; ro refuses writes", async () => {
      const t0 = Date.now();
      await node.setBuckets("pod-a", "alpha, out=outbox, ro=beta:ro");
      expect(await waitFor("alpha in pod-a", () => read("pod-a", "/datasets/alpha/hello.txt"))).to.equal(
        "hello alpha\n",
      );
      console.log(`      annotation → readable in the container: ${Date.now() - t0} ms`);
      expect(await waitFor("sub dir", () => read("pod-a", "/datasets/alpha/sub/x.txt"))).to.equal("x\n");
      await waitFor(
        "all mounted",
        async () =>
          Object.values(await node.status("pod-a")).every((s) => s.state === "mounted") &&
          Object.keys(await node.status("pod-a")).length === 3,
      );
      const w = await node.exec("pod-a", ["sh", "-c", "echo result-1 > /datasets/out/r1.txt"]);
      expect(w.code, w.stderr).to.equal(0);
      // rclone uploads after --vfs-write-back; a close() is enough for s3fs.
      // rclone may first create the object empty and upload the content on close.
      expect(
        await waitFor(
          "r1.txt with its content in S3",
          async () => (await node.s3.get("outbox", "r1.txt")) === "result-1\n" && "result-1\n",
          30_000,
        ),
      ).to.equal("result-1\n");
      const ro = await node.exec("pod-a", ["sh", "-c", "echo no > /datasets/ro/nope.txt"]);
      expect(ro.code).to.not.equal(0);
      expect(ro.stderr).to.match(/Read-only file system/);
      expect(await node.s3.get("beta", "nope.txt")).to.equal(undefined);
      const events = (await node.events()).filter((e) => e.name === "pod-a" && e.reason === "Mounted");
      expect(events).to.have.length(3);
    });

    it("2. removing a bucket unmounts it inside the container; another pod never sees the first pod's mounts", async () => {
      await node.setBuckets("pod-a", "alpha, out=outbox");
      await waitFor(
        "ro gone in pod-a",
        async () => (await node.exec("pod-a", ["test", "-e", "/datasets/ro/b.txt"])).code !== 0,
      );
      expect(
        (await node.exec("pod-a", ["ls", "/datasets"])).stdout.split(/\s+/).filter(Boolean).sort(),
      ).to.deep.equal(["alpha", "out"]);
      await waitFor("ro status gone", async () => (await node.status("pod-a")).ro === undefined);
      expect(
        (await node.events()).some(
          (e) => e.name === "pod-a" && e.reason === "Unmounted" && e.message.includes("beta"),
        ),
      ).to.equal(true);
      const b = await node.exec("pod-b", [
        "sh",
        "-c",
        "ls -A /datasets; grep -c fuse /proc/self/mountinfo || true",
      ]);
      expect(b.stdout.trim()).to.equal("0");
    });

    it("3. a FUSE client killed with -9 is replaced and the running container reads again", async () => {
      const mp = join(node.pod("pod-a").hostDir, "alpha");
      const pids = await pidsMentioning(mp);
      expect(pids, "one FUSE client for the mount").to.have.length(1);
      process.kill(pids[0]!, "SIGKILL");
      // The agent may repair the mount before a poll from the container catches it broken.
      const t0 = Date.now();
      expect(
        await waitFor("alpha back in pod-a", () => read("pod-a", "/datasets/alpha/hello.txt"), 30_000),
      ).to.equal("hello alpha\n");
      console.log(`      recovered in ${Date.now() - t0} ms`);
      const after = await pidsMentioning(mp);
      expect(after).to.have.length(1);
      expect(after[0]).to.not.equal(pids[0]);
      expect(await staleMounts(node.root)).to.deep.equal([]);
    });

    it("4. the agent killed with -9 and restarted: every desired mount works, no ENOTCONN, no duplicate mounts", async () => {
      await node.setBuckets("pod-b", "beta:ro");
      await waitFor("beta in pod-b", () => read("pod-b", "/datasets/beta/b.txt"));
      node.agent!.kill("SIGKILL");
      await node.agent!.exited;
      // While the agent is down, a FUSE client dies too: the restarted agent must repair it.
      const mp = join(node.pod("pod-b").hostDir, "beta");
      for (const pid of await pidsMentioning(mp)) process.kill(pid, "SIGKILL");
      await node.setBuckets("pod-a", "alpha, out=outbox, more=beta/:ro");
      await node.startAgent();
      expect(await waitFor("alpha", () => read("pod-a", "/datasets/alpha/hello.txt"))).to.equal(
        "hello alpha\n",
      );
      expect(await waitFor("more", () => read("pod-a", "/datasets/more/b.txt"))).to.equal("beta\n");
      expect(
        await waitFor("beta repaired in pod-b", () => read("pod-b", "/datasets/beta/b.txt"), 30_000),
      ).to.equal("beta\n");
      await waitFor(
        "statuses mounted",
        async () =>
          (await state("pod-b", "beta")) === "mounted" && (await state("pod-a", "more")) === "mounted",
      );
      expect(await staleMounts(node.root)).to.deep.equal([]);
      const points = mountsUnder(await readMountinfo(), join(node.root, "pods")).map((m) => m.mountPoint);
      expect(new Set(points).size, `duplicates in ${points.join(", ")}`).to.equal(points.length);
      expect(points.filter((p) => p.startsWith(node.pod("pod-a").hostDir))).to.have.length(3);
    });

    if (volumeMode === "hostPath")
      it("6. forged or conflicting claims on another pod's directory are refused and the owner's mounts stay", async () => {
        const owner = node.pod("pod-b");
        const forged = structuredClone(owner.pod);
        forged.metadata.namespace = "team-b";
        forged.metadata.name = "thief";
        forged.metadata.annotations[ANNOTATIONS.buckets] = "alpha";
        await node.runPod("thief", forged);
        await waitFor("thief refused", async () => (await state("thief", "alpha")) === "failed");
        expect((await node.status("thief")).alpha?.error).to.match(/does not verify for namespace "team-b"/);
        const twin = structuredClone(owner.pod);
        twin.metadata.name = "twin";
        twin.metadata.annotations[ANNOTATIONS.buckets] = "alpha";
        await node.runPod("twin", twin);
        await waitFor("twin refused", async () => (await state("twin", "alpha")) === "failed");
        expect((await node.status("twin")).alpha?.error).to.match(/already claimed by pod team-a\/pod-b/);
        // The thieves share the owner's directory through their container, but nothing new is mounted there.
        expect((await node.exec("thief", ["ls", "/datasets"])).stdout.trim()).to.equal("beta");
        await node.deletePod("thief");
        await node.deletePod("twin");
        await new Promise((r) => setTimeout(r, 1500));
        expect(await read("pod-b", "/datasets/beta/b.txt")).to.equal("beta\n");
        expect(await state("pod-b", "beta")).to.equal("mounted");
      });
    else
      it("6. a copy of another pod in another namespace gets a directory of its own, keyed by its uid; the owner's mounts stay", async () => {
        const owner = node.pod("pod-b");
        // The API server gives every pod its own uid, and the kubelet publishes by it: a copied
        // spec cannot name the owner's directory.
        const copy = await node.addPod({ namespace: "team-b", name: "copy", buckets: "alpha" });
        expect(copy.id).to.not.equal(owner.id);
        expect(copy.hostDir).to.not.equal(owner.hostDir);
        expect(await waitFor("alpha in copy", () => read("copy", "/datasets/alpha/hello.txt"))).to.equal(
          "hello alpha\n",
        );
        expect((await node.exec("copy", ["ls", "/datasets"])).stdout.trim()).to.equal("alpha");
        expect((await node.exec("pod-b", ["ls", "/datasets"])).stdout.trim()).to.equal("beta");
        await node.deletePod("copy");
        await waitFor("copy's directory gone", async () =>
          stat(copy.hostDir).then(
            () => false,
            () => true,
          ),
        );
        expect(await read("pod-b", "/datasets/beta/b.txt")).to.equal("beta\n");
        expect(await state("pod-b", "beta")).to.equal("mounted");
      });

    it("7. bad input fails with a clear status, mounts nothing elsewhere, and the agent keeps serving", async () => {
      await node.writeSecret("team-c", { endpoint: node.s3.endpoint, accessKeyID: "x" });
      await node.writeSecret("team-d", { ...node.s3Credentials(), accessKeyID: "WRONGKEY" });
      await node.addPod({ namespace: "team-c", name: "pod-c", buckets: "alpha" });
      await node.addPod({ namespace: "team-d", name: "pod-d", buckets: "alpha" });
      await node.addPod({
        namespace: "team-a",
        name: "pod-e",
        buckets: "good=alpha, ../x, y=alpha/-o, -o allow_root, ghost=no-such-bucket",
      });
      await waitFor("pod-c failed", async () => (await state("pod-c", "alpha")) === "failed");
      expect((await node.status("pod-c")).alpha?.error).to.match(/lacks the key secretAccessKey/);
      await waitFor("pod-d failed", async () => (await state("pod-d", "alpha")) === "failed", 40_000);
      expect((await node.status("pod-d")).alpha?.error).to.match(
        /InvalidAccessKeyId|invalid credentials|403|denied/i,
      );
      expect((await node.status("pod-d")).alpha?.error).to.not.include("S3RVER");
      await waitFor("pod-e good", async () => (await state("pod-e", "good")) === "mounted");
      const e = await node.status("pod-e");
      expect(e["#2"]?.state).to.equal("failed");
      expect(e["#2"]?.error).to.match(/not a valid bucket name/);
      expect(e.y?.error).to.match(/must not start with "-"/);
      expect(e["#4"]?.error).to.match(/not a valid bucket name/);
      if (mounter === "s3fs") {
        await waitFor("ghost failed", async () => (await state("pod-e", "ghost")) === "failed", 40_000);
        expect(e.ghost === undefined || e.ghost.state !== "mounted").to.equal(true);
      } else {
        // rclone mounts a missing bucket as an empty directory; it must still be a real, empty mount.
        await waitFor("ghost mounted empty", async () => (await state("pod-e", "ghost")) === "mounted");
        expect((await node.exec("pod-e", ["ls", "-A", "/datasets/ghost"])).stdout).to.equal("");
      }
      const points = mountsUnder(await readMountinfo(), join(node.root, "pods")).map((m) => m.mountPoint);
      for (const p of ["pod-c", "pod-d"])
        expect(points.filter((m) => m.startsWith(node.pod(p).hostDir))).to.deep.equal([]);
      expect(points.every((m) => !m.includes(".."))).to.equal(true);
      await node.setBuckets("pod-b", "beta:ro, again=alpha:ro");
      expect(
        await waitFor("the agent still serves pod-b", () => read("pod-b", "/datasets/again/hello.txt")),
      ).to.equal("hello alpha\n");
      const log = await node.agentLog();
      expect(log).to.not.include('S3RVER"').and.not.include("WRONGKEY");
    });

    it("5. a deleted pod leaves no mount, process or directory behind", async () => {
      const a = node.pod("pod-a");
      const before = mountsUnder(await readMountinfo(), a.hostDir).filter((m) => m.mountPoint !== a.hostDir);
      expect(before.length).to.be.greaterThan(0);
      await node.deletePod("pod-a");
      await waitFor(
        "pod-a's mounts gone",
        async () => mountsUnder(await readMountinfo(), a.hostDir).length === 0,
      );
      await waitFor("pod-a's directory gone", async () =>
        stat(a.hostDir).then(
          () => false,
          () => true,
        ),
      );
      // Clients of adopted mounts (started by the killed agent) exit on their own after the unmount.
      for (const m of before)
        await waitFor(
          `no client left for ${m.mountPoint}`,
          async () => (await pidsMentioning(m.mountPoint)).length === 0,
          15_000,
        );
      expect(
        await stat(join(node.root, "agent", "mounts", a.id)).then(
          () => "present",
          () => "gone",
        ),
      ).to.equal("gone");
    });
  });
}
