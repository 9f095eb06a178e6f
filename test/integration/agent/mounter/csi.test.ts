/**
 * The mounter's CSI services, real: the mounter runs with `--csi-socket` in a mount namespace that
 * holds the root and a kubelet directory `Bidirectional`, as its DaemonSet does, and a real
 * grpc-js client makes the kubelet's calls. Publishing binds the pod's directory at the target;
 * a mount made later under the pod's directory (tmpfs here, a FUSE client in production) appears
 * at the target; unpublishing takes the target away and leaves the pod's mounts alone. Runs as root.
 */
import { expect } from "chai";
import { randomUUID } from "node:crypto";
import { existsSync, statSync } from "node:fs";
import { mkdir, readFile, rmdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { MounterConnection } from "../../../../agent/mounter/client.js";
import { csiProtoPath } from "../../../../agent/mounter/csi/server.js";
import { AGENT_NODE_FLAGS } from "../../../../agent/config.js";
import { GRPC_CODE } from "../../../../agent/mounter/csi/requests.js";
import { CSI_DRIVER_NAME } from "../../../../shared/names.js";
import { KubeletStandIn, type CallError, type KubeletPod } from "../../../../scripts/lib/kubelet.js";
import {
  ensureSharedMount,
  readMountinfo,
  startInMountNamespace,
  unmountTree,
  type NamespacedProcess,
  type SharedMount,
} from "../../../../scripts/lib/namespaces.js";
import { createWorkDir, removeWorkDir } from "../../../../scripts/lib/workdir.js";
import { run } from "../../../../agent/mount/exec.js";

const MOUNTER_MAIN = join(import.meta.dirname, "..", "..", "..", "..", "agent", "mounter", "main.ts");

function pod(name: string): KubeletPod {
  return { uid: randomUUID(), namespace: "team-a", name, serviceAccount: "default" };
}

async function mustRun(cmd: string, argv: string[]): Promise<void> {
  const r = await run(cmd, argv, { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`${cmd} ${argv.join(" ")}: ${r.stderr}`);
}

async function codeOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (e) {
    return (e as CallError).code;
  }
  throw new Error("the call succeeded");
}

describe("mounter CSI services (real mounter, grpc-js client)", function () {
  this.timeout(60_000);
  let work: string;
  let root: string;
  let kubeletDir: string;
  let socket: string;
  const shared: SharedMount[] = [];
  let mounter: NamespacedProcess | undefined;
  let kubelet: KubeletStandIn;

  before(async function () {
    if (process.getuid?.() !== 0) this.skip();
    work = await createWorkDir("dv-csi-it-");
    root = join(work, "root");
    kubeletDir = join(work, "kubelet");
    await mkdir(join(root, "pods"), { recursive: true });
    await mkdir(kubeletDir, { recursive: true });
    shared.push(await ensureSharedMount(root), await ensureSharedMount(kubeletDir));
    socket = join(kubeletDir, "plugins", CSI_DRIVER_NAME, "csi.sock");
    mounter = await startInMountNamespace({
      argv: [
        process.execPath,
        ...AGENT_NODE_FLAGS,
        "--import",
        "tsx",
        MOUNTER_MAIN,
        "--root",
        root,
        "--csi-socket",
        socket,
        "--node-id",
        "node-1",
      ],
      logFile: join(work, "mounter.log"),
      bidirectional: [root, kubeletDir],
    });
    const deadline = Date.now() + 30_000;
    while (!(await mounter.log()).includes('"CSI services listening"')) {
      if (mounter.exitStatus() !== undefined || Date.now() > deadline)
        throw new Error(`the mounter did not start: ${await mounter.log()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    kubelet = new KubeletStandIn(socket, kubeletDir);
  });

  after(async function () {
    kubelet?.close();
    await mounter?.stop(3000);
    // Deepest first: the kubelet directory's targets, then the pods' mounts, then the shared binds.
    if (kubeletDir !== undefined) await unmountTree(kubeletDir).catch(() => undefined);
    if (root !== undefined) await unmountTree(root).catch(() => undefined);
    for (const s of shared.reverse()) await s.undo().catch(() => undefined);
    if (work !== undefined) await removeWorkDir(work);
  });

  /** Mounts of the host's namespace at or below `path`. */
  async function mountsAt(path: string): Promise<string[]> {
    return (await readMountinfo())
      .map((m) => m.mountPoint)
      .filter((p) => p === path || p.startsWith(`${path}/`));
  }

  describe("Identity and node information", () => {
    it("names the driver, has no capability to announce and is ready", async () => {
      expect(await kubelet.register()).to.deep.equal({ driver: CSI_DRIVER_NAME, nodeId: "node-1" });
      expect(await kubelet.call("Identity", "GetPluginCapabilities")).to.deep.equal({ capabilities: [] });
      expect(await kubelet.call("Identity", "Probe")).to.deep.equal({ ready: { value: true } });
      expect(await kubelet.call("Node", "NodeGetCapabilities")).to.deep.equal({ capabilities: [] });
    });

    it("loads csi.proto from the path the server uses", () => {
      expect(existsSync(csiProtoPath())).to.equal(true);
    });
  });

  describe("NodePublishVolume", () => {
    const p = pod("web-0");
    let target: string;

    it("binds <root>/pods/<uid> read-only at the target, a slave of the root and shared with the host", async () => {
      target = await kubelet.publish(p);
      const dir = join(root, "pods", p.uid);
      const st = statSync(dir);
      expect(st.isDirectory() && st.uid === 0 && (st.mode & 0o022) === 0).to.equal(true);
      const infos = await readMountinfo();
      const m = infos.find((i) => i.mountPoint === target);
      const r = infos.find((i) => i.mountPoint === root);
      expect(m, "target mounted on the host").to.not.equal(undefined);
      expect(m!.root.endsWith(`/pods/${p.uid}`)).to.equal(true);
      expect(m!.mountOptions).to.include("ro");
      expect(m!.masterGroup).to.equal(r!.sharedGroup);
      expect(m!.sharedGroup).to.not.equal(undefined);
    });

    it("shows a mount made later under the pod's directory at the target (propagation)", async () => {
      const x = join(root, "pods", p.uid, "x");
      await mkdir(x);
      await mustRun("mount", ["-t", "tmpfs", "-o", "size=1m", "bucket-x", x]);
      await writeFile(join(x, "hello.txt"), "hello\n");
      expect(await readFile(join(target, "x", "hello.txt"), "utf8")).to.equal("hello\n");
    });

    it("[ok] the same publish again", async () => {
      expect(await kubelet.publish(p)).to.equal(target);
      expect((await mountsAt(target)).filter((m) => m === target)).to.have.length(1);
    });

    it("[error] ALREADY_EXISTS for another volume id on the same target", async () => {
      const req = { ...kubelet.publishRequest(p), volume_id: "csi-other" };
      expect(await codeOf(kubelet.call("Node", "NodePublishVolume", req))).to.equal(GRPC_CODE.ALREADY_EXISTS);
    });

    it("keeps the pod's directory while it is published (the agent's garbage collection asks)", async () => {
      const conn = await MounterConnection.connect(join(root, "run", "mounter.sock"));
      try {
        const err = await conn.request({ op: "rmdir", podId: p.uid, path: [] }).then(
          () => undefined,
          (e: unknown) => e as { code: string },
        );
        expect(err?.code).to.equal("Conflict");
      } finally {
        conn.close();
      }
      expect(existsSync(join(root, "pods", p.uid))).to.equal(true);
    });

    it("unpublishing removes the target everywhere and leaves the pod's own mounts alone", async () => {
      await kubelet.unpublish(p);
      expect(await mountsAt(target)).to.deep.equal([]);
      expect(existsSync(target)).to.equal(false);
      expect((await mounter!.mountinfo()).some((m) => m.mountPoint.startsWith(target))).to.equal(false);
      expect(await readFile(join(root, "pods", p.uid, "x", "hello.txt"), "utf8")).to.equal("hello\n");
      expect(existsSync(join(root, "pods", p.uid)), "a directory with mounts stays").to.equal(true);
    });

    it("[ok] unpublishing twice", async () => {
      await kubelet.unpublish(p);
      await mustRun("umount", [join(root, "pods", p.uid, "x")]);
    });
  });

  describe("out of order", () => {
    it("[ok] unpublishing a target that was never published", async () => {
      await kubelet.unpublish(pod("never"));
    });

    it("[ok] unpublishing after the pod is gone: the agent's teardown, then the directory goes with the target", async () => {
      const p = pod("gone-0");
      const target = await kubelet.publish(p);
      const dir = join(root, "pods", p.uid);
      await mkdir(join(dir, "data"));
      await mustRun("mount", ["-t", "tmpfs", "-o", "size=1m", "bucket-data", join(dir, "data")]);
      expect((await mountsAt(target)).length).to.equal(2);
      // The agent's pod deletion: unmount the bucket, remove its mount point, then ask the mounter
      // to remove the pod's directory, which it refuses while the directory is published.
      await mustRun("umount", [join(dir, "data")]);
      await rmdir(join(dir, "data"));
      const conn = await MounterConnection.connect(join(root, "run", "mounter.sock"));
      try {
        const refused = await conn.request({ op: "rmdir", podId: p.uid, path: [] }).then(
          () => undefined,
          (e: unknown) => (e as { code: string }).code,
        );
        expect(refused).to.equal("Conflict");
      } finally {
        conn.close();
      }
      await kubelet.unpublish(p);
      expect(await mountsAt(target)).to.deep.equal([]);
      expect(existsSync(target)).to.equal(false);
      expect(existsSync(dir), "the pod's directory").to.equal(false);
      expect(await mountsAt(join(root, "pods"))).to.deep.equal([]);
    });

    it("[ok] unpublishing after the pod's directory was removed already", async () => {
      const p = pod("gone-1");
      const target = await kubelet.publish(p);
      await rmdir(join(root, "pods", p.uid));
      await kubelet.unpublish(p);
      expect(await mountsAt(target)).to.deep.equal([]);
      expect(existsSync(target)).to.equal(false);
    });

    it("[ok] publishing again after an unpublish", async () => {
      const p = pod("again-0");
      const target = await kubelet.publish(p);
      await kubelet.unpublish(p);
      expect(await kubelet.publish(p)).to.equal(target);
      await kubelet.unpublish(p);
      expect(await mountsAt(target)).to.deep.equal([]);
    });
  });

  describe("why the target is a slave of the root (negative control, no driver involved)", () => {
    it("a plain bind of the pod's directory, lazily unmounted, takes the pod's mounts with it", async () => {
      const uid = randomUUID();
      const dir = join(root, "pods", uid);
      const target = join(kubeletDir, "control", uid);
      await mkdir(join(dir, "x"), { recursive: true });
      await mkdir(target, { recursive: true });
      await mustRun("mount", ["--bind", dir, target]);
      try {
        await mustRun("mount", ["-t", "tmpfs", "-o", "size=1m", "bucket-x", join(dir, "x")]);
        expect(await mountsAt(target)).to.include(join(target, "x"));
        await mustRun("umount", ["-l", target]);
        expect(await mountsAt(dir), "the pod's own mount went with the target").to.deep.equal([]);
      } finally {
        await unmountTree(target, { includeSelf: true }).catch(() => undefined);
        await unmountTree(dir).catch(() => undefined);
        await rmdir(join(dir, "x")).catch(() => undefined);
        await rmdir(dir).catch(() => undefined);
      }
    });
  });

  describe("bad requests", () => {
    const p = pod("bad-0");
    const base = (): Record<string, unknown> => kubelet.publishRequest(p);
    const ctx = (over: Record<string, string>): Record<string, unknown> => ({
      ...base(),
      volume_context: { ...(base().volume_context as Record<string, string>), ...over },
    });
    const cases: Array<[string, () => Record<string, unknown>]> = [
      ["no volume_id", () => ({ ...base(), volume_id: "" })],
      ["no target_path", () => ({ ...base(), target_path: "" })],
      ["a relative target_path", () => ({ ...base(), target_path: "pods/x/mount" })],
      ["a target_path with ..", () => ({ ...base(), target_path: `${kubeletDir}/../${p.uid}/mount` })],
      ["no volume_capability", () => ({ ...base(), volume_capability: null })],
      ["a block volume", () => ({ ...base(), volume_capability: { block: {}, access_mode: { mode: 1 } } })],
      ["readonly false", () => ({ ...base(), readonly: false })],
      ["not ephemeral", () => ctx({ "csi.storage.k8s.io/ephemeral": "false" })],
      ["no pod uid", () => ctx({ "csi.storage.k8s.io/pod.uid": "" })],
      ["another pod's uid", () => ctx({ "csi.storage.k8s.io/pod.uid": randomUUID() })],
    ];
    for (const [what, req] of cases)
      it(`[error] INVALID_ARGUMENT for ${what}, and nothing is made`, async () => {
        expect(await codeOf(kubelet.call("Node", "NodePublishVolume", req()))).to.equal(
          GRPC_CODE.INVALID_ARGUMENT,
        );
        expect(existsSync(join(root, "pods", p.uid))).to.equal(false);
      });

    it("[error] INVALID_ARGUMENT for an unpublish without volume_id or target_path", async () => {
      expect(
        await codeOf(kubelet.call("Node", "NodeUnpublishVolume", { volume_id: "", target_path: "" })),
      ).to.equal(GRPC_CODE.INVALID_ARGUMENT);
    });

    it("leaves no mount behind", async () => {
      expect(await mountsAt(join(kubeletDir, "pods"))).to.deep.equal([]);
      expect(await mountsAt(join(root, "pods"))).to.deep.equal([]);
    });
  });
});
