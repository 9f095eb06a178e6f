import { expect } from "chai";
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run } from "../../../../agent/mount/exec.js";
import {
  ensurePrivateStaging,
  makeDirAt,
  openMountPoint,
  stagingDir,
  stagingPathOf,
} from "../../../../agent/mount/host.js";
import { findMount, parseMountinfo, propagationOf } from "../../../../agent/mount/mountinfo.js";
import { AppError } from "../../../../shared/errors.js";

function refusal(f: () => unknown): AppError {
  try {
    f();
  } catch (e) {
    expect(e).to.be.instanceOf(AppError);
    return e as AppError;
  }
  throw new Error("expected a refusal");
}

function mountinfo(): ReturnType<typeof parseMountinfo> {
  return parseMountinfo(readFileSync("/proc/self/mountinfo", "utf8"));
}

describe("makeDirAt", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "dv-host-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("makes the directory with the given mode when its parent exists", () => {
    expect(makeDirAt(join(dir, "a"), 0o700)).to.equal(true);
    const st = statSync(join(dir, "a"));
    expect(st.isDirectory()).to.equal(true);
    expect(st.mode & 0o777).to.equal(0o700);
  });

  it("says true for something already there, without replacing it", () => {
    writeFileSync(join(dir, "f"), "x");
    expect(makeDirAt(join(dir, "f"), 0o755)).to.equal(true);
    expect(statSync(join(dir, "f")).isFile()).to.equal(true);
  });

  it("says false when the parent is missing, and makes nothing", () => {
    expect(makeDirAt(join(dir, "no", "b"), 0o755)).to.equal(false);
    expect(() => statSync(join(dir, "no"))).to.throw(/ENOENT/);
  });

  it("[error] throws other errors, such as a file where the parent should be", () => {
    writeFileSync(join(dir, "f"), "x");
    expect(() => makeDirAt(join(dir, "f", "b"), 0o755)).to.throw(/ENOTDIR/);
  });
});

describe("openMountPoint (as root: the walk from the root to a mount point)", () => {
  // root/pods/<id>/<name>, as the agent and the kubelet make it: root-owned, 0755.
  let root: string;
  let podDir: string;
  let mp: string;
  /** A directory outside the root that a symbolic link points at (stands in for /usr/local/sbin). */
  let elsewhere: string;

  before(function () {
    if (process.getuid?.() !== 0)
      throw new Error("these tests need root: the checks want root-owned directories");
  });

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), "dv-walk-"));
    chmodSync(root, 0o755);
    podDir = join(root, "pods", "0123456789abcdef0123456789abcdef");
    mkdirSync(podDir, { recursive: true, mode: 0o755 });
    mp = join(podDir, "data");
    elsewhere = mkdtempSync(join(tmpdir(), "dv-walk-target-"));
  });

  afterEach(() => {
    rmSync(root, { recursive: true, force: true });
    rmSync(elsewhere, { recursive: true, force: true });
  });

  const open = (path = mp): number => openMountPoint(root, path);

  it("[ok] creates the last component (0755) and returns a descriptor of that very directory", () => {
    const fd = open();
    try {
      expect(readlinkSync(`/proc/self/fd/${fd}`)).to.equal(mp);
      const st = statSync(mp);
      expect(st.isDirectory()).to.equal(true);
      expect(st.mode & 0o777).to.equal(0o755);
      expect(st.uid).to.equal(0);
    } finally {
      closeSync(fd);
    }
  });

  it("[ok] accepts a last component that exists and passes the checks", () => {
    mkdirSync(mp, { mode: 0o755 });
    writeFileSync(join(mp, "kept"), "x");
    closeSync(open());
    expect(readdirSync(mp)).to.deep.equal(["kept"]);
  });

  it("[ok] holds the directory, not its path: swapped for a link after the walk, the descriptor stays on it", () => {
    const fd = open();
    try {
      writeFileSync(join(mp, "marker"), "x");
      // What a pod that can write to its directory would do between the walk and the mount.
      const renamed = join(podDir, "renamed");
      renameSync(mp, renamed);
      symlinkSync(elsewhere, mp);
      expect(readlinkSync(`/proc/self/fd/${fd}`)).to.equal(renamed);
      expect(readdirSync(`/proc/self/fd/${fd}`)).to.deep.equal(["marker"]);
    } finally {
      closeSync(fd);
    }
  });

  it("[error] a symbolic link as the last component", () => {
    symlinkSync(elsewhere, mp);
    const e = refusal(() => open());
    expect(e.code).to.equal("Forbidden");
    expect(e.message).to.equal(`${mp} is a symbolic link; nothing is mounted`);
    expect(readdirSync(elsewhere)).to.deep.equal([]);
  });

  it("[error] a dangling symbolic link as the last component", () => {
    symlinkSync(join(elsewhere, "not-there"), mp);
    expect(refusal(() => open()).message).to.equal(`${mp} is a symbolic link; nothing is mounted`);
    expect(existsSync(join(elsewhere, "not-there"))).to.equal(false);
  });

  it("[error] a symbolic link in the middle: the pod's directory itself", () => {
    rmSync(podDir, { recursive: true });
    symlinkSync(elsewhere, podDir);
    const e = refusal(() => open());
    expect(e.code).to.equal("Forbidden");
    expect(e.message).to.equal(`${podDir} is a symbolic link; nothing is mounted`);
    expect(readdirSync(elsewhere), "nothing created where the link points").to.deep.equal([]);
  });

  it("[error] the root itself a symbolic link", () => {
    const link = `${root}-link`;
    symlinkSync(root, link);
    try {
      expect(refusal(() => openMountPoint(link, join(link, "pods", "x"))).message).to.equal(
        `${link} is a symbolic link; nothing is mounted`,
      );
    } finally {
      rmSync(link);
    }
  });

  it("[error] a component owned by another user (middle and last)", () => {
    chownSync(podDir, 1000, 1000);
    expect(refusal(() => open()).message).to.equal(
      `${podDir} is owned by uid 1000, not root; nothing is mounted`,
    );
    chownSync(podDir, 0, 0);
    mkdirSync(mp, { mode: 0o755 });
    chownSync(mp, 1000, 0);
    expect(refusal(() => open()).message).to.equal(
      `${mp} is owned by uid 1000, not root; nothing is mounted`,
    );
  });

  it("[error] a component writable by group or others (middle and last)", () => {
    chmodSync(join(root, "pods"), 0o777);
    expect(refusal(() => open()).message).to.equal(
      `${join(root, "pods")} is writable by group or others (mode 777); nothing is mounted`,
    );
    chmodSync(join(root, "pods"), 0o755);
    mkdirSync(mp, { mode: 0o755 });
    chmodSync(mp, 0o775);
    expect(refusal(() => open()).message).to.equal(
      `${mp} is writable by group or others (mode 775); nothing is mounted`,
    );
    chmodSync(mp, 0o1777);
    expect(refusal(() => open()).message).to.match(/is writable by group or others \(mode 1777\)/);
  });

  it("[error] a file instead of a directory (last and middle)", () => {
    writeFileSync(mp, "x");
    expect(refusal(() => open()).message).to.equal(`${mp} is not a directory; nothing is mounted`);
    rmSync(podDir, { recursive: true });
    writeFileSync(podDir, "x");
    expect(refusal(() => open()).message).to.equal(`${podDir} is not a directory; nothing is mounted`);
  });

  it("[error] a missing directory in the middle is not created", () => {
    rmSync(podDir, { recursive: true });
    expect(refusal(() => open()).message).to.equal(`${podDir} does not exist; nothing is mounted`);
    expect(existsSync(podDir)).to.equal(false);
  });

  it("[error] a last component that is a mount point already: Conflict, without looking into it", async () => {
    mkdirSync(mp, { mode: 0o755 });
    const r = await run("/usr/bin/mount", ["-t", "tmpfs", "-o", "mode=0755", "dv-walk", mp], {
      timeoutMs: 10_000,
    });
    expect(r.code, r.stderr).to.equal(0);
    try {
      const e = refusal(() => open());
      expect(e.code).to.equal("Conflict");
      expect(e.message).to.equal(`${mp} is already a mount point; nothing is mounted`);
    } finally {
      await run("/usr/bin/umount", [mp], { timeoutMs: 10_000 });
    }
  });

  it("[error] a path that is not below the root", () => {
    expect(refusal(() => openMountPoint(root, elsewhere)).code).to.equal("Internal");
    expect(refusal(() => openMountPoint(root, root)).code).to.equal("Internal");
  });
});

describe("stagingPathOf", () => {
  it("[ok] names a directory in the agent's private state after the mount point's path below the root", () => {
    expect(stagingDir("/var/lib/dv")).to.equal("/var/lib/dv/agent/staging");
    expect(stagingPathOf("/var/lib/dv", "/var/lib/dv/pods/0123abcd/data")).to.equal(
      "/var/lib/dv/agent/staging/pods.0123abcd.data",
    );
  });

  it("[error] a mount point that is not below the root", () => {
    expect(() => stagingPathOf("/var/lib/dv", "/usr/local/sbin")).to.throw(/is not below the root/);
    expect(() => stagingPathOf("/var/lib/dv", "/var/lib/dv")).to.throw(/is not below the root/);
  });
});

describe("ensurePrivateStaging (as root)", () => {
  let root: string;
  beforeEach(function () {
    if (process.getuid?.() !== 0) throw new Error("these tests need root: they mount");
    root = mkdtempSync(join(tmpdir(), "dv-staging-"));
  });
  afterEach(async () => {
    await run("/usr/bin/umount", ["-l", stagingDir(root)], { timeoutMs: 10_000 });
    rmSync(root, { recursive: true, force: true });
  });

  it("makes the staging directory a private mount point (0700), once, and removes empty leftovers", async () => {
    // A bind below a private mount (as / is here) is private already; below the shared root it is not.
    expect(await ensurePrivateStaging(root)).to.include("staging-bind");
    const rec = findMount(mountinfo(), stagingDir(root));
    expect(rec && propagationOf(rec)).to.equal("private");
    expect(statSync(stagingDir(root)).mode & 0o777).to.equal(0o700);
    mkdirSync(join(stagingDir(root), "pods.x.y"));
    expect(await ensurePrivateStaging(root)).to.deep.equal([]);
    expect(readdirSync(stagingDir(root))).to.deep.equal([]);
  });

  it("below a shared root, as the agent's is, makes the staging directory's own mount private", async () => {
    const sh = async (...argv: string[]): Promise<void> => {
      const r = await run("/usr/bin/mount", argv, { timeoutMs: 10_000 });
      expect(r.code, r.stderr).to.equal(0);
    };
    await sh("--bind", root, root);
    try {
      await sh("--make-rshared", root);
      expect(await ensurePrivateStaging(root)).to.deep.equal(["staging-bind", "staging-private"]);
      const rec = findMount(mountinfo(), stagingDir(root));
      expect(rec && propagationOf(rec)).to.equal("private");
    } finally {
      await run("/usr/bin/umount", ["-l", stagingDir(root)], { timeoutMs: 10_000 });
      await run("/usr/bin/umount", ["-l", root], { timeoutMs: 10_000 });
    }
  });
});
