/** A websocket console client for tests: a real `ws` client that trusts only the test CA. */
import { WebSocket } from "ws";
import {
  CONSOLE_PATH,
  parseServerFrame,
  type ConsoleRequest,
  type ProgressFrame,
  type Reply,
  type ServerFrame,
  type StateEvent,
} from "../../shared/protocol.js";

/** A refused upgrade: the HTTP status and body the agent answered with. */
export class UpgradeRefused extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
  ) {
    super(`upgrade refused with ${status}: ${body}`);
  }
}

type Waiter = { pred: (f: ServerFrame) => boolean; resolve: (f: ServerFrame) => void };

// Requests without their id: the client numbers them.
type Unnumbered<R> = R extends unknown ? Omit<R, "id"> : never;

export class ConsoleClient {
  readonly frames: ServerFrame[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: Waiter[] = [];
  private nextId = 1;

  private constructor(readonly ws: WebSocket) {
    ws.on("message", (data, isBinary) => {
      if (isBinary) return;
      const f = parseServerFrame((data as Buffer).toString("utf8"));
      this.frames.push(f);
      for (const w of [...this.waiters])
        if (w.pred(f)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(f);
        }
    });
    ws.on("error", () => undefined);
    this.closed = new Promise((resolve) =>
      ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() })),
    );
  }

  /** Opens `wss://127.0.0.1:<port>/console`; rejects with {@link UpgradeRefused} on an HTTP error. */
  static connect(
    port: number,
    ca: string,
    opts: { token?: string; authorization?: string; path?: string } = {},
  ): Promise<ConsoleClient> {
    const headers: Record<string, string> = {};
    if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
    if (opts.authorization !== undefined) headers.authorization = opts.authorization;
    const ws = new WebSocket(`wss://127.0.0.1:${port}${opts.path ?? CONSOLE_PATH}`, { ca, headers });
    return new Promise((resolve, reject) => {
      ws.once("unexpected-response", (_req, res) => {
        let body = "";
        res.on("data", (c: Buffer) => (body += c.toString()));
        res.on("end", () => reject(new UpgradeRefused(res.statusCode ?? 0, body.trim())));
        res.on("error", () => reject(new UpgradeRefused(res.statusCode ?? 0, body.trim())));
      });
      ws.once("error", reject);
      ws.once("open", () => {
        ws.off("error", reject);
        resolve(new ConsoleClient(ws));
      });
    });
  }

  /** Connects with a bearer header and waits until it is open. */
  static async as(port: number, ca: string, token: string): Promise<ConsoleClient> {
    return ConsoleClient.connect(port, ca, { token });
  }

  sendRaw(data: string | Buffer, binary = false): void {
    this.ws.send(data, { binary });
  }

  /** Sends a request with the next id and resolves with its reply. */
  async request<R = unknown>(req: Unnumbered<ConsoleRequest>, timeoutMs = 10_000): Promise<Reply<R>> {
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ id, ...req }));
    return (await this.waitFor((f) => "ok" in f && f.id === id, timeoutMs)) as Reply<R>;
  }

  /** The result of a request that must succeed. */
  async ok<R = unknown>(req: Unnumbered<ConsoleRequest>, timeoutMs = 10_000): Promise<R> {
    const reply = await this.request<R>(req, timeoutMs);
    if (!reply.ok) throw new Error(`request failed: ${reply.error.code}: ${reply.error.message}`);
    return reply.result;
  }

  waitFor(pred: (f: ServerFrame) => boolean, timeoutMs = 10_000): Promise<ServerFrame> {
    const seen = this.frames.find(pred);
    if (seen !== undefined) {
      this.frames.splice(this.frames.indexOf(seen), 1);
      return Promise.resolve(seen);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(
          new Error(`no matching frame within ${timeoutMs} ms; got ${JSON.stringify(this.frames.slice(-5))}`),
        );
      }, timeoutMs);
      const waiter: Waiter = {
        pred,
        resolve: (f) => {
          clearTimeout(timer);
          this.frames.splice(this.frames.indexOf(f), 1);
          resolve(f);
        },
      };
      this.waiters.push(waiter);
    });
  }

  progressOf(id: number | string): ProgressFrame[] {
    return this.frames.filter((f): f is ProgressFrame => "progress" in f && f.id === id);
  }

  events(): StateEvent[] {
    return this.frames.filter((f): f is StateEvent => "event" in f);
  }

  /** Closes and waits for the close to finish (terminates after 1 s). */
  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    this.ws.close();
    const t = setTimeout(() => this.ws.terminate(), 1000);
    await this.closed;
    clearTimeout(t);
  }
}
