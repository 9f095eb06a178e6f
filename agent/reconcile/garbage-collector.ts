/**
 * Garbage collection: pod directories, mounts and private state that no live pod claims. A pod
 * directory the kubelet may have just made is kept for a grace period; content is never removed
 * (only empty directories go), and a cache that may hold writes not yet in S3 is kept and logged.
 */
import { readdir, rmdir, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../../shared/logger.js";
import { podsDir } from "../../shared/names.js";
import type { KeptCache, MountRecords } from "../mount/records.js";
import type { MountEngine } from "./engine.js";

/** The file system operations of garbage collection: none of them removes content. */
export interface GarbageFs {
  readdir(path: string): Promise<string[]>;
  /** Removes an empty directory; rejects on anything else. */
  rmdir(path: string): Promise<void>;
  stat(path: string): Promise<{ readonly mtimeMs: number }>;
}

export const nodeGarbageFs: GarbageFs = {
  readdir: (path) => readdir(path),
  rmdir: (path) => rmdir(path),
  stat: (path) => stat(path),
};

/** The agent's private state per mount (see MountRecords). */
export type GarbageRecords = Pick<MountRecords, "stateDir" | "ids" | "removePod">;

export interface GarbageCollectorOptions {
  /** The host root: pod directories are `<root>/pods/<id>`. */
  readonly root: string;
  /** An unclaimed pod directory is removed only once it is this old (unless we mounted into it). */
  readonly gcGraceMs: number;
  readonly engine: Pick<MountEngine, "mountinfo" | "unmount">;
  readonly records: GarbageRecords;
  readonly log: Logger;
  /** Default: node:fs/promises. */
  readonly fs?: GarbageFs;
  /** Milliseconds since the epoch. Default `Date.now`. */
  readonly now?: () => number;
  /** How old a copy of the mount table may be; see MountEngine.mountinfo. Default 0. */
  readonly tableMaxAgeMs?: number;
}

export class GarbageCollector {
  private readonly fs: GarbageFs;
  private readonly now: () => number;
  /** Kept caches already logged (see noteKept). */
  private readonly keptNoticed = new Set<string>();

  constructor(private readonly opts: GarbageCollectorOptions) {
    this.fs = opts.fs ?? nodeGarbageFs;
    this.now = opts.now ?? Date.now;
  }

  /** Unmounts mounts of pod directories not in `claimed`, then removes such directories and state. */
  async collect(claimed: ReadonlySet<string>): Promise<void> {
    const { engine, records, log } = this.opts;
    const maxAge = this.opts.tableMaxAgeMs ?? 0;
    const base = podsDir(this.opts.root);
    const idOf = (mountPoint: string): string => mountPoint.slice(base.length + 1).split("/")[0]!;
    const infos = await engine.mountinfo(maxAge, base);
    const orphanMounts = infos
      .filter((m) => m.mountPoint.startsWith(`${base}/`))
      .filter((m) => !claimed.has(idOf(m.mountPoint)))
      .sort((a, b) => b.mountPoint.length - a.mountPoint.length);
    for (const m of orphanMounts) {
      log.info({ mountPoint: m.mountPoint }, "garbage: unmounting a mount of no live pod");
      const [id, name, ...deeper] = m.mountPoint.slice(base.length + 1).split("/");
      const stateDir =
        id !== undefined && name !== undefined && deeper.length === 0
          ? records.stateDir(id, name)
          : undefined;
      await engine
        .unmount(m.mountPoint, stateDir !== undefined ? { stateDir } : {})
        .catch((e: unknown) =>
          log.warn({ mountPoint: m.mountPoint, err: (e as Error).message }, "garbage unmount failed"),
        );
    }
    let dirs: string[] = [];
    try {
      dirs = await this.fs.readdir(base);
    } catch {
      /* no pods directory yet */
    }
    const stillMounted = new Set((await engine.mountinfo(maxAge, base)).map((m) => idOf(m.mountPoint)));
    const withState = new Set(await records.ids());
    for (const id of dirs) {
      if (claimed.has(id) || stillMounted.has(id)) continue;
      // The kubelet creates a pod's directory (DirectoryOrCreate) when it starts the pod, which can
      // be before this agent hears of the pod; removing it then would leave the container bound to
      // a deleted directory that no mount ever reaches. Such a directory is empty and has no state
      // of ours; one we mounted into (a pod deleted while the agent was down) goes at once.
      const fresh =
        !withState.has(id) &&
        (await this.fs.readdir(join(base, id)).then(
          (e) => e.length === 0,
          () => true,
        )) &&
        (await this.fs.stat(join(base, id)).then(
          (s) => this.now() - s.mtimeMs < this.opts.gcGraceMs,
          () => true,
        ));
      if (fresh) continue;
      await this.removeStrayDirs(join(base, id), new Set());
      await this.fs.rmdir(join(base, id)).catch(() => undefined);
    }
    for (const id of await records.ids()) if (!claimed.has(id)) this.noteKept(await records.removePod(id));
  }

  /** Removes empty directories in a pod's directory that no mount wants. Never removes content. */
  async removeStrayDirs(dir: string, keep: ReadonlySet<string>): Promise<void> {
    let names: string[];
    try {
      names = await this.fs.readdir(dir);
    } catch {
      return;
    }
    for (const n of names) if (!keep.has(n)) await this.fs.rmdir(join(dir, n)).catch(() => undefined);
  }

  /**
   * Logs, once per directory and agent run, a cache kept for a pod that is gone: its writes wait
   * for an operator (docs/troubleshooting.md), and garbage collection looks at it on every pass.
   */
  noteKept(kept: readonly KeptCache[]): void {
    for (const k of kept) {
      if (this.keptNoticed.has(k.stateDir)) continue;
      this.keptNoticed.add(k.stateDir);
      this.opts.log.warn(
        { cacheDir: k.cacheDir, dirty: k.verdict.dirty.length, unsure: k.verdict.unsure.length },
        "a deleted pod's cache is kept: it may hold writes not yet in S3; upload or remove it by hand",
      );
    }
  }
}
