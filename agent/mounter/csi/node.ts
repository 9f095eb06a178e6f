/**
 * The CSI Node service's work on the host: publishing a pod's directory `<root>/pods/<pod uid>` at
 * the kubelet's target path, and taking it away again.
 *
 * Propagation is the point. The FUSE clients' mounts are made later, under the pod's directory, in
 * the root (a shared mount); they must reach the target and, through the `rslave` bind the
 * container runtime makes of the target, the running container. And nothing done to the target
 * may reach back into the root: unpublishing must not take the pod's FUSE mounts with it. So the
 * target is made a **slave of the root's peer group**, and shared only with its own copies (the
 * kubelet directory's other views, the host's among them):
 *
 *     mount --bind <root>/pods/<uid> <staging>       # in <root>/agent/staging, a private mount
 *     mount --make-slave <staging>                   # receives the root's mounts, sends nothing back
 *     mount -o remount,bind,ro <staging>             # the pod's directory read-only; buckets keep theirs
 *     mount --move <staging> <target>                # under the kubelet's shared directory: "shared and slave"
 *
 * A plain `mount --bind <dir> <target>` would make the target a peer of the root, and the lazy
 * unmount that unpublishing needs (the target has the FUSE mounts' copies below it) would then
 * propagate to the root and unmount the pod's buckets for every view (measured on Linux 6.x).
 * Made here as above, `umount -l <target>` detaches the target and its copies below it, in this
 * namespace and in its peers (the host's kubelet directory), and leaves the root alone.
 *
 * The pod's directory itself, with its FUSE mounts, belongs to the agent: it tears them down when
 * the pod object is gone, which in a cluster comes after the kubelet unpublished the volume. When the
 * pod went first (a forced deletion), the agent's removal of the directory is refused while it is
 * published (see `isPublished`), and unpublishing removes it instead, once it is empty and published
 * nowhere else. A directory that still holds mounts is never touched here.
 */
import { closeSync } from "node:fs";
import { lstat, mkdir, readFile, rmdir } from "node:fs/promises";
import { join, relative } from "node:path";
import { AppError, isAppError } from "../../../shared/errors.js";
import type { Logger } from "../../../shared/logger.js";
import { podDir, podsDir } from "../../../shared/names.js";
import { run } from "../../mount/exec.js";
import { openMountPoint, removeEmptyDir, stagingDir } from "../../mount/host.js";
import {
  findMount,
  mountContaining,
  mountsUnder,
  parseMountinfo,
  type MountInfo,
} from "../../mount/mountinfo.js";
import type { ProgramPaths } from "../../mount/mounters/programs.js";
import {
  GRPC_CODE,
  podUidOfTarget,
  type CsiError,
  type PublishRequest,
  type UnpublishRequest,
} from "./requests.js";

/** A refusal or failure with its gRPC code, thrown by {@link CsiNode}. */
export class CsiCallError extends Error implements CsiError {
  constructor(
    readonly code: CsiError["code"],
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "CsiCallError";
  }
}

/** What the node service does to the host; the real one runs mount(8) and umount(8). */
export interface CsiHost {
  mountinfo(): Promise<MountInfo[]>;
  /** Runs util-linux mount with `argv`; throws with its stderr when it fails. */
  mount(argv: readonly string[]): Promise<void>;
  /** Runs util-linux umount with `argv`; throws with its stderr when it fails. */
  umount(argv: readonly string[]): Promise<void>;
}

export function realCsiHost(programs: Pick<ProgramPaths, "mount" | "umount">): CsiHost {
  const must = async (program: string, argv: readonly string[]): Promise<void> => {
    const r = await run(program, argv, { timeoutMs: 10_000 });
    if (r.code !== 0 || r.timedOut)
      throw new AppError(
        "Internal",
        `${program} ${argv.join(" ")}: ${r.timedOut ? "timed out" : `exit ${r.code ?? r.signal}`}: ${r.stderr.trim()}`,
      );
  };
  return {
    mountinfo: async () => parseMountinfo(await readFile("/proc/self/mountinfo", "utf8")),
    mount: (argv) => must(programs.mount, argv),
    umount: (argv) => must(programs.umount, argv),
  };
}

export interface CsiNodeOptions {
  readonly root: string;
  readonly host: CsiHost;
  readonly log: Logger;
}

export class CsiNode {
  /** target path → volume id of what was published there by this process. */
  private readonly published = new Map<string, string>();
  /** Calls on one target path run one after the other. */
  private readonly queues = new Map<string, Promise<unknown>>();

  constructor(private readonly o: CsiNodeOptions) {}

  private serialize<T>(target: string, f: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(target) ?? Promise.resolve();
    const next = prev.then(f, f);
    const settled = next.catch(() => undefined);
    this.queues.set(target, settled);
    void settled.then(() => {
      if (this.queues.get(target) === settled) this.queues.delete(target);
    });
    return next;
  }

  /**
   * `root` of the mountinfo line that a bind of `<root>/pods/<uid>` has, and the device it is on:
   * found from the mount that contains the pod's directory.
   */
  private expectedSource(
    infos: readonly MountInfo[],
    uid: string,
  ): { dev: string; root: string } | undefined {
    const dir = podDir(this.o.root, uid);
    const m = mountContaining(infos, dir);
    if (m === undefined) return undefined;
    return { dev: `${m.major}:${m.minor}`, root: join(m.root, relative(m.mountPoint, dir)) };
  }

  /** Whether `m` is a publication of the pod `uid`'s directory (as it is, or deleted since). */
  private isPodBind(infos: readonly MountInfo[], m: MountInfo, uid: string): boolean {
    const want = this.expectedSource(infos, uid);
    if (want === undefined || `${m.major}:${m.minor}` !== want.dev) return false;
    return m.root === want.root || m.root === `${want.root}//deleted`;
  }

  /** Publishes `<root>/pods/<uid>` at the target; see the module comment. Idempotent. */
  publish(req: PublishRequest): Promise<void> {
    return this.serialize(req.targetPath, () => this.doPublish(req));
  }

  private async doPublish(req: PublishRequest): Promise<void> {
    const { root, host, log } = this.o;
    const dir = podDir(root, req.podUid);
    const target = req.targetPath;
    try {
      closeSync(openMountPoint(root, dir));
    } catch (e) {
      throw new CsiCallError(
        isAppError(e) && (e.code === "Forbidden" || e.code === "Conflict")
          ? GRPC_CODE.FAILED_PRECONDITION
          : GRPC_CODE.INTERNAL,
        `the pod's directory ${dir} cannot be used: ${(e as Error).message}`,
        { cause: e },
      );
    }
    let infos = await host.mountinfo();
    const existing = findMount(infos, target);
    if (existing !== undefined) {
      const known = this.published.get(target);
      if (this.isPodBind(infos, existing, req.podUid) && (known === undefined || known === req.volumeId)) {
        this.published.set(target, req.volumeId);
        log.debug({ target, volumeId: req.volumeId }, "already published");
        return;
      }
      throw new CsiCallError(
        GRPC_CODE.ALREADY_EXISTS,
        known !== undefined && known !== req.volumeId
          ? `${target} is published for volume ${known}, not ${req.volumeId}`
          : `${target} is a mount point already, and not of ${dir}`,
      );
    }
    const st = await lstat(target).catch((e: NodeJS.ErrnoException) => {
      if (e.code === "ENOENT") return undefined;
      throw e;
    });
    if (st === undefined) await mkdir(target, { recursive: true, mode: 0o750 });
    else if (!st.isDirectory())
      throw new CsiCallError(GRPC_CODE.FAILED_PRECONDITION, `${target} exists and is not a directory`);
    const staging = `${stagingDir(root)}/csi.${req.podUid}`;
    await this.clearStaging(staging);
    await mkdir(staging, { mode: 0o700 }).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== "EEXIST") throw e;
    });
    let moved = false;
    try {
      await host.mount(["--bind", dir, staging]);
      await host.mount(["--make-slave", staging]);
      await host.mount(["-o", "remount,bind,ro", staging]);
      await host.mount(["--move", staging, target]);
      moved = true;
    } catch (e) {
      throw new CsiCallError(GRPC_CODE.INTERNAL, `publishing ${dir} at ${target}: ${(e as Error).message}`, {
        cause: e,
      });
    } finally {
      if (!moved) await this.clearStaging(staging);
      await rmdir(staging).catch(() => undefined);
    }
    infos = await host.mountinfo();
    const m = findMount(infos, target);
    const rootMount = mountContaining(infos, dir);
    if (m === undefined || rootMount?.sharedGroup === undefined || m.masterGroup !== rootMount.sharedGroup) {
      await host.umount(["-l", target]).catch(() => undefined);
      throw new CsiCallError(
        GRPC_CODE.INTERNAL,
        `${target} does not receive the mounts of ${dir} (the root ${root} must be a shared mount, which the mounter makes it at start-up): nothing is published`,
      );
    }
    // Shared: the target has peers, the host's view of the kubelet's directory among them. A
    // kubelet directory held HostToContainer (a slave) would keep the bind in this namespace, and
    // the container would get the empty directory under it.
    if (m.sharedGroup === undefined) {
      await host.umount(["-l", target]).catch(() => undefined);
      throw new CsiCallError(
        GRPC_CODE.INTERNAL,
        `${target} does not propagate to the host: the mounter must hold the kubelet's directory with mountPropagation Bidirectional; nothing is published`,
      );
    }
    this.published.set(target, req.volumeId);
    log.info({ target, pod: `${req.podNamespace}/${req.podName}`, uid: req.podUid }, "published");
  }

  /** Unmounts whatever an interrupted publish left on a staging directory. */
  private async clearStaging(staging: string): Promise<void> {
    for (let i = 0; i < 4; i++) {
      if (findMount(await this.o.host.mountinfo(), staging) === undefined) return;
      await this.o.host.umount(["-l", staging]).catch(() => undefined);
    }
  }

  /**
   * Unmounts the target (lazily: the FUSE mounts' copies are below it) and removes its directory.
   * A target that is not mounted, or not there at all, is fine: the call is idempotent.
   */
  unpublish(req: UnpublishRequest): Promise<void> {
    return this.serialize(req.targetPath, () => this.doUnpublish(req));
  }

  private async doUnpublish(req: UnpublishRequest): Promise<void> {
    const { root, host, log } = this.o;
    const target = req.targetPath;
    for (let i = 0; i < 8; i++) {
      const infos = await host.mountinfo();
      const m = findMount(infos, target);
      if (m === undefined) break;
      const rootMount = mountContaining(infos, podsDir(root));
      // A peer of the root (bound there by something else than this driver) would carry a lazy
      // unmount of its copies back into the root: cut that link first.
      if (m.sharedGroup !== undefined && m.sharedGroup === rootMount?.sharedGroup) {
        log.warn({ target }, "the target is a peer of the root; made a slave before it is unmounted");
        await host.mount(["--make-rslave", target]);
      }
      const busy = mountsUnder(infos, target).some((c) => c.mountPoint !== target);
      try {
        await host.umount(busy ? ["-l", target] : [target]);
      } catch {
        await host.umount(["-l", target]);
      }
    }
    if (findMount(await host.mountinfo(), target) !== undefined)
      throw new CsiCallError(GRPC_CODE.INTERNAL, `${target} is still mounted`);
    try {
      await rmdir(target);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== "ENOENT")
        throw new CsiCallError(GRPC_CODE.INTERNAL, `${target} is unmounted but not removed: ${code}`, {
          cause: e,
        });
    }
    const was = this.published.get(target);
    this.published.delete(target);
    const uid = podUidOfTarget(target);
    const removed = uid !== undefined && (await this.removePodDirIfUnused(uid));
    log.info(
      { target, volumeId: req.volumeId, known: was !== undefined, podDirRemoved: removed },
      "unpublished",
    );
  }

  /**
   * Removes `<root>/pods/<uid>` when it is empty and published nowhere: what is left of a pod
   * whose object went before its volume was unpublished. rmdir never removes a directory with
   * anything in it (the agent's mount points), nor a mount point.
   */
  private async removePodDirIfUnused(uid: string): Promise<boolean> {
    if (await this.isPublished(uid)) return false;
    try {
      await removeEmptyDir(this.o.root, podDir(this.o.root, uid));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Whether the directory of pod `id` is published at some target: its directory must not be
   * removed then (a container is bound to it). Read from the mount table, so it holds across
   * restarts of the mounter.
   */
  async isPublished(id: string): Promise<boolean> {
    const infos = await this.o.host.mountinfo();
    return infos.some((m) => !m.mountPoint.startsWith(`${this.o.root}/`) && this.isPodBind(infos, m, id));
  }
}
