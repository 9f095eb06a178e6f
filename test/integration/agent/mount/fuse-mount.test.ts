/**
 * Real FUSE clients (s3fs, rclone) against a real S3 server (s3rver, in this process), mounted into
 * a temporary directory. Needs root and /dev/fuse. Every test leaves no mount, process or directory
 * behind: a leaked mount breaks the next run.
 */
import { expect } from "chai";
import {
  access,
  chmod,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
  type FileHandle,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash, randomBytes } from "node:crypto";
import { GetObjectCommand } from "@aws-sdk/client-s3";
import * as exec from "../../../../agent/mount/exec.js";
import { unmount as execUnmount } from "../../../../agent/mount/exec.js";
import { FuseMounter, type MountResult, type ProcessRunner } from "../../../../agent/mount/fuse-mount.js";
import { ensurePrivateStaging, stagingDir, stagingPathOf } from "../../../../agent/mount/host.js";
import { findMount, mountsUnder, parseMountinfo } from "../../../../agent/mount/mountinfo.js";
import type { MountRequest } from "../../../../agent/mount/mounters/types.js";
import { AppError } from "../../../../shared/errors.js";
import type { MounterName } from "../../../../shared/names.js";
import { S3RVER_CREDENTIALS, startS3Server, type S3Server } from "../../../../scripts/lib/s3-server.js";

const BUCKET = "data";
const SEED = {
  "hello.txt": "hello from s3rver\n",
  "dir1/a.txt": "file a\n",
  "dir1/sub/b.txt": "file b\n",
};

async function mountinfo(): Promise<ReturnType<typeof parseMountinfo>> {
  return parseMountinfo(await readFile("/proc/self/mountinfo", "utf8"));
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

async function rejection(p: Promise<unknown>): Promise<AppError> {
  try {
    await p;
  } catch (e) {
    expect(e).to.be.instanceOf(AppError);
    return e as AppError;
  }
  throw new Error("expected a rejection");
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

describe("FuseMounter (real s3fs and rclone against s3rver)", function () {
  this.timeout(60_000);
  let s3: S3Server;
  let root: string;
  let mounter: FuseMounter;
  let seq = 0;
  const handles: FileHandle[] = [];
  const pids: number[] = [];

  before(async function () {
    if (process.getuid?.() !== 0 || !(await exists("/dev/fuse"))) {
      throw new Error("these tests need root and /dev/fuse");
    }
    s3 = await startS3Server({ buckets: { [BUCKET]: SEED } });
    root = await mkdtemp(join(tmpdir(), "dv-fuse-"));
    // The root's layout as the agent makes it at start-up.
    await chmod(root, 0o755);
    await mkdir(join(root, "pods"), { mode: 0o755 });
    await ensurePrivateStaging(root);
  });

  beforeEach(() => {
    mounter = new FuseMounter({ root, readyTimeoutMs: 15_000, settleMs: 300, stopGraceMs: 1000 });
  });

  /** Mounts below the root, but for the staging directory's own (made once, in `before`). */
  const leftBehind = async (): Promise<string[]> =>
    mountsUnder(await mountinfo(), root)
      .map((m) => m.mountPoint)
      .filter((p) => p !== stagingDir(root));

  afterEach(async () => {
    for (const h of handles.splice(0)) await h.close().catch(() => undefined);
    await mounter.unmountEverything().catch(() => undefined);
    // Whatever a failed test left: unmount deepest first, lazily if need be.
    for (const p of await leftBehind()) {
      await execUnmount(p, { lazy: true }).catch(() => undefined);
    }
    for (const pid of pids.splice(0)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    expect(await leftBehind(), "mounts left behind").to.deep.equal([]);
  });

  after(async () => {
    if (root !== undefined) {
      for (const m of mountsUnder(await mountinfo(), root)) {
        await execUnmount(m.mountPoint, { lazy: true }).catch(() => undefined);
      }
      await rm(root, { recursive: true, force: true });
    }
    await s3?.stop();
  });

  function request(over: Partial<MountRequest> = {}): MountRequest {
    const name = `m${++seq}`;
    return {
      bucket: BUCKET,
      prefix: "",
      readOnly: false,
      mountPoint: join(root, "pods", name),
      endpoint: s3.endpoint,
      region: "us-east-1",
      credentials: {
        accessKeyID: S3RVER_CREDENTIALS.accessKeyId,
        secretAccessKey: S3RVER_CREDENTIALS.secretAccessKey,
      },
      options: {},
      stateDir: join(root, "agent", name),
      ...over,
    };
  }

  async function mountOk(req: MountRequest, m: MounterName): Promise<MountResult> {
    const r = await mounter.mount(req, m);
    pids.push(r.pid);
    return r;
  }

  for (const m of ["s3fs", "rclone"] as const) {
    describe(m, () => {
      it("mounts a bucket, reads a seeded file, and unmounts cleanly", async () => {
        const req = request();
        const r = await mountOk(req, m);
        console.log(`      ${m} ready after ${r.readyMs} ms`);
        expect(r.fsType).to.equal(`fuse.${m}`);
        expect(findMount(await mountinfo(), req.mountPoint)?.fsType).to.equal(`fuse.${m}`);
        expect(await readFile(join(req.mountPoint, "hello.txt"), "utf8")).to.equal(SEED["hello.txt"]);
        expect((await readdir(req.mountPoint)).sort()).to.deep.equal(["dir1", "hello.txt"]);
        expect((await stat(req.stateDir)).mode & 0o777).to.equal(0o700);
        expect(await mounter.probe(req.mountPoint)).to.equal("ok");

        const u = await mounter.unmount(req.mountPoint);
        expect(u).to.deep.equal({ unmounted: true, lazy: false, processStopped: true });
        expect(findMount(await mountinfo(), req.mountPoint)).to.equal(undefined);
        expect(await mounter.probe(req.mountPoint)).to.equal("absent");
        expect(await exists(req.stateDir), "state dir removed").to.equal(false);
        expect(mounter.pidOf(req.mountPoint)).to.equal(undefined);
      });

      it("mounts a prefix of the bucket", async () => {
        const req = request({ prefix: "dir1" });
        await mountOk(req, m);
        expect((await readdir(req.mountPoint)).sort()).to.deep.equal(["a.txt", "sub"]);
        expect(await readFile(join(req.mountPoint, "sub", "b.txt"), "utf8")).to.equal(SEED["dir1/sub/b.txt"]);
      });

      it("refuses writes when read-only", async () => {
        const req = request({ readOnly: true });
        await mountOk(req, m);
        expect(await readFile(join(req.mountPoint, "hello.txt"), "utf8")).to.equal(SEED["hello.txt"]);
        const e = await writeFile(join(req.mountPoint, `ro-${m}.txt`), "nope").then(
          () => undefined,
          (err: NodeJS.ErrnoException) => err,
        );
        expect(e?.code).to.equal("EROFS");
        expect(await s3.get(BUCKET, `ro-${m}.txt`)).to.equal(undefined);
      });

      it("fails with MountFailed, the client's output and nothing left behind on wrong credentials", async () => {
        const secret = "not-the-right-secret-Xy7";
        const req = request({ credentials: { accessKeyID: "WRONGKEY", secretAccessKey: secret } });
        const e = await rejection(mounter.mount(req, m));
        expect(e.code).to.equal("MountFailed");
        expect(e.message).to.match(m === "s3fs" ? /invalid credentials/ : /InvalidAccessKeyId/);
        expect(e.message.split("\n")[0], "the cause and the fix first").to.match(
          /refused the credentials for bucket .*: check accessKeyID and secretAccessKey in the Secret/,
        );
        expect(e.message).to.not.include(secret);
        expect(e.message).to.not.include("WRONGKEY");
        expect(findMount(await mountinfo(), req.mountPoint), "no mount left").to.equal(undefined);
        expect(await exists(req.stateDir), "state dir removed").to.equal(false);
      });

      /** Mounts with wrong credentials, sampling the mount point's mount table meanwhile. */
      async function sampledFailure(listBeforePlacing: boolean): Promise<{ e: Error; seen: number }> {
        const req = request({
          credentials: { accessKeyID: "WRONGKEY", secretAccessKey: "not-the-right-secret" },
          listBeforePlacing,
        });
        let done = false;
        let seen = 0;
        const attempt = rejection(mounter.mount(req, m)).finally(() => (done = true));
        while (!done) {
          if (findMount(await mountinfo(), req.mountPoint) !== undefined) seen++;
          await new Promise((r) => setTimeout(r, 1));
        }
        expect(findMount(await mountinfo(), req.mountPoint), "no mount left").to.equal(undefined);
        return { e: await attempt, seen };
      }

      it("with listBeforePlacing, a mount that cannot list its bucket never shows at the mount point", async () => {
        const { e, seen } = await sampledFailure(true);
        expect(e.message).to.match(/refused the credentials/);
        expect(seen, "samples that found a mount at the mount point").to.equal(0);
      });

      if (m === "rclone")
        it("without it, rclone's mount with wrong credentials is placed before its listing fails (the case listBeforePlacing is for)", async () => {
          const { e, seen } = await sampledFailure(false);
          expect(e.message).to.match(/refused the credentials/);
          expect(seen, "samples that found a mount at the mount point").to.be.greaterThan(0);
        });

      it("reports a client killed with -9 as stale, and unmounts the stale busy mount lazily", async () => {
        const req = request();
        const r = await mountOk(req, m);
        // An open directory keeps the mount busy, like a container whose cwd is inside it.
        handles.push(await open(req.mountPoint, "r"));
        process.kill(r.pid, "SIGKILL");
        await waitFor("the client to die", () =>
          Promise.resolve(mounter.pidOf(req.mountPoint) === undefined ? true : undefined),
        );
        expect(
          findMount(await mountinfo(), req.mountPoint),
          "the dead mount stays in mountinfo",
        ).to.not.equal(undefined);
        expect(await mounter.probe(req.mountPoint)).to.equal("stale");

        const u = await mounter.unmount(req.mountPoint);
        expect(u.unmounted).to.equal(true);
        expect(u.lazy).to.equal(true);
        expect(findMount(await mountinfo(), req.mountPoint)).to.equal(undefined);
        expect(await exists(req.stateDir)).to.equal(false);
        // The mount point can be used again.
        await mountOk(request({ mountPoint: req.mountPoint }), m);
        expect(await readFile(join(req.mountPoint, "hello.txt"), "utf8")).to.equal(SEED["hello.txt"]);
      });

      it("reports a client killed with -9 as stale to a mounter that did not start it (adopted after a restart)", async () => {
        const req = request();
        const r = await mountOk(req, m);
        process.kill(r.pid, "SIGKILL");
        // A second mounter, as after an agent restart: it tracks no client, so only its stat through
        // the mount can tell that the client is gone.
        const adopter = new FuseMounter({ root, readyTimeoutMs: 15_000, settleMs: 300, stopGraceMs: 1000 });
        expect(adopter.pidOf(req.mountPoint)).to.equal(undefined);
        // Wait until the kernel answers ENOTCONN for the dead connection (its cached attributes may
        // answer for a moment after the kill); that is the state the probe must call stale.
        await waitFor("ENOTCONN at the mount point", () =>
          stat(req.mountPoint).then(
            () => undefined,
            (e: NodeJS.ErrnoException) => (e.code === "ENOTCONN" ? true : undefined),
          ),
        );
        expect(
          findMount(await mountinfo(), req.mountPoint),
          "the dead mount stays in mountinfo",
        ).to.not.equal(undefined);
        expect(await adopter.probe(req.mountPoint)).to.equal("stale");
      });

      it("refuses to mount on top of an existing mount", async () => {
        const req = request();
        await mountOk(req, m);
        const e = await rejection(mounter.mount({ ...req, stateDir: `${req.stateDir}-2` }, m));
        expect(e.code).to.equal("Conflict");
        expect(await exists(`${req.stateDir}-2`)).to.equal(false);
      });
    });
  }

  describe("s3fs writes", () => {
    it("uploads a file written through the mount", async () => {
      const req = request();
      await mountOk(req, "s3fs");
      await writeFile(join(req.mountPoint, "written-by-s3fs.txt"), "via s3fs\n");
      expect(await s3.get(BUCKET, "written-by-s3fs.txt")).to.equal("via s3fs\n");
      const passwd = join(req.stateDir, "passwd-s3fs");
      expect((await stat(passwd)).mode & 0o777).to.equal(0o600);
    });
  });

  describe("rclone writes", () => {
    it("uploads a file written through the mount after the write-back delay", async () => {
      const req = request({ options: { "vfs-write-back": "0s" } });
      await mountOk(req, "rclone");
      await writeFile(join(req.mountPoint, "written-by-rclone.txt"), "via rclone\n");
      // rclone may create the object empty first and upload the content on close.
      const body = await waitFor("the upload", async () => {
        const b = await s3.get(BUCKET, "written-by-rclone.txt");
        return b === "via rclone\n" ? b : undefined;
      });
      expect(body).to.equal("via rclone\n");
    });
  });

  describe("rclone writes not uploaded within the upload grace", () => {
    // Larger than the loopback socket buffers take in, so that a frozen server cannot have received
    // the whole upload, and a client stopped meanwhile has not uploaded it.
    const SIZE = 16 * 1024 * 1024;
    const digestOf = async (key: string): Promise<string> => {
      try {
        const r = await s3.client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
        const body = await r.Body!.transformToByteArray();
        return body.length === SIZE
          ? createHash("sha256").update(body).digest("hex")
          : `${body.length} bytes`;
      } catch (e) {
        return (e as Error).name;
      }
    };

    it("keeps the cache when S3 does not answer, and the next mount over the same state directory uploads them", async () => {
      const impatient = new FuseMounter({
        root,
        readyTimeoutMs: 15_000,
        settleMs: 300,
        stopGraceMs: 1000,
        uploadGraceMs: 1500,
      });
      const req = request();
      const r = await impatient.mount(req, "rclone");
      pids.push(r.pid);
      const data = randomBytes(SIZE);
      const digest = createHash("sha256").update(data).digest("hex");
      // Created while S3 answers (rclone may fail to create a file while it does not), closed while not.
      const fh = await open(join(req.mountPoint, "pending.bin"), "w");
      process.kill(s3.pid, "SIGSTOP");
      let u: Awaited<ReturnType<FuseMounter["unmount"]>>;
      try {
        await fh.write(data);
        await fh.close();
        u = await impatient.unmount(req.mountPoint);
      } finally {
        process.kill(s3.pid, "SIGCONT");
      }
      expect(u.writeBack).to.deep.include({ outcome: "kept", mounter: "rclone", client: "stopped" });
      expect(u.writeBack?.outcome === "kept" && u.writeBack.verdict.dirty).to.deep.equal([
        `${BUCKET}/pending.bin`,
      ]);
      expect(await exists(join(req.stateDir, "cache"))).to.equal(true);
      await new Promise((resolve) => setTimeout(resolve, 1000));
      expect(await digestOf("pending.bin"), "the stopped client did not upload it").to.not.equal(digest);

      await mountOk(req, "rclone");
      expect(
        await waitFor(
          "the kept write in S3",
          async () => ((await digestOf("pending.bin")) === digest ? digest : undefined),
          30_000,
        ),
      ).to.equal(digest);
      // Uploaded now: the next unmount removes the state directory like any other.
      const again = await mounter.unmount(req.mountPoint);
      expect(again.writeBack).to.equal(undefined);
      expect(await exists(req.stateDir)).to.equal(false);
    });
  });

  // A pod whose host directory is writable to it (a volumeMount the webhook should have denied) can
  // put a symbolic link where a bucket is to be mounted, or swap the directory for one while the
  // client starts. The links are made from this process, which is what such a pod could do.
  describe("mount points a pod could tamper with", () => {
    let elsewhere: string;
    /** Every FUSE mount point seen in this namespace while a test ran, sampled every few ms. */
    let seen: Set<string>;
    let sampling: Promise<void> | undefined;
    let stopSampling = false;

    beforeEach(async () => {
      // Stands in for /usr/local/sbin: empty, outside the root.
      elsewhere = await mkdtemp(join(tmpdir(), "dv-fuse-elsewhere-"));
      seen = new Set();
      stopSampling = false;
      const before = new Set((await mountinfo()).map((m) => m.mountId));
      sampling = (async () => {
        while (!stopSampling) {
          for (const m of await mountinfo())
            if (!before.has(m.mountId) && m.fsType.startsWith("fuse")) seen.add(m.mountPoint);
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
      })();
    });

    afterEach(async () => {
      stopSampling = true;
      await sampling;
      for (const m of mountsUnder(await mountinfo(), elsewhere))
        await execUnmount(m.mountPoint, { lazy: true }).catch(() => undefined);
      await rm(elsewhere, { recursive: true, force: true });
    });

    /** `agent/mount/exec.ts`, counting client starts and running `beforeStart` right before each. */
    function runner(beforeStart: () => Promise<void> = async () => undefined): ProcessRunner & {
      starts: number;
    } {
      const r = {
        starts: 0,
        start: async (...a: Parameters<typeof exec.start>) => {
          r.starts++;
          await beforeStart();
          return exec.start(...a);
        },
        unmount: exec.unmount,
        moveMount: (s: number, t: number) => exec.moveMount(s, t),
        detachMount: (fd: number) => exec.detachMount(fd),
      };
      return r;
    }

    const fuseSeen = async (): Promise<string[]> => {
      stopSampling = true;
      await sampling;
      return [...seen].sort();
    };

    for (const m of ["s3fs", "rclone"] as const) {
      describe(m, () => {
        it("[error] a symbolic link at the mount point: Forbidden with the reason; no client starts, nothing is mounted", async () => {
          const req = request();
          await symlink(elsewhere, req.mountPoint);
          const run = runner();
          const e = await rejection(new FuseMounter({ root, exec: run }).mount(req, m));
          expect(await fuseSeen(), "FUSE mounts made, at any time").to.deep.equal([]);
          expect(e.code).to.equal("Forbidden");
          expect(e.message).to.equal(`${req.mountPoint} is a symbolic link; nothing is mounted`);
          expect(run.starts).to.equal(0);
          expect(await readdir(elsewhere)).to.deep.equal([]);
          expect(await exists(req.stateDir)).to.equal(false);
        });

        it("[error] a pod directory that is a symbolic link: Forbidden; nothing is created or mounted where it points", async () => {
          const podLink = join(root, "pods", `linked-${++seq}`);
          await symlink(elsewhere, podLink);
          const req = request({ mountPoint: join(podLink, "data") });
          const run = runner();
          const e = await rejection(new FuseMounter({ root, exec: run }).mount(req, m));
          expect(await fuseSeen(), "FUSE mounts made, at any time").to.deep.equal([]);
          expect(e.message).to.equal(`${podLink} is a symbolic link; nothing is mounted`);
          expect(run.starts).to.equal(0);
          expect(await readdir(elsewhere)).to.deep.equal([]);
        });

        it("[error] the mount point swapped for a symbolic link while the client starts: the mount never reaches the link's target, it is detached and the mount fails", async () => {
          const req = request();
          const moved = `${req.mountPoint}-moved`;
          const run = runner(async () => {
            // After the walk, before the client (and so before the mount) runs.
            await rename(req.mountPoint, moved);
            await symlink(elsewhere, req.mountPoint);
          });
          const e = await rejection(
            new FuseMounter({ root, exec: run, readyTimeoutMs: 15_000, stopGraceMs: 1000 }).mount(req, m),
          );
          const fuse = await fuseSeen();
          expect(
            fuse.filter((p) => p !== stagingPathOf(root, req.mountPoint) && p !== moved),
            "FUSE mounts anywhere but the staging directory and the renamed directory, at any time",
          ).to.deep.equal([]);
          expect(e.code).to.equal("MountFailed");
          expect(e.message).to.include(
            `the mount point ${req.mountPoint} was renamed or replaced while the bucket was being mounted (the mount went to ${moved}); it was detached`,
          );
          expect(run.starts).to.equal(1);
          expect(await readdir(elsewhere)).to.deep.equal([]);
          expect(await leftBehind(), "mounts left behind").to.deep.equal([]);
          expect(await exists(stagingPathOf(root, req.mountPoint))).to.equal(false);
          expect(await exists(req.stateDir)).to.equal(false);
        });
      });
    }
  });

  describe("failures", () => {
    it("a client that cannot be started is MountFailed and leaves no state", async () => {
      const broken = new FuseMounter({ root, programs: { s3fs: "/nonexistent/s3fs" } });
      const req = request();
      const e = await rejection(broken.mount(req, "s3fs"));
      expect(e.code).to.equal("MountFailed");
      expect(e.message).to.match(/\/nonexistent\/s3fs was not found/);
      expect(await exists(req.stateDir)).to.equal(false);
    });

    // s3fs mounts first and checks the service in its FUSE init callback, which blocks every
    // request (and ignores SIGTERM) while it retries for ~20 s: only the readiness timeout ends it.
    it("an unreachable endpoint is MountFailed at the readiness timeout, with no mount left", async () => {
      const impatient = new FuseMounter({ root, readyTimeoutMs: 2000, stopGraceMs: 500 });
      const req = request({ endpoint: "http://127.0.0.1:1" });
      const t0 = Date.now();
      const e = await rejection(impatient.mount(req, "s3fs"));
      expect(e.code).to.equal("MountFailed");
      expect(e.message).to.match(/did not answer a directory listing within 2000 ms/);
      expect(e.message).to.match(/s3fs_init/); // from s3fs's own log file
      expect(Date.now() - t0).to.be.lessThan(8000);
      expect(findMount(await mountinfo(), req.mountPoint)).to.equal(undefined);
      expect(await exists(req.stateDir)).to.equal(false);
    });

    it("a missing bucket is MountFailed for s3fs", async () => {
      const req = request({ bucket: "no-such-bucket" });
      const e = await rejection(mounter.mount(req, "s3fs"));
      expect(e.code).to.equal("MountFailed");
      expect(e.message).to.match(/bucket or key not found/);
      expect(e.message.split("\n")[0], "the cause and the fix first").to.equal(
        `bucket "no-such-bucket" was not found at ${req.endpoint}: check the bucket's name in the annotation, or create the bucket.`,
      );
    });
  });

  describe("timing", () => {
    for (const m of ["s3fs", "rclone"] as const) {
      it(`${m}: mount-to-ready over 5 runs`, async () => {
        const times: number[] = [];
        for (let i = 0; i < 5; i++) {
          const req = request();
          const r = await mountOk(req, m);
          times.push(r.readyMs);
          await mounter.unmount(req.mountPoint);
        }
        console.log(`      ${m} ready after ${times.join(", ")} ms (median ${median(times)} ms)`);
        expect(median(times)).to.be.lessThan(5000);
      });
    }
  });
});
