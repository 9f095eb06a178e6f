/**
 * CsiNode with a fake host (mount table and mount commands), on a real temporary root: which mount
 * commands publishing and unpublishing run, in which order, and what they refuse. The real kernel's
 * answer to the same commands is in test/integration/agent/mounter/csi.test.ts.
 */
import { expect } from "chai";
import { mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { CsiCallError } from "../../../../../agent/mounter/csi/node.js";
import { CsiNode, type CsiHost } from "../../../../../agent/mounter/csi/node.js";
import { GRPC_CODE, type PublishRequest } from "../../../../../agent/mounter/csi/requests.js";
import { parseMountinfoLine, type MountInfo } from "../../../../../agent/mount/mountinfo.js";
import { createLogger } from "../../../../../shared/logger.js";

const log = createLogger({ name: "test", level: "silent" });
const UID = "3f2b8c1e-9d4a-4e6f-8a7b-0c1d2e3f4a5b";

/** A mount table in memory that `mount --bind/--move` and `umount` change as the kernel would, roughly. */
class FakeHost implements CsiHost {
  readonly calls: string[][] = [];
  table: MountInfo[] = [];
  private next = 100;
  /** How a bind moved onto a target is tagged: `shared:2 master:1` (a slave of the root), or else. */
  movedTag = "shared:2 master:1";

  add(root: string, mountPoint: string, tag: string, source = "/dev/sda1"): void {
    const id = this.next++;
    this.table.push(
      parseMountinfoLine(
        `${id} 1 8:1 ${root} ${mountPoint} rw,relatime ${tag} - ext4 ${source} rw`.replace("  ", " "),
      ),
    );
  }

  async mountinfo(): Promise<MountInfo[]> {
    return [...this.table];
  }

  async mount(argv: readonly string[]): Promise<void> {
    this.calls.push(["mount", ...argv]);
    if (argv[0] === "--bind") this.add(argv[1]!, argv[2]!, "shared:1");
    if (argv[0] === "--move") {
      const m = this.table.find((r) => r.mountPoint === argv[1]);
      this.table = this.table.filter((r) => r !== m);
      this.add(m!.root, argv[2]!, this.movedTag);
    }
  }

  async umount(argv: readonly string[]): Promise<void> {
    this.calls.push(["umount", ...argv]);
    const target = argv[argv.length - 1]!;
    this.table = this.table.filter((r) => r.mountPoint !== target && !r.mountPoint.startsWith(`${target}/`));
  }
}

describe("CsiNode (fake host)", () => {
  let work: string;
  let root: string;
  let target: string;
  let host: FakeHost;
  let node: CsiNode;
  let req: PublishRequest;

  beforeEach(function () {
    if (process.getuid?.() !== 0) this.skip();
    work = mkdtempSync(join(tmpdir(), "dv-csi-node-"));
    root = join(work, "root");
    target = join(work, "kubelet", "pods", UID, "volumes", "kubernetes.io~csi", "dynamic-volumes", "mount");
    host = new FakeHost();
    host.add("/", "/", "shared:9");
    host.add(root, root, "shared:1");
    node = new CsiNode({ root, host, log });
    req = {
      volumeId: "csi-1",
      targetPath: target,
      podUid: UID,
      podNamespace: "team-a",
      podName: "web-0",
      serviceAccount: "default",
    };
    // The root as the mounter makes it at start-up: root-owned, 0755.
    for (const d of [root, join(root, "pods"), join(root, "agent"), join(root, "agent", "staging")])
      mkdirSync(d, { mode: 0o755 });
  });

  afterEach(() => {
    if (work !== undefined) rmSync(work, { recursive: true, force: true });
  });

  it("publishes through a private staging directory: bind, make-slave, read-only, move", async () => {
    await node.publish(req);
    const staging = join(root, "agent", "staging", `csi.${UID}`);
    expect(host.calls).to.deep.equal([
      ["mount", "--bind", join(root, "pods", UID), staging],
      ["mount", "--make-slave", staging],
      ["mount", "-o", "remount,bind,ro", staging],
      ["mount", "--move", staging, target],
    ]);
    expect(statSync(join(root, "pods", UID)).isDirectory()).to.equal(true);
  });

  it("[ok] publishing the same target again runs nothing", async () => {
    await node.publish(req);
    host.calls.length = 0;
    await node.publish(req);
    expect(host.calls).to.deep.equal([]);
  });

  it("[error] ALREADY_EXISTS for another volume id, or something else mounted at the target", async () => {
    await node.publish(req);
    const other = await node.publish({ ...req, volumeId: "csi-2" }).catch((e: unknown) => e as CsiCallError);
    expect(other).to.include({ code: GRPC_CODE.ALREADY_EXISTS });
    const t2 = target.replace(UID, "00000000-0000-4000-8000-000000000000");
    host.add("/srv/other", t2, "shared:3");
    const foreign = await node
      .publish({ ...req, targetPath: t2, podUid: "00000000-0000-4000-8000-000000000000" })
      .catch((e: unknown) => e as CsiCallError);
    expect(foreign).to.include({ code: GRPC_CODE.ALREADY_EXISTS });
  });

  it("[error] INTERNAL, and the target unmounted again, when the target would not receive the root's mounts", async () => {
    host.movedTag = "shared:7";
    const e = await node.publish(req).catch((err: unknown) => err as CsiCallError);
    expect(e).to.include({ code: GRPC_CODE.INTERNAL });
    expect(host.calls.at(-1)).to.deep.equal(["umount", "-l", target]);
    expect(host.table.some((m) => m.mountPoint === target)).to.equal(false);
  });

  it("[error] INTERNAL, and the target unmounted again, when the target would not reach the host (kubelet directory not Bidirectional)", async () => {
    host.movedTag = "master:1";
    const e = await node.publish(req).catch((err: unknown) => err as CsiCallError);
    expect(e).to.include({ code: GRPC_CODE.INTERNAL });
    expect((e as CsiCallError).message).to.match(/Bidirectional/);
    expect(host.table.some((m) => m.mountPoint === target)).to.equal(false);
  });

  it("unpublishes with a lazy unmount when the target has the buckets' copies below it", async () => {
    await node.publish(req);
    host.add("/", join(target, "alpha"), "master:4", "s3fs");
    host.calls.length = 0;
    await node.unpublish({ volumeId: "csi-1", targetPath: target });
    expect(host.calls).to.deep.equal([["umount", "-l", target]]);
  });

  it("makes a target that is a peer of the root a slave before the lazy unmount (the root keeps its mounts)", async () => {
    host.add(join(root, "pods", UID), target, "shared:1");
    host.add("/", join(target, "alpha"), "shared:4", "s3fs");
    await node.unpublish({ volumeId: "csi-1", targetPath: target });
    expect(host.calls).to.deep.equal([
      ["mount", "--make-rslave", target],
      ["umount", "-l", target],
    ]);
  });

  it("[ok] unpublishing a target that is not mounted runs nothing", async () => {
    await node.unpublish({ volumeId: "csi-1", targetPath: target });
    expect(host.calls).to.deep.equal([]);
  });

  it("reports a pod's directory as published while a target binds it", async () => {
    expect(await node.isPublished(UID)).to.equal(false);
    await node.publish(req);
    expect(await node.isPublished(UID)).to.equal(true);
    await node.unpublish({ volumeId: "csi-1", targetPath: target });
    expect(await node.isPublished(UID)).to.equal(false);
  });
});
