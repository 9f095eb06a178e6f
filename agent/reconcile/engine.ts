/** The mount engine as the reconcile side sees it, in a file of its own so that every part can import it. */
import type { MounterName } from "../../shared/names.js";
import type { MountInfo } from "../mount/mountinfo.js";
import type { MountRequest } from "../mount/mounters/types.js";
import type { WriteBackReport } from "../mount/write-back.js";

/**
 * What the reconciler needs from the machine: mounting, unmounting, probing, mountinfo.
 * `FuseMounter` is the real one; timeouts are its own configuration.
 */
export interface MountEngine {
  /**
   * Mounts and waits until ready; throws AppError("MountFailed") with the client's scrubbed stderr.
   * `onStarted` is called once, as soon as the client runs (not called when it never starts).
   */
  mount(req: MountRequest, mounter: MounterName, onStarted?: () => void): Promise<unknown>;
  /**
   * Unmounts (lazily when busy or stale), stops the client, and removes the mount's state
   * directory `opts.stateDir`, except a cache that may hold writes not yet in S3, which is kept
   * and reported in `writeBack`.
   */
  unmount(
    mountPoint: string,
    opts?: { readonly stateDir?: string },
  ): Promise<{ readonly writeBack?: WriteBackReport } | void>;
  probe(mountPoint: string): Promise<"ok" | "stale" | "absent">;
  /**
   * The mount table (at least the mounts at or below `under`), read at most `maxAgeMs` ago and
   * after the engine's own last change; 0: now.
   */
  mountinfo(maxAgeMs?: number, under?: string): Promise<readonly MountInfo[]>;
}
