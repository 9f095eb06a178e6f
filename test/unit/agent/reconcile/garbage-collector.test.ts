import { expect } from "chai";
import { posix } from "node:path";
import {
  GarbageCollector,
  type GarbageFs,
  type GarbageRecords,
} from "../../../../agent/reconcile/garbage-collector.js";
import type { MountInfo } from "../../../../agent/mount/mountinfo.js";
import type { KeptCache } from "../../../../agent/mount/records.js";
import { createLogger } from "../../../../shared/logger.js";

const ROOT = "/var/lib/dynamic-volumes";
const PODS = `${ROOT}/pods`;
const STATE = `${ROOT}/agent/mounts`;
const GRACE_MS = 10 * 60_000;
const ID = { live: "a".repeat(32), orphan: "b".repeat(32), fresh: "c".repeat(32), kept: "d".repeat(32) };

function errno(code: string, path: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: ${path}`), { code });
}

/** Directories and files in memory; rmdir removes only empty directories, like the real one. */
class FakeFs implements GarbageFs {
  readonly dirs = new Map<string, number>();
  readonly files = new Set<string>();
  readonly removed: string[] = [];

  mkdir(path: string, mtimeMs: number): void {
    for (let p = path; p !== "/"; p = posix.dirname(p)) if (!this.dirs.has(p)) this.dirs.set(p, mtimeMs);
  }

  file(path: string, mtimeMs: number): void {
    this.mkdir(posix.dirname(path), mtimeMs);
    this.files.add(path);
  }

  has(path: string): boolean {
    return this.dirs.has(path) || this.files.has(path);
  }

  private children(path: string): string[] {
    return [...this.dirs.keys(), ...this.files]
      .filter((p) => posix.dirname(p) === path)
      .map((p) => posix.basename(p));
  }

  async readdir(path: string): Promise<string[]> {
    if (!this.dirs.has(path)) throw errno("ENOENT", path);
    return this.children(path);
  }

  async rmdir(path: string): Promise<void> {
    if (!this.dirs.has(path)) throw errno(this.files.has(path) ? "ENOTDIR" : "ENOENT", path);
    if (this.children(path).length > 0) throw errno("ENOTEMPTY", path);
    this.dirs.delete(path);
    this.removed.push(path);
  }

  async stat(path: string): Promise<{ mtimeMs: number }> {
    const mtimeMs = this.dirs.get(path);
    if (mtimeMs === undefined) throw errno("ENOENT", path);
    return { mtimeMs };
  }
}

/** A mount table and an engine that unmounts from it. */
class FakeMounts {
  readonly table = new Set<string>();
  readonly unmounted: Array<{ mountPoint: string; stateDir?: string }> = [];

  async mountinfo(_maxAgeMs?: number, under?: string): Promise<MountInfo[]> {
    return [...this.table]
      .filter((mp) => under === undefined || mp === under || mp.startsWith(`${under}/`))
      .map((mountPoint, i) => ({
        mountId: 100 + i,
        parentId: 1,
        major: 0,
        minor: 50 + i,
        root: "/",
        mountPoint,
        mountOptions: ["rw"],
        optionalFields: [],
        fsType: "fuse.rclone",
        source: "rclone",
        superOptions: ["rw"],
      }));
  }

  async unmount(mountPoint: string, opts: { readonly stateDir?: string } = {}): Promise<void> {
    this.table.delete(mountPoint);
    this.unmounted.push({ mountPoint, ...opts });
  }
}

/**
 * Records over the fake file system: a mount's state directory holding `cache/dirty` is kept (its
 * cache may hold writes not yet in S3), any other goes with its content.
 */
class FakeRecords implements GarbageRecords {
  constructor(private readonly fs: FakeFs) {}

  stateDir(id: string, name: string): string {
    return `${STATE}/${id}/${name}`;
  }

  async ids(): Promise<string[]> {
    return this.fs.readdir(STATE).catch(() => []);
  }

  async removePod(id: string): Promise<KeptCache[]> {
    const kept: KeptCache[] = [];
    const podState = `${STATE}/${id}`;
    for (const name of await this.fs.readdir(podState).catch(() => [])) {
      const stateDir = `${podState}/${name}`;
      if (this.fs.files.has(`${stateDir}/cache/dirty`)) {
        kept.push({
          stateDir,
          cacheDir: `${stateDir}/cache`,
          verdict: { pending: true, dirty: ["bucket/file"], unsure: [], incomplete: false },
        });
        continue;
      }
      for (const p of [...this.fs.files]) if (p.startsWith(`${stateDir}/`)) this.fs.files.delete(p);
      for (const p of [...this.fs.dirs.keys()].sort((a, b) => b.length - a.length))
        if (p === stateDir || p.startsWith(`${stateDir}/`)) await this.fs.rmdir(p);
    }
    if (kept.length === 0) await this.fs.rmdir(podState).catch(() => undefined);
    return kept;
  }
}

describe("GarbageCollector (fake file system, fake mount table)", () => {
  let fs: FakeFs;
  let mounts: FakeMounts;
  let now: number;
  let lines: Array<{ msg: string; cacheDir?: string }>;
  let gc: GarbageCollector;

  beforeEach(() => {
    fs = new FakeFs();
    mounts = new FakeMounts();
    now = Date.parse("2026-12-02T12:00:00Z");
    lines = [];
    fs.mkdir(PODS, now - 86_400_000);
    fs.mkdir(STATE, now - 86_400_000);
    gc = new GarbageCollector({
      root: ROOT,
      gcGraceMs: GRACE_MS,
      engine: mounts,
      records: new FakeRecords(fs),
      log: createLogger(
        { name: "test", level: "info" },
        { write: (l: string) => void lines.push(JSON.parse(l) as { msg: string }) },
      ),
      fs,
      now: () => now,
    });
  });

  it("unmounts a mount of no live pod with its state directory, removes its directory, and leaves live pods alone", async () => {
    for (const id of [ID.live, ID.orphan]) {
      fs.mkdir(`${PODS}/${id}/data`, now);
      fs.mkdir(`${STATE}/${id}/data`, now);
      mounts.table.add(`${PODS}/${id}/data`);
    }
    await gc.collect(new Set([ID.live]));
    expect(mounts.unmounted).to.deep.equal([
      { mountPoint: `${PODS}/${ID.orphan}/data`, stateDir: `${STATE}/${ID.orphan}/data` },
    ]);
    expect(fs.has(`${PODS}/${ID.orphan}`)).to.equal(false);
    expect(fs.has(`${STATE}/${ID.orphan}`)).to.equal(false);
    expect(mounts.table.has(`${PODS}/${ID.live}/data`)).to.equal(true);
    expect(fs.has(`${PODS}/${ID.live}/data`)).to.equal(true);
    expect(fs.has(`${STATE}/${ID.live}/data`)).to.equal(true);
  });

  it("unmounts nested mounts of an orphan before their parents", async () => {
    fs.mkdir(`${PODS}/${ID.orphan}/data/inner`, now);
    mounts.table.add(`${PODS}/${ID.orphan}/data`);
    mounts.table.add(`${PODS}/${ID.orphan}/data/inner`);
    await gc.collect(new Set());
    expect(mounts.unmounted).to.deep.equal([
      { mountPoint: `${PODS}/${ID.orphan}/data/inner` },
      { mountPoint: `${PODS}/${ID.orphan}/data`, stateDir: `${STATE}/${ID.orphan}/data` },
    ]);
  });

  it("keeps a fresh empty directory of no known pod within the grace period, and removes it after", async () => {
    fs.mkdir(`${PODS}/${ID.fresh}`, now - 1000);
    await gc.collect(new Set());
    expect(fs.has(`${PODS}/${ID.fresh}`), "the kubelet may have just made it").to.equal(true);
    now += GRACE_MS;
    await gc.collect(new Set());
    expect(fs.has(`${PODS}/${ID.fresh}`)).to.equal(false);
  });

  it("removes at once a recent directory this agent has state for (its pod went while the agent was down)", async () => {
    fs.mkdir(`${PODS}/${ID.orphan}/data`, now - 1000);
    fs.mkdir(`${STATE}/${ID.orphan}/data`, now - 1000);
    await gc.collect(new Set());
    expect(fs.has(`${PODS}/${ID.orphan}`)).to.equal(false);
  });

  it("never removes content: a directory holding a file stays, however old", async () => {
    fs.file(`${PODS}/${ID.orphan}/data/left.txt`, now - 86_400_000);
    await gc.collect(new Set());
    expect(fs.has(`${PODS}/${ID.orphan}/data/left.txt`)).to.equal(true);
    expect(fs.removed).to.deep.equal([]);
  });

  it("does not delete a state directory whose write-back cache is kept, and logs it once per run", async () => {
    fs.mkdir(`${PODS}/${ID.kept}/out`, now - 86_400_000);
    fs.file(`${STATE}/${ID.kept}/out/cache/dirty`, now - 86_400_000);
    fs.file(`${STATE}/${ID.kept}/out/spec.json`, now - 86_400_000);
    fs.mkdir(`${STATE}/${ID.kept}/clean`, now - 86_400_000);
    await gc.collect(new Set());
    await gc.collect(new Set());
    expect(fs.has(`${STATE}/${ID.kept}/out/cache/dirty`)).to.equal(true);
    expect(fs.has(`${STATE}/${ID.kept}/out/spec.json`)).to.equal(true);
    expect(fs.has(`${STATE}/${ID.kept}/clean`)).to.equal(false);
    expect(fs.removed.filter((p) => p.startsWith(`${STATE}/${ID.kept}/out`))).to.deep.equal([]);
    expect(lines.filter((l) => l.cacheDir !== undefined).map((l) => l.cacheDir)).to.deep.equal([
      `${STATE}/${ID.kept}/out/cache`,
    ]);
    // The pod's own directory had only the empty mount point: it goes.
    expect(fs.has(`${PODS}/${ID.kept}`)).to.equal(false);
  });

  it("removes only empty directories that no mount wants (removeStrayDirs)", async () => {
    fs.mkdir(`${PODS}/${ID.live}/keep`, now);
    fs.mkdir(`${PODS}/${ID.live}/stray`, now);
    fs.file(`${PODS}/${ID.live}/full/x`, now);
    await gc.removeStrayDirs(`${PODS}/${ID.live}`, new Set(["keep"]));
    expect(fs.removed).to.deep.equal([`${PODS}/${ID.live}/stray`]);
  });
});
