/**
 * One connection to the mounter's socket: requests matched to their replies by sequence number,
 * and the mounter's unasked events. When the connection ends, every pending request fails with
 * `AppError("Unavailable")`; reconnecting is the caller's business.
 */
import { EventEmitter } from "node:events";
import { connect, type Socket } from "node:net";
import { AppError } from "../../shared/errors.js";
import { fromWireError, LineReader, type ClientExitedEvent, type MounterOp } from "./protocol.js";

interface Pending {
  readonly resolve: (v: unknown) => void;
  readonly reject: (e: Error) => void;
  readonly onStarted: (() => void) | undefined;
}

/** Replies carry all the results of a mount, a list of kept caches at most: far below this. */
const MAX_REPLY_BYTES = 16 * 1024 * 1024;

export class MounterConnection extends EventEmitter<{ event: [ClientExitedEvent]; close: [] }> {
  private seq = 0;
  private readonly pending = new Map<number, Pending>();
  private ended: Error | undefined;

  private constructor(
    private readonly socket: Socket,
    private readonly path: string,
  ) {
    super();
    const reader = new LineReader(MAX_REPLY_BYTES);
    socket.on("data", (chunk: Buffer) => {
      try {
        for (const line of reader.push(chunk)) this.onLine(line);
      } catch (e) {
        socket.destroy(e as Error);
      }
    });
    socket.on("error", (e) => {
      this.ended ??= e;
    });
    socket.on("close", () => {
      const why = this.ended?.message ?? "the mounter closed the connection";
      this.ended ??= new Error(why);
      for (const p of this.pending.values()) p.reject(unavailable(this.path, why));
      this.pending.clear();
      this.emit("close");
    });
  }

  /** Connects to the socket at `path`; rejects with `AppError("Unavailable")`. */
  static connect(path: string, timeoutMs = 5000): Promise<MounterConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect(path);
      const timer = setTimeout(() => socket.destroy(new Error(`no answer in ${timeoutMs} ms`)), timeoutMs);
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.removeAllListeners("error");
        resolve(new MounterConnection(socket, path));
      });
      socket.once("error", (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(unavailable(path, e.code ?? e.message));
      });
    });
  }

  get closed(): boolean {
    return this.ended !== undefined;
  }

  /** Sends one request; resolves with its result, rejects with the mounter's AppError. */
  request(op: MounterOp, onStarted?: () => void): Promise<unknown> {
    if (this.ended !== undefined) return Promise.reject(unavailable(this.path, this.ended.message));
    const seq = ++this.seq;
    return new Promise((resolve, reject) => {
      this.pending.set(seq, { resolve, reject, onStarted });
      this.socket.write(`${JSON.stringify({ seq, ...op })}\n`);
    });
  }

  close(): void {
    this.socket.end();
    this.socket.destroy();
  }

  private onLine(line: Buffer): void {
    const msg = JSON.parse(line.toString("utf8")) as Record<string, unknown>;
    if (msg.event === "clientExited" && typeof msg.mountPoint === "string") {
      this.emit("event", { event: "clientExited", mountPoint: msg.mountPoint });
      return;
    }
    const p = typeof msg.seq === "number" ? this.pending.get(msg.seq) : undefined;
    if (p === undefined) return;
    if (msg.started === true) {
      p.onStarted?.();
      return;
    }
    this.pending.delete(msg.seq as number);
    if (msg.ok === true) p.resolve(msg.result);
    else p.reject(fromWireError(msg.error));
  }
}

function unavailable(path: string, why: string): AppError {
  return new AppError(
    "Unavailable",
    `the node's mounter is not reachable (${path}: ${why}); mounts wait until it is back`,
  );
}
