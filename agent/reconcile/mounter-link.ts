/**
 * The agent's side of the mounter: the mount engine, the mounts' records and the removal of
 * empty pod directories, each a request on the mounter's socket, and the reads that need no
 * privilege (the mount table, health probes, directory listings) done here through the agent's
 * read-only view of the root.
 *
 * The connection is kept open and made again, with backoff, whenever it drops. Meanwhile every
 * change fails with `AppError("Unavailable")`, which the reconciler reports in the pods' status and
 * retries; `connected` feeds `/readyz`. After a reconnect the agent looks at every mount again:
 * a new mounter means the old one's clients may be gone with it.
 */
import { readdir, stat } from "node:fs/promises";
import { relative } from "node:path";
import { backoffDelay } from "../../shared/backoff.js";
import { AppError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { podsDir } from "../../shared/names.js";
import { MountTable, probeMount, type ProbeResult } from "../mount/mount-table.js";
import type { MountInfo } from "../mount/mountinfo.js";
import type { MounterName, MountRequest } from "../mount/mounters/types.js";
import type { KeptCache } from "../mount/records.js";
import type { WriteBackReport } from "../mount/write-back.js";
import { MounterConnection } from "../mounter/client.js";
import type { MounterOp } from "../mounter/protocol.js";
import type { MountEngine } from "./engine.js";
import type { GarbageFs } from "./garbage-collector.js";
import type { MountSpec } from "./plan.js";
import type { ReconcilerRecords } from "./reconciler.js";

export interface MounterLinkOptions {
  readonly root: string;
  readonly socketPath: string;
  readonly log: Logger;
  /** The mounter says a client died: the reconciler looks at that mount point. */
  readonly onClientExit?: (mountPoint: string) => void;
  /** A connection was made again after it had dropped. */
  readonly onReconnect?: () => void;
  /** A `stat` through a mount slower than this makes a probe report "stale". Default 2000 ms. */
  readonly probeTimeoutMs?: number;
  /** Probes accept a copy of the mount table this old. Default 1000 ms. */
  readonly tableMaxAgeMs?: number;
  /** Reconnect backoff. Default 100 ms doubling to 5 s, with full jitter. */
  readonly reconnectBaseMs?: number;
  readonly reconnectMaxMs?: number;
}

export class MounterLink implements MountEngine, ReconcilerRecords, GarbageFs {
  private conn: MounterConnection | undefined;
  private connecting: Promise<MounterConnection> | undefined;
  private readonly table = new MountTable();
  /** Mount points whose client the mounter reported dead, until they are mounted again. */
  private readonly exited = new Set<string>();
  private attempts = 0;
  private everConnected = false;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: MounterLinkOptions) {}

  /** Connects, retrying in the background when the mounter is not there yet. */
  start(): void {
    void this.connection().catch(() => undefined);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.conn?.close();
  }

  /** Whether the mounter is reachable now. */
  get connected(): boolean {
    return this.conn !== undefined && !this.conn.closed;
  }

  /** Resolves once a connection is up (for start-up ordering). */
  async ready(): Promise<void> {
    await this.connection();
  }

  private connection(): Promise<MounterConnection> {
    if (this.conn !== undefined && !this.conn.closed) return Promise.resolve(this.conn);
    this.connecting ??= MounterConnection.connect(this.o.socketPath)
      .then((c) => {
        this.conn = c;
        this.attempts = 0;
        const again = this.everConnected;
        this.everConnected = true;
        this.o.log.info({ socket: this.o.socketPath }, "connected to the mounter");
        c.on("event", (e) => {
          this.exited.add(e.mountPoint);
          this.table.changed();
          this.o.onClientExit?.(e.mountPoint);
        });
        c.on("close", () => {
          this.o.log.warn({ socket: this.o.socketPath }, "lost the connection to the mounter");
          this.scheduleReconnect();
        });
        if (again) this.o.onReconnect?.();
        return c;
      })
      .catch((e: unknown) => {
        if (this.attempts === 0) this.o.log.warn({ err: (e as Error).message }, "mounter not reachable");
        this.scheduleReconnect();
        throw e;
      })
      .finally(() => {
        this.connecting = undefined;
      });
    return this.connecting;
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.retryTimer !== undefined) return;
    const delay = backoffDelay(++this.attempts, {
      baseMs: this.o.reconnectBaseMs ?? 100,
      maxMs: this.o.reconnectMaxMs ?? 5000,
    });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.connected) void this.connection().catch(() => undefined);
    }, delay);
    this.retryTimer.unref();
  }

  private async request(op: MounterOp, onStarted?: () => void): Promise<Record<string, unknown>> {
    const c = await this.connection();
    return (await c.request(op, onStarted)) as Record<string, unknown>;
  }

  /** `[podId, …components]` of a path below `<root>/pods`. */
  private below(path: string): string[] {
    const rel = relative(podsDir(this.o.root), path);
    if (rel === "" || rel.startsWith("..") || rel.startsWith("/"))
      throw new AppError("Internal", `${path} is not below ${podsDir(this.o.root)}`);
    return rel.split("/");
  }

  // MountEngine

  async mount(req: MountRequest, mounter: MounterName, onStarted?: () => void): Promise<unknown> {
    const parts = this.below(req.mountPoint);
    if (parts.length !== 2) throw new AppError("Internal", `${req.mountPoint} is not a pod's entry`);
    const [podId, name] = parts as [string, string];
    try {
      const result = await this.request(
        {
          op: "mount",
          podId,
          name,
          mounter,
          bucket: req.bucket,
          prefix: req.prefix,
          readOnly: req.readOnly,
          endpoint: req.endpoint,
          region: req.region,
          accessKeyID: req.credentials.accessKeyID,
          secretAccessKey: req.credentials.secretAccessKey,
          options: req.options,
          ...(req.uid !== undefined ? { uid: req.uid } : {}),
          ...(req.gid !== undefined ? { gid: req.gid } : {}),
          ...(req.listBeforePlacing === true ? { listBeforePlacing: true } : {}),
        },
        onStarted,
      );
      // A mark of a dead client stays until something else is mounted there: a failed request may
      // have left the dead mount, which a `stat` could still answer from the kernel's cache.
      this.exited.delete(req.mountPoint);
      return result;
    } finally {
      this.table.changed();
    }
  }

  async unmount(mountPoint: string): Promise<{ readonly writeBack?: WriteBackReport }> {
    const [podId, ...path] = this.below(mountPoint);
    try {
      const result = (await this.request({ op: "unmount", podId: podId!, path })) as {
        writeBack?: WriteBackReport;
      };
      this.exited.delete(mountPoint);
      return result;
    } finally {
      this.table.changed();
    }
  }

  probe(mountPoint: string): Promise<ProbeResult> {
    return probeMount(this.table, mountPoint, {
      timeoutMs: this.o.probeTimeoutMs ?? 2000,
      tableMaxAgeMs: this.o.tableMaxAgeMs ?? 1000,
      clientExited: this.exited.has(mountPoint),
      log: this.o.log,
    });
  }

  mountinfo(maxAgeMs = 0, under?: string): Promise<readonly MountInfo[]> {
    return this.table.read(maxAgeMs, under);
  }

  // ReconcilerRecords

  async read(id: string, name: string): Promise<MountSpec | undefined> {
    const r = await this.request({ op: "readRecord", podId: id, name });
    return r.record as MountSpec | undefined;
  }

  async write(id: string, name: string, spec: MountSpec): Promise<void> {
    await this.request({ op: "writeRecord", podId: id, name, record: { ...spec } });
  }

  async remove(id: string, name: string): Promise<KeptCache | undefined> {
    return (await this.request({ op: "forget", podId: id, name })).kept as KeptCache | undefined;
  }

  async removePod(id: string): Promise<KeptCache[]> {
    return (await this.request({ op: "forgetPod", podId: id })).kept as KeptCache[];
  }

  async ids(): Promise<string[]> {
    return (await this.request({ op: "ids" })).ids as string[];
  }

  /** Named for messages only: the mounter derives the real one from the pod id and name. */
  stateDir(id: string, name: string): string {
    return `${this.o.root}/agent/mounts/${id}/${name}`;
  }

  // GarbageFs

  readdir(path: string): Promise<string[]> {
    return readdir(path);
  }

  stat(path: string): Promise<{ readonly mtimeMs: number }> {
    return stat(path);
  }

  async rmdir(path: string): Promise<void> {
    const [podId, ...rest] = this.below(path);
    if (rest.length > 1) throw new AppError("Internal", `${path} is too deep to remove`);
    await this.request({ op: "rmdir", podId: podId!, path: rest });
  }
}

/** The clients the mounter runs, for tests and tools: mount point → pid. */
export async function listClients(socketPath: string): Promise<Map<string, number>> {
  const c = await MounterConnection.connect(socketPath);
  try {
    const r = (await c.request({ op: "list" })) as { clients: Array<{ mountPoint: string; pid: number }> };
    return new Map(r.clients.map((x) => [x.mountPoint, x.pid]));
  } finally {
    c.close();
  }
}
