/**
 * Attacks on the node side, played end to end: an S3 server on loopback, pods as runc containers,
 * the agent as its own process in a Bidirectional mount namespace, real s3fs and rclone.
 *
 * - A pod that can write into its own host directory (a volumeMount the webhook should have
 *   denied) plants a symbolic link where a bucket is to be mounted, pointing at a directory on the
 *   agent's PATH. The link is planted from the host here, which is what such a pod could do.
 * - The agent runs with a PATH whose first directory holds look-alike `s3fs`, `rclone`, `mount`,
 *   `umount` and `fusermount3` programs: the agent must run its programs by absolute path, and
 *   hand its clients a PATH of its own.
 */
import { expect } from "chai";
import { fastAgentArgs } from "../support/harness.js";
import { chmod, mkdir, readdir, readFile, rename, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stagingDir } from "../../agent/mount/host.js";
import { isFuse, mountsUnder, type MountInfo } from "../../agent/mount/mountinfo.js";
import { LocalNode } from "../../scripts/lib/local-node.js";
import { readMountinfo } from "../../scripts/lib/namespaces.js";
import { pidsWithArg, waitFor as waitUntil } from "../support/processes.js";

const waitFor = <T>(
  what: string,
  probe: () => Promise<T | undefined | false>,
  timeoutMs = 30000,
): Promise<T> => waitUntil(what, probe, timeoutMs, 50);

/** Live processes with an argument that names `fragment` (a FUSE client names where it mounts). */
const pidsMentioning = (fragment: string): Promise<number[]> => pidsWithArg((a) => a.includes(fragment));

/**
 * Samples a mount table every few milliseconds and keeps every FUSE mount point it sees that was not
 * there at the start: a bucket mounted in the wrong place for a moment counts, even when it is gone
 * again by the time the test looks (a client that fails its readiness check is stopped). Mounts
 * below the temporary directory but outside `work` are other test runs' on this machine, which reach
 * the agent's namespace through their shared roots: they do not count.
 */
class FuseMountWatcher {
  readonly seen = new Set<string>();
  private running = true;
  private readonly done: Promise<void>;
  constructor(read: () => Promise<MountInfo[]>, inherited: readonly MountInfo[], work: string) {
    const old = new Set(inherited.map((m) => m.mountId));
    const others = (p: string): boolean => p.startsWith(`${tmpdir()}/`) && !p.startsWith(`${work}/`);
    this.done = (async () => {
      while (this.running) {
        for (const m of await read().catch(() => []))
          if (isFuse(m) && !old.has(m.mountId) && !others(m.mountPoint)) this.seen.add(m.mountPoint);
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
  }
  async stop(): Promise<string[]> {
    this.running = false;
    await this.done;
    return [...this.seen].sort();
  }
}

const PROGRAMS = ["s3fs", "rclone", "geesefs", "mount", "umount", "fusermount3", "fusermount"];

for (const mounter of ["s3fs", "rclone"] as const) {
  describe(`agent attacks with ${mounter}`, function () {
    this.timeout(180_000);
    let node: LocalNode;
    let evilBin: string;
    let marker: string;
    /** FUSE mounts the agent's namespace had when it started (other programs' on this machine). */
    let inherited: MountInfo[] = [];

    /** The look-alikes write a line to the marker, then run the real program so that nothing else breaks. */
    const plantLookAlikes = async (): Promise<void> => {
      await mkdir(evilBin, { recursive: true });
      for (const p of PROGRAMS) {
        const real = p === "fusermount" ? "/usr/bin/fusermount3" : `/usr/bin/${p}`;
        const file = join(evilBin, p);
        await writeFile(file, `#!/bin/sh\necho "$0 $*" >> '${marker}'\nexec ${real} "$@"\n`);
        await chmod(file, 0o755);
      }
    };

    // The agent decides and the mounter starts the clients: both logs tell what happened.
    const agentLogLines = async (): Promise<Array<Record<string, unknown>>> =>
      `${await node.agentLog()}\n${await node.mounterLog()}`
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as Record<string, unknown>);

    before(async function () {
      if (process.getuid?.() !== 0)
        throw new Error("the end-to-end tests need root; run scripts/setup.sh and npm test as root");
      node = await LocalNode.start({
        prefix: `dv-e2e-attacks-${mounter}-`,
        buckets: {
          "evil-bin": { s3fs: "#!/bin/sh\necho pwned\n", rclone: "#!/bin/sh\necho pwned\n" },
          good: { "hello.txt": "hello\n" },
        },
        agentArgs: [...fastAgentArgs(mounter), "--log-level", "debug"],
        mounterArgs: ["--log-level", "debug"],
      });
      evilBin = join(node.work, "evil-bin");
      marker = join(node.work, "look-alikes-ran.log");
      await plantLookAlikes();
      await node.writeSecret("team-a");
      await node.addPod({ namespace: "team-a", name: "pod-a" });
      await node.addPod({ namespace: "team-a", name: "pod-m" });
      // The agent inherits this process's environment: its PATH starts with the look-alikes.
      const path = process.env.PATH;
      process.env.PATH = `${evilBin}:${path ?? "/usr/sbin:/usr/bin:/sbin:/bin"}`;
      try {
        await node.startAgent();
      } finally {
        process.env.PATH = path;
      }
      inherited = (await node.agent!.mountinfo()).filter(isFuse);
    });

    after(async function () {
      if (node === undefined) return;
      const log = await node.agentLog();
      const work = node.work;
      try {
        await node.stop();
      } finally {
        // A client that mounted outside the root (in the agent's own namespace) is out of reach of
        // the node's clean-up: stop it by its pid.
        for (const pid of await pidsMentioning(`${work}/`)) {
          try {
            process.kill(pid, "SIGKILL");
          } catch {
            // already gone
          }
        }
        if (this.currentTest?.state === "failed") console.log(log.split("\n").slice(-40).join("\n"));
      }
    });

    it("1. a symbolic link at the mount point fails with the reason; nothing is mounted at its target or anywhere, no client starts, a sibling entry mounts", async () => {
      const pod = node.pod("pod-a");
      // Stands in for /usr/local/sbin, the first directory on the image's PATH, empty as in the image
      // (s3fs refuses a mount point that holds files).
      const target = join(node.work, "usr-local-sbin");
      await mkdir(target);
      const link = join(pod.hostDir, "data");
      await symlink(target, link);

      const watcher = new FuseMountWatcher(() => node.agent!.mountinfo(), inherited, node.work);
      try {
        await node.setBuckets("pod-a", "data=evil-bin, ok=good");
        await waitFor("ok mounted", async () => (await node.status("pod-a")).ok?.state === "mounted");
        await waitFor("data failed", async () => (await node.status("pod-a")).data?.state === "failed");
        // Let a few retries pass: none of them may mount anything either.
        await new Promise((r) => setTimeout(r, 4000));
      } finally {
        await watcher.stop();
      }
      // Clients mount in the agent's private staging directory first; nothing else but the sibling.
      expect(
        [...watcher.seen].filter((p) => !p.startsWith(`${stagingDir(node.root)}/`)),
        "FUSE mounts the agent made, at any time",
      ).to.deep.equal([join(pod.hostDir, "ok")]);
      expect(mountsUnder(await readMountinfo(), target), "mounts at the target on the host").to.deep.equal(
        [],
      );
      expect(
        mountsUnder(await node.agent!.mountinfo(), target),
        "mounts at the target in the agent",
      ).to.deep.equal([]);
      expect(await readdir(link), "the link still leads to the untouched directory").to.deep.equal([]);
      const status = await node.status("pod-a");
      expect(status.data?.error).to.match(/is a symbolic link; nothing is mounted/);
      expect(status.data?.error).to.include(link);
      expect(
        (await node.exec("pod-a", ["cat", "/datasets/ok/hello.txt"])).stdout,
        "the sibling entry is readable in the pod",
      ).to.equal("hello\n");

      const started = (await agentLogLines()).filter((l) => l.msg === "client started");
      expect(
        started.filter((l) => l.mountPoint === link),
        "clients started for the link",
      ).to.deep.equal([]);
      expect(started.some((l) => l.mountPoint === join(pod.hostDir, "ok"))).to.equal(true);
      expect(await pidsMentioning(target), "clients naming the link's target").to.deep.equal([]);
      expect(await pidsMentioning(link), "clients naming the link").to.deep.equal([]);
      const failures = (await node.events()).filter(
        (e) => e.name === "pod-a" && e.reason === "MountFailed" && e.message.startsWith("data:"),
      );
      expect(failures, "one MountFailed Event, not one per retry").to.have.length(1);
      expect(failures[0]!.message).to.match(/symbolic link/);
    });

    it("2. a pod directory replaced by a symbolic link fails; nothing is mounted where it points", async () => {
      const pod = node.pod("pod-m");
      const decoy = join(node.work, "decoy");
      await mkdir(decoy);
      // The container keeps the real directory under its new name.
      await rename(pod.hostDir, `${pod.hostDir}.real`);
      await symlink(decoy, pod.hostDir);
      const watcher = new FuseMountWatcher(() => node.agent!.mountinfo(), inherited, node.work);
      try {
        await node.setBuckets("pod-m", "ok=good");
        await waitFor("ok failed", async () => (await node.status("pod-m")).ok?.state === "failed");
        const seen = await watcher.stop();
        expect(
          seen.filter(
            (p) =>
              !p.startsWith(`${node.pod("pod-a").hostDir}/`) && !p.startsWith(`${stagingDir(node.root)}/`),
          ),
          "FUSE mounts made, at any time",
        ).to.deep.equal([]);
        expect(await readdir(decoy)).to.deep.equal([]);
        expect(mountsUnder(await node.agent!.mountinfo(), decoy)).to.deep.equal([]);
        expect(mountsUnder(await readMountinfo(), decoy)).to.deep.equal([]);
        expect((await node.status("pod-m")).ok?.error).to.match(/is a symbolic link; nothing is mounted/);
        expect((await node.status("pod-m")).ok?.error).to.include(pod.hostDir);
      } finally {
        await watcher.stop();
        await node.setBuckets("pod-m", "");
        await rm(pod.hostDir);
        await rename(`${pod.hostDir}.real`, pod.hostDir);
      }
    });

    it("3. with look-alike programs first on the agent's PATH, mounts and unmounts work and none of them runs", async () => {
      await node.setBuckets("pod-a", "ok=good, more=good");
      await waitFor("more mounted", async () => (await node.status("pod-a")).more?.state === "mounted");
      expect((await node.exec("pod-a", ["cat", "/datasets/more/hello.txt"])).stdout).to.equal("hello\n");
      await node.setBuckets("pod-a", "ok=good");
      await waitFor("more gone", async () => (await node.status("pod-a")).more === undefined);
      expect(mountsUnder(await readMountinfo(), join(node.pod("pod-a").hostDir, "more"))).to.deep.equal([]);
      const ran = await readFile(marker, "utf8").catch(() => "");
      expect(ran, "look-alike programs that ran").to.equal("");
    });
  });
}
