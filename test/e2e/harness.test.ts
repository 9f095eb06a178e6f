/**
 * The e2e harness proving itself on a real kernel: runc pods with a HostToContainer read-only
 * volume, a real s3fs mounted from a mount namespace that behaves like Kubernetes' Bidirectional,
 * and an s3rver child process. Needs root, /dev/fuse, runc and s3fs. Leaves no mount, container,
 * process or directory behind, and checks that it did not in its `after` hook.
 */
import { expect } from "chai";
import { access, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { run } from "../../agent/mount/exec.js";
import { findMount } from "../../agent/mount/mountinfo.js";
import {
  ensureSharedMount,
  readMountinfo,
  startInMountNamespace,
  unmountTree,
  type NamespacedProcess,
  type SharedMount,
} from "../../scripts/lib/namespaces.js";
import { RuncPods, type RuncPod } from "../../scripts/lib/runc.js";
import { S3RVER_CREDENTIALS, startS3Server, type S3Server } from "../../scripts/lib/s3-server.js";
import { cleanupStaleWorkDirs, createWorkDir, removeWorkDir } from "../../scripts/lib/workdir.js";

const BUCKET = "data";
const HELLO = "hello from s3rver\n";

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

async function waitFor(what: string, fn: () => Promise<boolean>, timeoutMs = 10_000): Promise<number> {
  const started = performance.now();
  for (;;) {
    if (await fn()) return performance.now() - started;
    if (performance.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const ms = (n: number): string => `${n.toFixed(0)} ms`;

async function missingPrerequisite(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return "not root";
  if (!(await exists("/dev/fuse"))) return "no /dev/fuse";
  for (const tool of ["runc", "s3fs", "unshare"]) {
    const r = await run("which", [tool], { timeoutMs: 5000 }).catch(() => undefined);
    if (r?.code !== 0) return `${tool} is not installed`;
  }
  return undefined;
}

describe("e2e harness: runc pods, a Bidirectional mount namespace and real s3fs", function () {
  this.timeout(60_000);
  let base: string;
  let root: string;
  let s3: S3Server | undefined;
  let shared: SharedMount | undefined;
  let pods: RuncPods | undefined;
  let podA: RuncPod;
  let podB: RuncPod;
  const processes: NamespacedProcess[] = [];

  /** s3fs in the foreground, so the namespaced process *is* the FUSE client. */
  const s3fs = (mountPoint: string): string[] => [
    "s3fs",
    BUCKET,
    mountPoint,
    "-f",
    ...["-o", `url=${s3!.endpoint}`, "-o", "use_path_request_style", "-o", `passwd_file=${base}/passwd`],
    ...["-o", "allow_other", "-o", "umask=0022", "-o", "dbglevel=info"],
  ];
  /** What the pod sees at `path`, read from the host through the pod's own mount namespace. */
  const inPod = (pod: RuncPod, path: string): string => `/proc/${pod.pid}/root${path}`;

  /**
   * Starts s3fs for `mountPoint` in a Bidirectional namespace and measures, from the spawn, when
   * the namespace exists and when hello.txt is readable on the host, in pod a's mount namespace
   * and through `runc exec` (which adds its own ~20-40 ms). The three are polled concurrently.
   */
  async function mountAndMeasure(mountPoint: string, log: string) {
    const t0 = performance.now();
    const since = async (what: string, fn: () => Promise<boolean>): Promise<number> => {
      await waitFor(what, fn);
      return performance.now() - t0;
    };
    const agent = await startInMountNamespace({
      argv: s3fs(mountPoint),
      logFile: join(base, log),
      bidirectional: [root],
    });
    processes.push(agent);
    const namespace = performance.now() - t0;
    const [host, pod, exec] = await Promise.all([
      since("the mount on the host", async () => {
        const m = findMount(await readMountinfo(), mountPoint);
        return m?.fsType === "fuse.s3fs" && (await exists(join(mountPoint, "hello.txt")));
      }),
      since("the mount in pod a", () => exists(inPod(podA, "/datasets/x/hello.txt"))),
      since(
        "runc exec to read the file",
        async () => (await pods!.exec(podA, ["test", "-r", "/datasets/x/hello.txt"])).code === 0,
      ),
    ]);
    return { agent, namespace, host, pod, exec };
  }

  before(async function () {
    const missing = await missingPrerequisite();
    // A skipped end-to-end test would read as a pass; the suite needs these, so say so and fail.
    if (missing !== undefined)
      throw new Error(`the end-to-end tests cannot run: ${missing}; run scripts/setup.sh as root`);
    // Leftovers of a crashed run (mounts, then containers) would otherwise pile up.
    const staleDirs = await cleanupStaleWorkDirs("dv-e2e-");
    if (staleDirs.length > 0) console.log(`      removed stale work dirs: ${staleDirs.join(", ")}`);
    base = await createWorkDir("dv-e2e-");
    root = join(base, "root");
    await mkdir(join(root, "pods", "a", "x"), { recursive: true });
    await mkdir(join(root, "pods", "b"), { recursive: true });
    await writeFile(
      join(base, "passwd"),
      `${S3RVER_CREDENTIALS.accessKeyId}:${S3RVER_CREDENTIALS.secretAccessKey}\n`,
      { mode: 0o600 },
    );
    s3 = await startS3Server({ buckets: { [BUCKET]: { "hello.txt": HELLO, "dir1/a.txt": "file a\n" } } });
    shared = await ensureSharedMount(root);
    pods = new RuncPods({ prefix: "dv-e2e-" });
    const stale = await pods.cleanupStale();
    if (stale.length > 0) console.log(`      removed stale pods: ${stale.join(", ")}`);
    const t = performance.now();
    [podA, podB] = await Promise.all([
      pods.startPod({ id: "a", hostDir: join(root, "pods", "a"), mountPath: "/datasets", readOnly: true }),
      pods.startPod({ id: "b", hostDir: join(root, "pods", "b"), mountPath: "/datasets", readOnly: true }),
    ]);
    console.log(`      2 runc pods started in ${(performance.now() - t).toFixed(0)} ms`);
  });

  after(async function () {
    if (base === undefined) return;
    const errors: string[] = [];
    const step = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
      await fn().catch((e: unknown) => errors.push(`${what}: ${(e as Error).message}`));
    };
    // Order: mounts deepest first, containers, our processes, then the shared root bind.
    await step("unmount", () => unmountTree(root));
    if (pods) await step("runc delete", () => pods!.deleteAll());
    for (const p of processes) await step(`stop ${p.pid}`, () => p.stop(1000));
    if (shared) await step("undo shared root", () => shared!.undo());
    if (s3) await step("stop s3rver", () => s3!.stop());
    // Leak checks, with the commands a person would type.
    const fuse = await run("findmnt", ["-rn", "-t", "fuse.s3fs", "-o", "TARGET"], { timeoutMs: 5000 });
    const leakedMounts = fuse.stdout.split("\n").filter((l) => l.startsWith(base));
    if (leakedMounts.length > 0) errors.push(`leaked s3fs mounts: ${leakedMounts.join(", ")}`);
    const listed = await run("runc", ["list", "-q"], { timeoutMs: 5000 });
    const ours = pods ? `${pods.prefix}${pods.runId}-` : "\0";
    const leakedPods = listed.stdout.split("\n").filter((l) => l.startsWith(ours));
    if (leakedPods.length > 0) errors.push(`leaked runc containers: ${leakedPods.join(", ")}`);
    await step("remove work dir", () => removeWorkDir(base));
    if (errors.length > 0) throw new Error(`cleanup: ${errors.join("; ")}`);
  });

  it("starts pods whose volume is an rslave, read-only bind of the host directory", async () => {
    const r = await pods!.exec(podA, ["cat", "/proc/self/mountinfo"]);
    expect(r.code, r.stderr).to.equal(0);
    const line = r.stdout.split("\n").find((l) => l.split(" ")[4] === "/datasets");
    expect(line, r.stdout).to.match(/ master:\d+/);
    expect(line?.split(" ")[5]?.split(",")).to.include("ro");
    const touch = await pods!.exec(podA, ["touch", "/datasets/nope"]);
    expect(touch.code).to.not.equal(0);
    expect(touch.stderr).to.match(/read-only/i);
  });

  it("refuses a namespace that is not a peer of the host's shared root", async () => {
    const err = await startInMountNamespace({
      argv: ["sleep", "30"],
      propagation: "private",
      bidirectional: [root],
      logFile: join(base, "refused.log"),
    }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).to.match(/not a peer/);
  });

  describe("a mount made in `unshare -m --propagation unchanged` (Bidirectional)", () => {
    let agent: NamespacedProcess;
    let mountPoint: string;

    before(async () => {
      mountPoint = join(root, "pods", "a", "x");
      const r = await mountAndMeasure(mountPoint, "agent.log");
      agent = r.agent;
      console.log(
        `      from starting s3fs: own namespace ${ms(r.namespace)}, readable on the host ${ms(r.host)}, ` +
          `in pod a via /proc/PID/root ${ms(r.pod)}, via runc exec ${ms(r.exec)}`,
      );
    });

    it("is readable inside the pod that was already running", async () => {
      const r = await pods!.exec(podA, ["cat", "/datasets/x/hello.txt"]);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.equal(HELLO);
      expect((await pods!.exec(podA, ["cat", "/datasets/x/dir1/a.txt"])).stdout).to.equal("file a\n");
    });

    it("is writable from inside although the volume is read-only, and the write lands in S3", async () => {
      const w = await pods!.exec(podA, ["sh", "-c", "echo from-pod > /datasets/x/written.txt"]);
      expect(w.code, w.stderr).to.equal(0);
      const piped = await pods!.exec(podA, ["sh", "-c", "cat > /datasets/x/stdin.txt"], { input: "piped\n" });
      expect(piped.code, piped.stderr).to.equal(0);
      // The FUSE mount below the read-only bind kept its own flags.
      const mi = await pods!.exec(podA, ["cat", "/proc/self/mountinfo"]);
      const fuse = mi.stdout.split("\n").find((l) => l.split(" ")[4] === "/datasets/x");
      expect(fuse?.split(" ")[5]?.split(","), mi.stdout).to.include("rw");
      await waitFor("written.txt in S3", async () => (await s3!.get(BUCKET, "written.txt")) === "from-pod\n");
      await waitFor("stdin.txt in S3", async () => (await s3!.get(BUCKET, "stdin.txt")) === "piped\n");
    });

    it("is not visible in a second pod", async () => {
      expect(await exists(inPod(podB, "/datasets/x"))).to.equal(false);
      const r = await pods!.exec(podB, ["sh", "-c", "ls -A /datasets; grep -c fuse /proc/self/mountinfo"]);
      expect(r.stdout.trim()).to.equal("0");
    });

    it("disappears inside the pod when unmounted on the host, and the client exits", async () => {
      const t0 = performance.now();
      const unmounted = await unmountTree(join(root, "pods", "a"));
      expect(unmounted.map((u) => u.mountPoint)).to.deep.equal([mountPoint]);
      const gone = await waitFor("the mount to leave pod a", async () => {
        const r = await pods!.exec(podA, ["grep", "-c", "fuse", "/proc/self/mountinfo"]);
        return r.stdout.trim() === "0";
      });
      console.log(`      host unmount (${unmounted[0]?.method}) → gone in pod: ${gone.toFixed(0)} ms`);
      expect((await pods!.exec(podA, ["test", "-e", "/datasets/x/hello.txt"])).code).to.not.equal(0);
      expect(performance.now() - t0).to.be.below(10_000);
      const status = await Promise.race([
        agent.exited,
        new Promise((resolve) => setTimeout(() => resolve("still running"), 5000)),
      ]);
      expect(status, await agent.log()).to.not.equal("still running");
    });

    it("reaches the running pod again on every fresh mount of the same path", async () => {
      const samples: { pod: number; exec: number }[] = [];
      for (let i = 0; i < 5; i++) {
        const r = await mountAndMeasure(mountPoint, `agent-${i}.log`);
        samples.push(r);
        await unmountTree(mountPoint, { includeSelf: true });
        await r.agent.exited;
      }
      const stats = (xs: number[]): string => {
        const s = [...xs].sort((a, b) => a - b);
        return `min ${ms(s[0]!)} / median ${ms(s[Math.floor(s.length / 2)]!)} / max ${ms(s[s.length - 1]!)}`;
      };
      console.log(
        `      ${samples.length} remounts, s3fs start → in pod: ${stats(samples.map((x) => x.pod))}`,
      );
      console.log(
        `      ${samples.length} remounts, s3fs start → runc exec reads: ${stats(samples.map((x) => x.exec))}`,
      );
    });
  });

  describe("negative control: a mount made in plain `unshare -m` (private)", () => {
    it("stays inside its namespace: not on the host, not in the pod", async () => {
      const mountPoint = join(root, "pods", "a", "x");
      const control = await startInMountNamespace({
        argv: s3fs(mountPoint),
        propagation: "private",
        logFile: join(base, "control.log"),
      });
      processes.push(control);
      await waitFor("the mount inside the private namespace", () =>
        exists(control.pathInside(join(mountPoint, "hello.txt"))),
      );
      // Give propagation the time it took in the positive case, several times over.
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(findMount(await readMountinfo(), mountPoint), "host").to.equal(undefined);
      expect(await exists(inPod(podA, "/datasets/x/hello.txt")), "pod a").to.equal(false);
      expect((await pods!.exec(podA, ["test", "-e", "/datasets/x/hello.txt"])).code).to.not.equal(0);
      await control.stop(2000);
    });
  });
});
