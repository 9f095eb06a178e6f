/**
 * The websocket console (DESIGN.md "Websocket console protocol") on the agent's HTTPS server: the
 * transport, authentication and limits. What each operation does lives in `console-ops.ts`.
 *
 * - Upgrade on `/console` only. A bearer token in `Authorization` is checked before the upgrade
 *   (401 when refused); without one, the first frame must be `auth` within `authTimeoutMs`.
 * - Every request is authorized on its own; the token is re-checked (cached) so a revoked token
 *   stops working on open connections too.
 * - Limits: frame size (ws closes with 1009), a token bucket per connection (excess frames get
 *   `RateLimited`, persistent excess closes with 1008), a cap on connections (503 at upgrade),
 *   pings, and a bound on what may wait in a socket's send buffer (close 1013).
 * - A bad frame gets an error reply and the connection stays; nothing a peer sends can throw out.
 */
import type { IncomingMessage, Server } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, WebSocket } from "ws";
import type { Logger } from "../shared/logger.js";
import { CONSOLE_PATH, toErrorBody } from "../shared/protocol.js";
import type { Authenticator, Authorizer, UserInfo } from "./auth.js";
import {
  Connection,
  DEFAULT_CONSOLE_LIMITS,
  type ConnectionContext,
  type ConsoleLimits,
} from "./console-connection.js";
import { ConsoleOps, type ConsoleReconciler } from "./console-ops.js";
import type { AgentMetrics } from "./http.js";
import type { PodSource } from "./pod-source.js";

export { DEFAULT_CONSOLE_LIMITS, type ConsoleLimits } from "./console-connection.js";

export interface ConsoleServerOptions {
  /** The HTTPS server whose `upgrade` events carry the console. */
  readonly server: Server;
  readonly reconciler: ConsoleReconciler;
  readonly source: Pick<PodSource, "updateBuckets" | "getPod">;
  readonly nodeName: string;
  readonly authenticator: Authenticator;
  readonly authorizer: Authorizer;
  readonly metrics: AgentMetrics;
  readonly log: Logger;
  readonly limits?: Partial<ConsoleLimits>;
  /** Passed to {@link ConsoleOps}: status re-read interval for in-flight requests, in ms. */
  readonly pollMs?: number;
}

const STATUS_TEXT: Record<number, string> = {
  401: "Unauthorized",
  404: "Not Found",
  503: "Service Unavailable",
};

/** Answers an upgrade request with a plain HTTP error and closes the socket. */
function refuse(socket: Duplex, status: number, message: string, headers: Record<string, string> = {}): void {
  if (socket.destroyed) return;
  const body = `${message}\n`;
  const head = [
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? "Error"}`,
    "Connection: close",
    "Content-Type: text/plain; charset=utf-8",
    `Content-Length: ${Buffer.byteLength(body)}`,
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ];
  socket.once("finish", () => socket.destroy());
  socket.end(`${head.join("\r\n")}\r\n\r\n${body}`);
}

export class ConsoleServer {
  readonly limits: ConsoleLimits;
  private readonly wss: WebSocketServer;
  private readonly ctx: ConnectionContext;
  private readonly ops: ConsoleOps;
  private readonly conns = new Set<Connection>();
  private pendingUpgrades = 0;
  private nextConn = 1;
  private closing = false;
  private readonly pinger: NodeJS.Timeout;
  private readonly log: Logger;

  constructor(private readonly opts: ConsoleServerOptions) {
    this.limits = { ...DEFAULT_CONSOLE_LIMITS, ...opts.limits };
    this.log = opts.log.child({ component: "console" });
    // No compression: a small compressed frame could inflate past every limit.
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: this.limits.maxPayloadBytes,
      perMessageDeflate: false,
      clientTracking: false,
    });
    this.wss.on("error", (e) => this.log.warn({ err: e.message }, "websocket server error"));
    this.ops = new ConsoleOps({
      reconciler: opts.reconciler,
      source: opts.source,
      nodeName: opts.nodeName,
      log: this.log,
      ...(opts.pollMs !== undefined ? { pollMs: opts.pollMs } : {}),
    });
    this.ctx = {
      limits: this.limits,
      ops: this.ops,
      authenticator: opts.authenticator,
      authorizer: opts.authorizer,
      metrics: opts.metrics,
      log: this.log,
    };
    opts.server.on("upgrade", this.onUpgrade);
    this.pinger = setInterval(() => this.heartbeat(), this.limits.pingIntervalMs);
    this.pinger.unref();
  }

  /** Open connections, authenticated or not. */
  get connections(): number {
    return this.conns.size;
  }

  /** Stops accepting, closes every connection (1001), and resolves once they are gone. */
  async close(graceMs = 1000): Promise<void> {
    this.closing = true;
    this.opts.server.off("upgrade", this.onUpgrade);
    clearInterval(this.pinger);
    const gone = [...this.conns].map(
      (c) =>
        new Promise<void>((resolve) =>
          c.ws.readyState === WebSocket.CLOSED ? resolve() : c.ws.once("close", () => resolve()),
        ),
    );
    for (const c of this.conns) c.ws.close(1001, "the agent is shutting down");
    const force = setTimeout(() => {
      for (const c of this.conns) c.ws.terminate();
    }, graceMs);
    await Promise.all(gone);
    clearTimeout(force);
    this.ops.close();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }

  private readonly onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    // Upgraded sockets have no error listener of the HTTP server any more.
    socket.on("error", () => socket.destroy());
    const path = (req.url ?? "/").split("?")[0];
    if (path !== CONSOLE_PATH) {
      refuse(socket, 404, `not found; the console is at ${CONSOLE_PATH}`);
      return;
    }
    if (this.closing || this.conns.size + this.pendingUpgrades >= this.limits.maxConnections) {
      this.opts.metrics.consoleRejections.inc({ reason: "too_many_connections" });
      refuse(socket, 503, "too many console connections; try again later", { "Retry-After": "5" });
      return;
    }
    const header = req.headers.authorization;
    if (header === undefined) {
      this.accept(req, socket, head, undefined);
      return;
    }
    const m = /^Bearer +(\S+) *$/i.exec(header);
    if (m === null) {
      this.opts.metrics.consoleRejections.inc({ reason: "unauthenticated" });
      refuse(socket, 401, "the Authorization header must be: Bearer <token>", {
        "WWW-Authenticate": "Bearer",
      });
      return;
    }
    const token = m[1]!;
    this.pendingUpgrades++;
    this.opts.authenticator.authenticate(token).then(
      (user) => {
        this.pendingUpgrades--;
        if (user === undefined) {
          this.opts.metrics.consoleRejections.inc({ reason: "unauthenticated" });
          this.log.warn({ remote: req.socket.remoteAddress }, "console: bearer token refused at upgrade");
          refuse(socket, 401, "the bearer token was refused (unknown, expired or for another audience)", {
            "WWW-Authenticate": "Bearer",
          });
          return;
        }
        this.accept(req, socket, head, { user, token });
      },
      (e: unknown) => {
        this.pendingUpgrades--;
        this.log.warn({ err: (e as Error).message }, "console: cannot authenticate at upgrade");
        refuse(socket, 503, toErrorBody(e).message);
      },
    );
  };

  private accept(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    auth: { user: UserInfo; token: string } | undefined,
  ): void {
    if (socket.destroyed || this.closing) {
      socket.destroy();
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const conn = new Connection(this.ctx, ws, this.nextConn++, req.socket.remoteAddress ?? "", auth);
      this.conns.add(conn);
      this.opts.metrics.consoleConnections.set({}, this.conns.size);
      ws.once("close", () => {
        conn.end();
        this.conns.delete(conn);
        this.opts.metrics.consoleConnections.set({}, this.conns.size);
      });
    });
  }

  private heartbeat(): void {
    for (const c of this.conns) c.heartbeat();
  }
}
