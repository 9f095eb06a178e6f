import { expect } from "chai";
import {
  access,
  chmod,
  chown,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ClientProcess, ExitStatus, UnmountOutcome } from "../../../../agent/mount/exec.js";
import { defaultBaseEnv, FuseMounter, type ProcessRunner } from "../../../../agent/mount/fuse-mount.js";
import { stagingDir, stagingPathOf } from "../../../../agent/mount/host.js";
import type { MountRequest } from "../../../../agent/mount/mounters/types.js";
import { appFailure as failure } from "../../../support/processes.js";

const SECRET = "fake-secret-0123456789";
const ROOT_LINE = "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw";

/** A client process that exits when told to. */
class FakeClient implements ClientProcess {
  readonly pid = 4242;
  private status: ExitStatus | undefined;
  private resolveExit!: (s: ExitStatus) => void;
  readonly exited = new Promise<ExitStatus>((resolve) => (this.resolveExit = resolve));
  output = "";
  signals: string[] = [];
  exitStatus(): ExitStatus | undefined {
    return this.status;
  }
  stderrTail(): string {
    return this.output;
  }
  exit(s: ExitStatus): void {
    if (this.status !== undefined) return;
    this.status = s;
    this.resolveExit(s);
  }
  kill(signal: NodeJS.Signals = "SIGTERM"): boolean {
    this.signals.push(signal);
    this.exit({ code: null, signal });
    return true;
  }
  stop(): Promise<ExitStatus> {
    this.kill("SIGTERM");
    return this.exited;
  }
}

/**
 * Fake mountinfo and exec: `mounted` decides whether the client's mount is listed, on the directory
 * the client was given (the staging directory) until it is moved, on the mount point after that
 * (and for a mount made before the test).
 */
class FakeSystem implements ProcessRunner {
  mounted = false;
  /** Where the client's mount is: the directory it was started on, or where a move put it. */
  at: string | undefined;
  /** Where a move puts the mount; default the mount point. */
  moveTo: (() => string) | undefined;
  moves = 0;
  detached = 0;
  client = new FakeClient();
  starts: Array<{ cmd: string; argv: readonly string[]; env: Readonly<Record<string, string | undefined>> }> =
    [];
  unmounts: string[] = [];
  onStart: () => void = () => undefined;
  /** The unmount reports a lazy detach, as for a busy or stale mount. */
  lazyUnmount = false;
  onUnmount: () => void = () => undefined;
  constructor(private readonly mountPoint: () => string) {}
  start(cmd: string, argv: readonly string[], opts: { env: Readonly<Record<string, string | undefined>> }) {
    this.starts.push({ cmd, argv, env: opts.env });
    this.at = argv.find((a) => a.includes("/agent/staging/"));
    this.onStart();
    return Promise.resolve(this.client);
  }
  private where(): string {
    return this.at ?? this.mountPoint();
  }
  moveMount(): Promise<void> {
    this.moves++;
    if (!this.mounted) return Promise.reject(new Error("mount: not a mount point"));
    this.at = this.moveTo?.() ?? this.mountPoint();
    return Promise.resolve();
  }
  detachMount(): Promise<void> {
    this.detached++;
    this.mounted = false;
    return Promise.resolve();
  }
  unmount(path: string): Promise<UnmountOutcome> {
    this.unmounts.push(path);
    const was = this.mounted && path === this.where();
    if (was) this.mounted = false;
    if (was) this.onUnmount();
    return Promise.resolve({
      unmounted: was,
      lazy: was && this.lazyUnmount,
      method: was ? "fusermount3" : "none",
      attempts: [],
    });
  }
  /** Mount ids as `mountIdAt` reads them: the client's mount (61) where it is, the root's (27) elsewhere. */
  mountIdAt = (path: string): number => (this.mounted && path === this.where() ? 61 : 27);
  mountinfoReads = 0;
  readMountinfo = (): Promise<string> =>
    Promise.resolve(++this.mountinfoReads).then(() =>
      [ROOT_LINE, ...(this.mounted ? [`61 27 0:39 / ${this.where()} rw - fuse.s3fs s3fs rw`] : [])].join(
        "\n",
      ),
    );
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

describe("FuseMounter (with a fake client and mountinfo)", () => {
  let dir: string;
  let sys: FakeSystem;
  let req: MountRequest;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "dv-fm-"));
    req = {
      bucket: "data",
      prefix: "",
      readOnly: false,
      mountPoint: join(dir, "pods", "data"),
      endpoint: "http://127.0.0.1:9000",
      region: "",
      credentials: { accessKeyID: "KEYID", secretAccessKey: SECRET },
      options: {},
      stateDir: join(dir, "agent", "data"),
    };
    sys = new FakeSystem(() => req.mountPoint);
    // The root's layout as the agent makes it at start-up (agent/mount/host.ts).
    await mkdir(join(dir, "pods"), { mode: 0o755 });
    await mkdir(stagingDir(dir), { recursive: true, mode: 0o700 });
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  function mounter(over: Partial<ConstructorParameters<typeof FuseMounter>[0]> = {}): FuseMounter {
    return new FuseMounter({
      root: dir,
      exec: sys,
      readMountinfo: sys.readMountinfo,
      mountIdAt: sys.mountIdAt,
      readyTimeoutMs: 300,
      settleMs: 30,
      pollMs: 5,
      stopGraceMs: 10,
      uploadGraceMs: 20,
      baseEnv: { PATH: "/usr/bin" },
      ...over,
    });
  }

  describe("mount", () => {
    it("writes 0600 files in a 0700 state dir, starts the client and waits for mountinfo", async () => {
      sys.onStart = () => setTimeout(() => (sys.mounted = true), 30);
      const r = await mounter().mount(req, "s3fs");
      expect(r).to.include({ mountPoint: req.mountPoint, mounter: "s3fs", pid: 4242, fsType: "fuse.s3fs" });
      expect(r.readyMs).to.be.at.least(25);
      expect((await stat(req.stateDir)).mode & 0o777).to.equal(0o700);
      const passwd = join(req.stateDir, "passwd-s3fs");
      expect((await stat(passwd)).mode & 0o777).to.equal(0o600);
      expect(await readFile(passwd, "utf8")).to.equal(`KEYID:${SECRET}\n`);
      expect(sys.starts).to.have.length(1);
      expect(sys.starts[0]!.cmd).to.equal("/usr/bin/s3fs");
      expect(sys.starts[0]!.argv.join(" ")).to.not.include(SECRET);
    });

    it("reports the client's start before the mount is ready, and nothing when no client starts", async () => {
      sys.onStart = () => setTimeout(() => (sys.mounted = true), 60);
      const t0 = Date.now();
      let startedAfter: number | undefined;
      let clientsThen = 0;
      await mounter().mount(req, "s3fs", () => {
        startedAfter = Date.now() - t0;
        clientsThen = sys.starts.length;
      });
      expect(clientsThen).to.equal(1);
      expect(startedAfter).to.be.lessThan(50);
      // Mounted now, so a second mount there is a Conflict, and no client starts.
      let called = false;
      const e = await failure(mounter().mount(req, "s3fs", () => (called = true)));
      expect(e.code).to.equal("Conflict");
      expect(called).to.equal(false);
      expect(sys.starts).to.have.length(1);
    });

    it("mounts and tracks the client even when the start hook throws", async () => {
      sys.onStart = () => setTimeout(() => (sys.mounted = true), 5);
      const m = mounter();
      const r = await m.mount(req, "s3fs", () => {
        throw new Error("hook broke");
      });
      expect(r.pid).to.equal(4242);
      expect(m.pidOf(req.mountPoint)).to.equal(4242);
    });

    it("lists the mount only after the settle time, and reports readiness without it", async () => {
      // Until 40 ms after the start the mount point cannot be listed: a listing before the settle
      // time (100 ms) fails, and with one attempt allowed the mount would fail.
      sys.onStart = () => {
        sys.mounted = true;
        void rm(req.mountPoint, { recursive: true }).then(() =>
          setTimeout(() => void mkdir(req.mountPoint), 40),
        );
      };
      const started = Date.now();
      const r = await mounter({ settleMs: 100, readdirAttempts: 1 }).mount(req, "s3fs");
      expect(Date.now() - started).to.be.at.least(100);
      expect(r.readyMs).to.be.lessThan(100);
    });

    it("replaces a credential file left by an earlier mount: new file, new content, 0600 even if the old one was wider", async () => {
      await mkdir(req.stateDir, { recursive: true, mode: 0o700 });
      const passwd = join(req.stateDir, "passwd-s3fs");
      await writeFile(passwd, "OLDKEY:old-secret\n", { mode: 0o644 });
      await chmod(passwd, 0o644);
      // Another owner too (the tests run as root): only a newly created file is surely the agent's.
      await chown(passwd, 54321, 54321);
      sys.onStart = () => setTimeout(() => (sys.mounted = true), 5);
      await mounter().mount(req, "s3fs");
      const st = await stat(passwd);
      expect(st.mode & 0o777).to.equal(0o600);
      expect(st.uid).to.equal(process.getuid!());
      expect(await readFile(passwd, "utf8")).to.equal(`KEYID:${SECRET}\n`);
    });

    it("[error] MountFailed when the client exits right after mounting (s3fs exits 0 on failure)", async () => {
      sys.client.output = `invalid credentials for KEYID/${SECRET}`;
      // The exit comes well after the first polls (every 5 ms) have seen the mount, and well within
      // the settle time.
      sys.onStart = () => {
        sys.mounted = true;
        setTimeout(() => {
          sys.mounted = false;
          sys.client.exit({ code: 0, signal: null });
        }, 40);
      };
      const e = await failure(mounter({ settleMs: 150 }).mount(req, "s3fs"));
      expect(e.code).to.equal("MountFailed");
      expect(e.message).to.match(/exited with code 0 right after mounting/);
      expect(e.message).to.include("invalid credentials");
      expect(e.message).to.not.include(SECRET);
      expect(e.message).to.not.include("KEYID");
      expect(await exists(req.stateDir)).to.equal(false);
    });

    it("[error] MountFailed when the mount never appears, and the client is stopped", async () => {
      const e = await failure(mounter().mount(req, "rclone"));
      expect(e.code).to.equal("MountFailed");
      expect(e.message).to.match(/did not appear in mountinfo within 300 ms/);
      expect(e.message).to.match(/\(no output\)/);
      expect(sys.client.signals).to.include("SIGTERM");
      expect(await exists(req.stateDir)).to.equal(false);
    });

    it("[error] removes a half-made mount when the client dies", async () => {
      sys.onStart = () => {
        sys.mounted = true;
        sys.client.exit({ code: null, signal: "SIGSEGV" });
      };
      const e = await failure(mounter().mount(req, "rclone"));
      expect(e.message).to.match(/killed by SIGSEGV before the mount was ready/);
      expect(sys.unmounts).to.deep.equal([stagingPathOf(dir, req.mountPoint)]);
      expect(sys.mounted).to.equal(false);
      expect(await exists(stagingPathOf(dir, req.mountPoint)), "staging directory removed").to.equal(false);
    });

    it("[error] Conflict when something is already mounted there; nothing is started", async () => {
      sys.mounted = true;
      const e = await failure(mounter().mount(req, "s3fs"));
      expect(e.code).to.equal("Conflict");
      expect(sys.starts).to.deep.equal([]);
    });

    it("[error] Conflict for a second mount of a mount point while the first is being made; the first still mounts", async () => {
      sys.onStart = () => setTimeout(() => (sys.mounted = true), 40);
      const m = mounter();
      const first = m.mount(req, "s3fs");
      const e = await failure(m.mount(req, "s3fs"));
      expect(e.code).to.equal("Conflict");
      expect(e.message).to.match(/is being mounted already/);
      expect((await first).mountPoint).to.equal(req.mountPoint);
      expect(sys.starts).to.have.length(1);
    });

    it("[error] InvalidArgument for a bad option; nothing is written or started", async () => {
      const e = await failure(mounter().mount({ ...req, options: { allow_root: true } }, "s3fs"));
      expect(e.code).to.equal("InvalidArgument");
      expect(sys.starts).to.deep.equal([]);
      expect(await exists(req.stateDir)).to.equal(false);
    });
  });

  describe("unmount", () => {
    it("unmounts, stops its client and removes the state dir", async () => {
      sys.onStart = () => (sys.mounted = true);
      const m = mounter();
      await m.mount(req, "s3fs");
      expect(m.pidOf(req.mountPoint)).to.equal(4242);
      const r = await m.unmount(req.mountPoint);
      expect(r).to.deep.equal({ unmounted: true, lazy: false, processStopped: true });
      expect(sys.client.exitStatus()).to.not.equal(undefined);
      expect(await exists(req.stateDir)).to.equal(false);
      expect(m.mountPoints()).to.deep.equal([]);
    });

    it("removes the given state dir of a mount it did not start", async () => {
      sys.mounted = true;
      const stateDir = join(dir, "agent", "orphan");
      await mkdir(stateDir, { recursive: true });
      const r = await mounter().unmount(req.mountPoint, { stateDir });
      expect(r).to.deep.equal({ unmounted: true, lazy: false, processStopped: false });
      expect(await exists(stateDir)).to.equal(false);
    });
  });

  describe("unmount with writes not uploaded yet (rclone's cache)", () => {
    /** Writes rclone's data and metadata for `path` (`<bucket>/<key>`) in the cache of `stateDir`. */
    async function cached(stateDir: string, path: string, dirty: boolean): Promise<void> {
      for (const [tree, content] of [
        ["vfs", "data"],
        ["vfsMeta", JSON.stringify({ Size: 4, Fingerprint: "", Dirty: dirty })],
      ] as const) {
        const file = join(stateDir, "cache", tree, "dv{a1B2c}", path);
        await mkdir(join(file, ".."), { recursive: true });
        await writeFile(file, content);
      }
    }

    async function mounted(mounter: "rclone" | "geesefs", over = {}): Promise<FuseMounter> {
      sys.onStart = () => (sys.mounted = true);
      const m = mounterFor(over);
      await m.mount(req, mounter);
      return m;
    }
    const mounterFor = (over: Partial<ConstructorParameters<typeof FuseMounter>[0]>): FuseMounter =>
      mounter({ uploadPollMs: 10, ...over });

    it("keeps a dirty cache when the client has not finished within the upload grace, stops the client, and reports it", async () => {
      const m = await mounted("rclone", { uploadGraceMs: 100 });
      await cached(req.stateDir, "data/a.bin", true);
      await cached(req.stateDir, "data/done.bin", false);
      await writeFile(join(req.stateDir, "credentials"), "secret");
      const r = await m.unmount(req.mountPoint);
      expect(r).to.include({ unmounted: true, lazy: false, processStopped: true });
      expect(r.writeBack).to.deep.include({
        outcome: "kept",
        mounter: "rclone",
        client: "stopped",
        graceMs: 100,
        stateDir: req.stateDir,
        cacheDir: join(req.stateDir, "cache"),
      });
      expect(r.writeBack?.outcome === "kept" && r.writeBack.verdict.dirty).to.deep.equal(["data/a.bin"]);
      expect(sys.client.signals).to.include("SIGTERM");
      // The cache stays whole; everything else of the state directory, credentials first, goes.
      expect(await readdir(req.stateDir)).to.deep.equal(["cache"]);
      expect(await exists(join(req.stateDir, "cache", "vfs", "dv{a1B2c}", "data", "done.bin"))).to.equal(
        true,
      );
    });

    it("waits for a client that finishes its uploads and exits, and then removes its clean cache", async () => {
      const m = await mounted("rclone", { uploadGraceMs: 5000 });
      await cached(req.stateDir, "data/a.bin", true);
      sys.onUnmount = () =>
        setTimeout(() => {
          void cached(req.stateDir, "data/a.bin", false).then(() =>
            sys.client.exit({ code: 0, signal: null }),
          );
        }, 50);
      const t0 = Date.now();
      const r = await m.unmount(req.mountPoint);
      expect(Date.now() - t0).to.be.within(40, 2000);
      expect(r).to.deep.equal({ unmounted: true, lazy: false, processStopped: true });
      expect(await exists(req.stateDir)).to.equal(false);
    });

    it("keeps the cache of a client that died before the unmount, without waiting for it", async () => {
      const m = await mounted("rclone", { uploadGraceMs: 5000 });
      await cached(req.stateDir, "data/a.bin", true);
      sys.client.exit({ code: null, signal: "SIGKILL" });
      const t0 = Date.now();
      const r = await m.unmount(req.mountPoint);
      expect(Date.now() - t0).to.be.lessThan(1000);
      expect(r.writeBack).to.deep.include({ outcome: "kept", client: "died" });
      expect(await exists(join(req.stateDir, "cache", "vfsMeta"))).to.equal(true);
    });

    it("for a mount it did not start: waits while the client answers and its cache turns clean", async () => {
      sys.mounted = true;
      await mkdir(req.mountPoint, { recursive: true });
      await cached(req.stateDir, "data/a.bin", true);
      sys.onUnmount = () => setTimeout(() => void cached(req.stateDir, "data/a.bin", false), 100);
      const t0 = Date.now();
      const r = await mounterFor({ uploadGraceMs: 5000 }).unmount(req.mountPoint, { stateDir: req.stateDir });
      expect(Date.now() - t0).to.be.within(90, 4000);
      expect(r).to.deep.equal({ unmounted: true, lazy: false, processStopped: false });
      expect(await exists(req.stateDir)).to.equal(false);
    });

    it("for a mount it did not start whose client no longer answers: keeps the dirty cache at once", async () => {
      sys.mounted = true; // in mountinfo, but the mount point cannot be stat'ed: no client behind it
      await cached(req.stateDir, "data/a.bin", true);
      const t0 = Date.now();
      const r = await mounterFor({ uploadGraceMs: 5000 }).unmount(req.mountPoint, { stateDir: req.stateDir });
      expect(Date.now() - t0).to.be.lessThan(1000);
      expect(r.writeBack).to.deep.include({ outcome: "kept", client: "unknown", mounter: "s3fs" });
    });

    it("a lazily detached client with a clean cache gets the stop grace, not the upload grace", async () => {
      const m = await mounted("rclone", { uploadGraceMs: 5000, stopGraceMs: 50 });
      sys.lazyUnmount = true;
      const t0 = Date.now();
      const r = await m.unmount(req.mountPoint);
      expect(Date.now() - t0).to.be.within(40, 1000);
      expect(r).to.deep.equal({ unmounted: true, lazy: true, processStopped: true });
    });

    it("a lazily detached client gets more time while its cache still holds uploads", async () => {
      const m = await mounted("rclone", { uploadGraceMs: 5000, stopGraceMs: 50 });
      await cached(req.stateDir, "data/a.bin", true);
      sys.lazyUnmount = true;
      sys.onUnmount = () => setTimeout(() => void cached(req.stateDir, "data/a.bin", false), 300);
      const t0 = Date.now();
      const r = await m.unmount(req.mountPoint);
      expect(Date.now() - t0).to.be.within(290, 4000);
      expect(r.writeBack).to.equal(undefined);
      expect(await exists(req.stateDir)).to.equal(false);
    });

    it("a failed mount keeps the dirty cache an earlier client left, for the next attempt", async () => {
      await cached(req.stateDir, "data/a.bin", true);
      const e = await failure(mounter().mount(req, "rclone"));
      expect(e.code).to.equal("MountFailed");
      expect(await exists(join(req.stateDir, "cache", "vfsMeta", "dv{a1B2c}", "data", "a.bin"))).to.equal(
        true,
      );
    });

    it("geesefs stopped after the upload grace may have lost writes it held in memory: reported", async () => {
      const m = await mounted("geesefs", { uploadGraceMs: 50 });
      const r = await m.unmount(req.mountPoint);
      expect(r.writeBack).to.deep.equal({
        outcome: "maybe-lost",
        mounter: "geesefs",
        client: "stopped",
        graceMs: 50,
      });
      expect(await exists(req.stateDir)).to.equal(false);
    });
  });

  describe("probe", () => {
    it("is absent when nothing is mounted and ok when a stat succeeds", async () => {
      const m = mounter({ tableMaxAgeMs: 0 });
      expect(await m.probe(req.mountPoint)).to.equal("absent");
      sys.mounted = true;
      await mkdir(req.mountPoint, { recursive: true });
      expect(await m.probe(req.mountPoint)).to.equal("ok");
    });

    it("shares one read of the mount table between probes, and rereads it after its own mount and unmount", async () => {
      const m = mounter({ tableMaxAgeMs: 60_000 });
      await mkdir(req.mountPoint, { recursive: true });
      for (let i = 0; i < 20; i++) expect(await m.probe(req.mountPoint)).to.equal("absent");
      expect(sys.mountinfoReads).to.equal(1);
      // A change made behind the mounter's back shows only once the copy is too old...
      sys.mounted = true;
      expect(await m.probe(req.mountPoint)).to.equal("absent");
      sys.mounted = false;
      // ...but its own mount and unmount are seen at once.
      sys.onStart = () => setTimeout(() => (sys.mounted = true), 5);
      await m.mount(req, "s3fs");
      const reads = sys.mountinfoReads;
      expect(await m.probe(req.mountPoint)).to.equal("ok");
      expect(await m.probe(req.mountPoint)).to.equal("ok");
      expect(sys.mountinfoReads).to.equal(reads + 1);
      await m.unmount(req.mountPoint);
      expect(await m.probe(req.mountPoint)).to.equal("absent");
      const c = m.mountinfo(60_000);
      const d = m.mountinfo(60_000);
      expect(await c).to.equal(await d);
      expect(await m.mountinfo(0)).to.not.equal(await c);
    });

    it("is stale, and reported at once, when its client dies, even while stat still answers from cache", async () => {
      const exited: string[] = [];
      sys.onStart = () => setTimeout(() => (sys.mounted = true), 5);
      const m = mounter({ onClientExit: (mp) => exited.push(mp) });
      await m.mount(req, "s3fs");
      expect(await m.probe(req.mountPoint)).to.equal("ok");
      sys.client.exit({ code: null, signal: "SIGKILL" });
      await sys.client.exited;
      await new Promise((r) => setImmediate(r));
      expect(exited).to.deep.equal([req.mountPoint]);
      // The mount point still exists and stat succeeds, as the kernel's cached attributes allow.
      expect(await m.probe(req.mountPoint)).to.equal("stale");
    });

    it("does not report the exit of a client it is unmounting", async () => {
      const exited: string[] = [];
      sys.onStart = () => setTimeout(() => (sys.mounted = true), 5);
      const m = mounter({ onClientExit: (mp) => exited.push(mp) });
      await m.mount(req, "s3fs");
      await m.unmount(req.mountPoint);
      await new Promise((r) => setImmediate(r));
      expect(exited).to.deep.equal([]);
    });
  });

  describe("defaultBaseEnv", () => {
    it("passes only locale, CA and proxy variables: not the agent's PATH", () => {
      expect(
        defaultBaseEnv({
          PATH: "/evil:/bin",
          AWS_CA_BUNDLE: "/ca.pem",
          KUBECONFIG: "/k",
          DV_SIGNING_KEY_FILE: "/s",
        }),
      ).to.deep.equal({ AWS_CA_BUNDLE: "/ca.pem" });
    });
  });

  describe("programs and the mount point", () => {
    it("starts the client by its configured absolute path, on the staging directory, with the clients' PATH", async () => {
      sys.onStart = () => setTimeout(() => (sys.mounted = true), 5);
      const m = mounter({
        programs: { rclone: "/opt/rclone/bin/rclone" },
        baseEnv: { PATH: "/evil:/usr/bin", LANG: "C.UTF-8" },
        clientPath: "/usr/bin:/bin",
      });
      await m.mount(req, "rclone");
      const start = sys.starts[0]!;
      expect(start.cmd).to.equal("/opt/rclone/bin/rclone");
      expect(start.argv).to.include(stagingPathOf(dir, req.mountPoint));
      expect(start.argv).to.not.include(req.mountPoint);
      expect(start.env).to.include({ PATH: "/usr/bin:/bin", LANG: "C.UTF-8" });
      expect(sys.moves).to.equal(1);
      expect(await exists(stagingPathOf(dir, req.mountPoint)), "staging directory removed").to.equal(false);
    });

    it("[error] Forbidden for a symbolic link at the mount point; nothing is written or started", async () => {
      const elsewhere = await mkdtemp(join(tmpdir(), "dv-fm-target-"));
      try {
        await symlink(elsewhere, req.mountPoint);
        const e = await failure(mounter().mount(req, "s3fs"));
        expect(e.code).to.equal("Forbidden");
        expect(e.message).to.equal(`${req.mountPoint} is a symbolic link; nothing is mounted`);
        expect(sys.starts).to.deep.equal([]);
        expect(await exists(req.stateDir)).to.equal(false);
        expect(await readdir(elsewhere)).to.deep.equal([]);
      } finally {
        await rm(elsewhere, { recursive: true, force: true });
      }
    });

    it("[error] a mount that lands elsewhere (the mount point renamed meanwhile) is detached and fails", async () => {
      sys.onStart = () => setTimeout(() => (sys.mounted = true), 5);
      sys.moveTo = () => join(dir, "pods", "renamed");
      const e = await failure(mounter().mount(req, "s3fs"));
      expect(e.code).to.equal("MountFailed");
      expect(e.message).to.include(
        `the mount point ${req.mountPoint} was renamed or replaced while the bucket was being mounted (the mount went to ${join(dir, "pods", "renamed")}); it was detached`,
      );
      expect(sys.detached).to.equal(1);
      expect(sys.mounted).to.equal(false);
      expect(sys.client.signals).to.include("SIGTERM");
      expect(await exists(req.stateDir)).to.equal(false);
    });

    it("[error] a mount point outside the root is an internal error; nothing is started", async () => {
      const e = await failure(mounter().mount({ ...req, mountPoint: "/elsewhere/data" }, "s3fs"));
      expect(e.code).to.equal("Internal");
      expect(sys.starts).to.deep.equal([]);
    });
  });
});
