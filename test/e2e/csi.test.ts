/**
 * CSI mode end to end, without a kubelet: a kubelet stand-in makes the kubelet's gRPC calls to the
 * real mounter's CSI services (registration, NodePublishVolume with the pod's identity in the
 * volume context), then a runc container binds the published target `rslave`, as the kubelet and
 * containerd do for a `HostToContainer` volumeMount. The real agent (unprivileged, local mode)
 * finds the pod's directory by its uid; an annotation change then mounts a bucket with s3fs, and
 * the bucket is read from inside the running container. Deletion, in the kubelet's order and out
 * of it, leaves no mount, client or directory.
 */
import { expect } from "chai";
import { existsSync } from "node:fs";
import { unlink } from "node:fs/promises";
import { join } from "node:path";
import { mountsUnder } from "../../agent/mount/mountinfo.js";
import { LocalNode } from "../../scripts/lib/local-node.js";
import { readMountinfo } from "../../scripts/lib/namespaces.js";
import { CSI_DRIVER_NAME } from "../../shared/names.js";
import { fastAgentArgs } from "../support/harness.js";
import { alive, waitFor as waitUntil } from "../support/processes.js";

const waitFor = <T>(
  what: string,
  probe: () => Promise<T | undefined | false>,
  timeoutMs = 20000,
): Promise<T> => waitUntil(what, probe, timeoutMs, 25);

describe("CSI mode end to end (kubelet stand-in, runc, s3fs)", function () {
  this.timeout(120_000);
  let node: LocalNode;

  const read = async (pod: string, path: string): Promise<string | undefined> => {
    const r = await node.exec(pod, ["cat", path]);
    return r.code === 0 ? r.stdout : undefined;
  };
  const mountPointsUnder = async (dir: string): Promise<string[]> =>
    mountsUnder(await readMountinfo(), dir).map((m) => m.mountPoint);

  before(async function () {
    if (process.getuid?.() !== 0)
      throw new Error("the end-to-end tests need root; run scripts/setup.sh and npm test as root");
    node = await LocalNode.start({
      prefix: "dv-e2e-csi-",
      volumeMode: "csi",
      buckets: { alpha: { "hello.txt": "hello alpha\n" }, beta: { "b.txt": "beta\n" } },
      agentArgs: [...fastAgentArgs("s3fs"), "--log-level", "debug"],
    });
    await node.writeSecret("team-a");
    await node.startAgent();
  });

  after(async function () {
    if (node === undefined) return;
    const logs = `${(await node.mounterLog()).split("\n").slice(-30).join("\n")}\n${(await node.agentLog()).split("\n").slice(-30).join("\n")}`;
    const leakedBefore = await mountPointsUnder(node.work);
    await node.stop();
    const leaked = mountsUnder(await readMountinfo(), node.work);
    if (this.currentTest?.state === "failed" || leaked.length > 0) console.log(logs);
    expect(leaked, `mounts left behind (before cleanup: ${leakedBefore.join(", ")})`).to.deep.equal([]);
  });

  it("1. the kubelet registers the driver and publishes the pod's directory at its target before the container starts", async () => {
    const kubelet = await node.csiKubelet();
    expect(await kubelet.register()).to.deep.equal({ driver: CSI_DRIVER_NAME, nodeId: "local" });
    const p = await node.addPod({ namespace: "team-a", name: "pod-a" });
    expect(p.pod.spec.volumes.find((v) => v.name === "dynamic-volumes")?.csi?.driver).to.equal(
      CSI_DRIVER_NAME,
    );
    expect(p.id).to.equal(p.pod.metadata.uid);
    expect(p.hostDir).to.equal(join(node.root, "pods", p.id));
    expect(await mountPointsUnder(p.csiTarget!)).to.deep.equal([p.csiTarget]);
    expect((await node.exec("pod-a", ["ls", "/datasets"])).stdout.trim()).to.equal("");
  });

  it("2. an annotation change makes the bucket readable inside the running container", async () => {
    await node.setBuckets("pod-a", "alpha");
    expect(await waitFor("alpha in pod-a", () => read("pod-a", "/datasets/alpha/hello.txt"))).to.equal(
      "hello alpha\n",
    );
    await waitFor("status mounted", async () => (await node.status("pod-a")).alpha?.state === "mounted");
    const p = node.pod("pod-a");
    // The FUSE mount is in the pod's directory, and its copy at the kubelet's target.
    const points = await mountPointsUnder(node.work);
    expect(points).to.include(join(p.hostDir, "alpha"));
    expect(points).to.include(join(p.csiTarget!, "alpha"));
  });

  it("3. a repeated publish of the same target succeeds and changes nothing", async () => {
    const p = node.pod("pod-a");
    const kubelet = await node.csiKubelet();
    expect(await kubelet.publish({ uid: p.id, namespace: p.namespace, name: p.name })).to.equal(p.csiTarget);
    expect(await read("pod-a", "/datasets/alpha/hello.txt")).to.equal("hello alpha\n");
  });

  it("4. a second bucket, and its removal, reach the running container", async () => {
    await node.setBuckets("pod-a", "alpha, beta:ro");
    expect(await waitFor("beta in pod-a", () => read("pod-a", "/datasets/beta/b.txt"))).to.equal("beta\n");
    await node.setBuckets("pod-a", "alpha");
    await waitFor(
      "beta gone from pod-a",
      async () => (await read("pod-a", "/datasets/beta/b.txt")) === undefined,
    );
  });

  it("5. the mounter killed with its clients and started again: the published target stays, and the remount reaches the container", async () => {
    const p = node.pod("pod-a");
    const alpha = join(p.hostDir, "alpha");
    const old = (await node.clients()).get(alpha);
    expect(old).to.be.a("number");
    await node.killMounter();
    await waitFor("the old client gone", async () => !(await alive(old!)), 10_000);
    expect(await mountPointsUnder(p.csiTarget!)).to.include(p.csiTarget);
    await node.startMounter();
    await waitFor(
      "a new client for alpha",
      async () => {
        const pid = (await node.clients()).get(alpha);
        return pid !== undefined && pid !== old;
      },
      60_000,
    );
    expect(
      await waitFor("alpha readable again in pod-a", () => read("pod-a", "/datasets/alpha/hello.txt")),
    ).to.equal("hello alpha\n");
    // The restarted mounter still answers the kubelet for this pod.
    const kubelet = await node.csiKubelet();
    expect(await kubelet.publish({ uid: p.id, namespace: p.namespace, name: p.name })).to.equal(p.csiTarget);
  });

  it("6. container stop, NodeUnpublishVolume, pod deletion (the kubelet's order) leave no mount, client or directory", async () => {
    const p = node.pod("pod-a");
    const clients = [...(await node.clients()).entries()].filter(([mp]) => mp.startsWith(p.hostDir));
    expect(clients).to.have.length(1);
    await node.deletePod("pod-a");
    expect(await mountPointsUnder(p.csiTarget!)).to.deep.equal([]);
    expect(existsSync(p.csiTarget!), "the target").to.equal(false);
    await waitFor("pod-a's directory removed", async () => !existsSync(p.hostDir));
    expect(await mountPointsUnder(p.hostDir)).to.deep.equal([]);
    await waitFor("its client stopped", async () => {
      for (const [, pid] of clients) if (await alive(pid)) return false;
      return true;
    });
    expect([...(await node.clients()).keys()].filter((mp) => mp.startsWith(p.hostDir))).to.deep.equal([]);
  });

  it("7. out of order: the pod object goes first, then the kubelet unpublishes: still nothing left", async () => {
    const p = await node.addPod({ namespace: "team-a", name: "pod-b", buckets: "alpha" });
    expect(await waitFor("alpha in pod-b", () => read("pod-b", "/datasets/alpha/hello.txt"))).to.equal(
      "hello alpha\n",
    );
    const pids = [...(await node.clients()).entries()]
      .filter(([mp]) => mp.startsWith(p.hostDir))
      .map(([, pid]) => pid);
    // The pod object is removed (a forced deletion) while its container runs and its volume is published.
    await unlink(join(node.podsDir, p.file));
    await waitFor("pod-b's buckets unmounted", async () =>
      (await mountPointsUnder(p.hostDir)).every((m) => m === p.hostDir),
    );
    expect(existsSync(p.hostDir), "kept while published").to.equal(true);
    await node.runc.delete(p.container);
    await (await node.csiKubelet()).unpublish({ uid: p.id, namespace: p.namespace, name: p.name });
    // And the kubelet retries an unpublish it is unsure of.
    await (await node.csiKubelet()).unpublish({ uid: p.id, namespace: p.namespace, name: p.name });
    node.pods.delete("pod-b");
    expect(await mountPointsUnder(p.csiTarget!)).to.deep.equal([]);
    expect(existsSync(p.csiTarget!)).to.equal(false);
    expect(existsSync(p.hostDir), "the pod's directory").to.equal(false);
    await waitFor("its client stopped", async () => {
      for (const pid of pids) if (await alive(pid)) return false;
      return true;
    });
  });

  it("8. out of order: an unpublish before any publish succeeds", async () => {
    await (
      await node.csiKubelet()
    ).unpublish({
      uid: "00000000-0000-4000-8000-000000000000",
      namespace: "team-a",
      name: "never",
    });
    expect(await mountPointsUnder(join(node.kubeletDir!, "pods"))).to.deep.equal([]);
    expect(await mountPointsUnder(join(node.root, "pods"))).to.deep.equal([]);
  });
});
