/**
 * What the mounter does for each request, once {@link parseRequest} has checked its fields: every
 * path is derived here from the pod id and entry name (`<root>/pods/<id>/<name>`), the mount's
 * private state from the same, and the engine builds and checks the client's command itself.
 */
import { closeSync } from "node:fs";
import { AppError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { podDir, podsDir } from "../../shared/names.js";
import type { FuseMounter } from "../mount/fuse-mount.js";
import { openMountPoint, removeEmptyDir } from "../mount/host.js";
import type { MountRecords } from "../mount/records.js";
import type { MounterOp } from "./protocol.js";

export interface MounterServiceOptions {
  readonly root: string;
  readonly engine: Pick<FuseMounter, "mount" | "unmount" | "mountPoints" | "pidOf">;
  readonly records: MountRecords;
  readonly log: Logger;
  /**
   * CSI mode: whether a pod's directory is published at a kubelet target. Such a directory is not
   * removed (a container is bound to it), whatever the agent's garbage collection thinks.
   */
  readonly isPublished?: (podId: string) => Promise<boolean>;
}

export class MounterService {
  constructor(private readonly o: MounterServiceOptions) {}

  /** Carries out one request; `onStarted` is called when a mount's client runs. */
  async handle(req: MounterOp, onStarted: () => void): Promise<unknown> {
    const { root, engine, records } = this.o;
    switch (req.op) {
      case "mount": {
        // The kubelet makes the pod's directory when the pod starts; a mount asked for before
        // that makes it here, checked as every directory on the way to a mount point is.
        closeSync(openMountPoint(root, podDir(root, req.podId)));
        const r = await engine.mount(
          {
            bucket: req.bucket,
            prefix: req.prefix,
            readOnly: req.readOnly,
            mountPoint: `${podDir(root, req.podId)}/${req.name}`,
            endpoint: req.endpoint,
            region: req.region,
            credentials: { accessKeyID: req.accessKeyID, secretAccessKey: req.secretAccessKey },
            options: req.options,
            ...(req.uid !== undefined ? { uid: req.uid } : {}),
            ...(req.gid !== undefined ? { gid: req.gid } : {}),
            stateDir: records.stateDir(req.podId, req.name),
            ...(req.listBeforePlacing === true ? { listBeforePlacing: true } : {}),
          },
          req.mounter,
          onStarted,
        );
        return { pid: r.pid, readyMs: r.readyMs, fsType: r.fsType };
      }
      case "unmount": {
        const mountPoint = `${podDir(root, req.podId)}/${req.path.join("/")}`;
        // Only an entry's own mount has private state; a mount found deeper is not ours.
        const stateDir = req.path.length === 1 ? records.stateDir(req.podId, req.path[0]!) : undefined;
        return await engine.unmount(mountPoint, stateDir !== undefined ? { stateDir } : {});
      }
      case "rmdir": {
        const path = [podsDir(root), req.podId, ...req.path].join("/");
        if (req.path.length === 0 && (await this.o.isPublished?.(req.podId)) === true)
          throw new AppError("Conflict", `${path} is not removed: it is published to a container (CSI)`);
        try {
          await removeEmptyDir(root, path);
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          // Gone already is what was asked for.
          if (code === "ENOENT") return {};
          if (typeof code === "string" && code.startsWith("E"))
            throw new AppError("Conflict", `${path} is not removed: ${code}`);
          throw e;
        }
        return {};
      }
      case "readRecord": {
        const record = await records.read(req.podId, req.name);
        return record === undefined ? {} : { record };
      }
      case "writeRecord":
        await records.write(req.podId, req.name, req.record);
        return {};
      case "forget": {
        const kept = await records.remove(req.podId, req.name);
        return kept === undefined ? {} : { kept };
      }
      case "forgetPod":
        return { kept: await records.removePod(req.podId) };
      case "ids":
        return { ids: await records.ids() };
      case "list":
        return {
          clients: engine
            .mountPoints()
            .map((mountPoint) => ({ mountPoint, pid: engine.pidOf(mountPoint) }))
            .filter((c) => c.pid !== undefined),
        };
      case "ping":
        return { pid: process.pid };
    }
  }
}
