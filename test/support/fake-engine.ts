/** A MountEngine that records mounts in memory; tests choose which mounts fail, hang or go stale. */
import { AppError } from "../../shared/errors.js";
import type { MountInfo } from "../../agent/mount/mountinfo.js";
import type { MountRequest } from "../../agent/mount/mounters/types.js";
import type { MountEngine } from "../../agent/reconcile/reconciler.js";
import type { MounterName } from "../../shared/names.js";

export class FakeEngine implements MountEngine {
  readonly mounted = new Map<string, { req: MountRequest; mounter: MounterName }>();
  readonly calls: string[] = [];
  /** Every mount request, in order. */
  readonly requests: MountRequest[] = [];
  readonly stale = new Set<string>();
  /** Mount points (or bucket names) whose next N mounts fail. */
  readonly failures = new Map<string, number>();
  mountDelayMs = 0;
  unmountDelayMs = 0;

  async mount(req: MountRequest, mounter: MounterName, onStarted?: () => void): Promise<void> {
    this.requests.push(req);
    this.calls.push(
      `mount ${req.mountPoint} ${req.bucket}${req.prefix ? `/${req.prefix}` : ""}${req.readOnly ? ":ro" : ""}`,
    );
    if (this.mountDelayMs > 0) await new Promise((r) => setTimeout(r, this.mountDelayMs));
    for (const k of [req.mountPoint, req.bucket]) {
      const n = this.failures.get(k) ?? 0;
      if (n > 0) {
        this.failures.set(k, n - 1);
        throw new AppError("MountFailed", `${mounter} exited: bucket ${req.bucket} does not exist`);
      }
    }
    if (this.mounted.has(req.mountPoint))
      throw new AppError("Conflict", `${req.mountPoint} is already mounted`);
    // Only a mount that succeeds has a client that ran; the failures above never start one.
    onStarted?.();
    this.mounted.set(req.mountPoint, { req, mounter });
  }

  async unmount(mountPoint: string): Promise<void> {
    this.calls.push(`unmount ${mountPoint}`);
    if (this.unmountDelayMs > 0) await new Promise((r) => setTimeout(r, this.unmountDelayMs));
    this.mounted.delete(mountPoint);
    this.stale.delete(mountPoint);
  }

  async probe(mountPoint: string): Promise<"ok" | "stale" | "absent"> {
    if (!this.mounted.has(mountPoint)) return "absent";
    return this.stale.has(mountPoint) ? "stale" : "ok";
  }

  async mountinfo(): Promise<MountInfo[]> {
    return [...this.mounted.keys()].map((mountPoint, i) => ({
      mountId: 1000 + i,
      parentId: 1,
      major: 0,
      minor: 100 + i,
      root: "/",
      mountPoint,
      mountOptions: ["rw"],
      optionalFields: [],
      fsType: "fuse.s3fs",
      source: "s3fs",
      superOptions: ["rw"],
    }));
  }
}
