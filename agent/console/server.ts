/**
 * The websocket console (docs/design.md "Websocket console protocol") on the agent's HTTPS server: the
 * transport, authentication and limits. What each operation does lives in `console-ops.ts`.
 *
 * - Upgrade on `/console` only. A bearer token in `Authorization` is checked before the upgrade
 *   (401 when refused); without one, the first frame must be `auth`.
 * - Every request is authorized on its own; the token is re-checked (cached) so a revoked token
 *   stops working on open connections too.
 * - Connections that have not authenticated yet (console-admission.ts) have pools of their own, so
 *   that they can never take the slots of authenticated users: upgrades whose `Authorization` header
 *   is being checked, and websockets waiting for their `auth` frame, each at most
 *   `maxUnauthenticated` in total (503 at upgrade) and `maxUnauthenticatedPerAddress` per remote
 *   address (429). Each has `authTimeoutMs` from its TCP accept to a valid token (TLS handshake and
 *   upgrade included; a websocket is then closed with 1008). Before its first HTTP request, a socket
 *   counts against `maxHandshakesPerAddress` (reset beyond it) and the same deadline.
 * - Limits on authenticated connections: frame size (ws closes with 1009), a token bucket per
 *   connection (excess frames get `RateLimited`, persistent excess closes with 1008), a cap on
 *   connections (503 at upgrade, 1013 after an `auth` frame), pings, and a bound on what may wait in
 *   a socket's send buffer (close 1013).
 * - A bad frame gets an error reply and the connection stays; nothing a peer sends can throw out.
 */
import type { IncomingMessage, Server } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, WebSocket } from "ws";
import type { Logger } from "../../shared/logger.js";
import { CONSOLE_PATH, toErrorBody } from "../../shared/protocol.js";
import type { Authenticator, Authorizer, UserInfo } from "./auth.js";
import {
  Connection,
  DEFAULT_CONSOLE_LIMITS,
  type ConnectionContext,
  type ConsoleLimits,
} from "./connection.js";
import { AddressCounter, HandshakeGuard, PendingAuth } from "./admission.js";
import { ConsoleOps, type ConsoleReconciler } from "./ops.js";
import type { AgentMetrics } from "./http.js";
import type { PodSource } from "../sources/pod-source.js";

export { DEFAULT_CONSOLE_LIMITS, type ConsoleLimits } from "./connection.js";

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
  429: "Too Many Requests",
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
  /** Every websocket, authenticated or not. */
  private readonly conns = new Set<Connection>();
  /** The websockets that have authenticated: what `maxConnections` caps. */
  private readonly authenticated = new Set<Connection>();
  /** Upgrades whose `Authorization` header is being checked, by remote address. */
  private readonly checkingHeader: AddressCounter;
  /** Websockets waiting for (or checking) their `auth` frame, by remote address. */
  private readonly awaitingFrame: AddressCounter;
  private readonly pendingAuth = new Map<Connection, PendingAuth>();
  private readonly handshakes: HandshakeGuard;
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
      onAuthenticated: (conn) => this.onAuthenticated(conn),
    };
    // Two pools of the same size: a peer that holds websockets open without a token cannot keep
    // a client that sends its token at the upgrade (dvctl) from authenticating, and the other way
    // round. A header is checked within one TokenReview, so its slot is never held for long.
    this.checkingHeader = new AddressCounter(
      this.limits.maxUnauthenticated,
      this.limits.maxUnauthenticatedPerAddress,
    );
    this.awaitingFrame = new AddressCounter(
      this.limits.maxUnauthenticated,
      this.limits.maxUnauthenticatedPerAddress,
    );
    this.handshakes = new HandshakeGuard({
      server: opts.server,
      maxPerAddress: this.limits.maxHandshakesPerAddress,
      timeoutMs: this.limits.authTimeoutMs,
      onRefused: (reason) => opts.metrics.consoleRejections.inc({ reason }),
      onChange: (n) => opts.metrics.consoleUnauthenticated.set({ stage: "handshake" }, n),
    });
    opts.metrics.consoleUnauthenticated.set({ stage: "handshake" }, 0);
    this.countUnauthenticated();
    opts.server.on("upgrade", this.onUpgrade);
    this.pinger = setInterval(() => this.heartbeat(), this.limits.pingIntervalMs);
    this.pinger.unref();
  }

  /** Open websocket connections, authenticated or not. */
  get connections(): number {
    return this.conns.size;
  }

  /** Upgrades and websockets that have not authenticated yet. */
  get unauthenticatedConnections(): number {
    return this.checkingHeader.size + this.awaitingFrame.size;
  }

  /** TCP connections that have not sent their first HTTP request yet. */
  get handshaking(): number {
    return this.handshakes.size;
  }

  /** Stops accepting, closes every connection (1001), and resolves once they are gone. */
  async close(graceMs = 1000): Promise<void> {
    this.closing = true;
    this.opts.server.off("upgrade", this.onUpgrade);
    this.handshakes.close();
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
    // The deadline runs from the TCP accept: the handshake's time counts against it.
    const since = this.handshakes.claim(req) ?? performance.now();
    // Upgraded sockets have no error listener of the HTTP server any more.
    socket.on("error", () => socket.destroy());
    const path = (req.url ?? "/").split("?")[0];
    if (path !== CONSOLE_PATH) {
      refuse(socket, 404, `not found; the console is at ${CONSOLE_PATH}`);
      return;
    }
    if (this.closing || this.authenticated.size >= this.limits.maxConnections) {
      this.refuseFull(socket);
      return;
    }
    const address = req.socket.remoteAddress ?? "";
    const header = req.headers.authorization;
    const pool = header === undefined ? this.awaitingFrame : this.checkingHeader;
    const exceeded = pool.take(address);
    if (exceeded !== undefined) {
      this.opts.metrics.consoleRejections.inc({
        reason: exceeded === "total" ? "too_many_unauthenticated" : "too_many_unauthenticated_per_address",
      });
      // Retry-After 1: a slot is held for one TokenReview, or until the deadline at most.
      if (exceeded === "total")
        refuse(socket, 503, "too many console connections are authenticating; try again later", {
          "Retry-After": "1",
        });
      else
        refuse(
          socket,
          429,
          `too many console connections from ${address} are authenticating at once; authenticate them or try again later`,
          { "Retry-After": "1" },
        );
      return;
    }
    const pending = new PendingAuth(
      pool,
      address,
      since + this.limits.authTimeoutMs - performance.now(),
      () => this.countUnauthenticated(),
    );
    this.countUnauthenticated();
    socket.once("close", () => pending.release());
    pending.onExpire = () => {
      this.opts.metrics.consoleRejections.inc({ reason: "auth_timeout" });
      refuse(socket, 503, `the token could not be checked within ${this.limits.authTimeoutMs} ms; try again`);
    };
    if (header === undefined) {
      this.accept(req, socket, head, undefined, pending);
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
    this.opts.authenticator.authenticate(token).then(
      (user) => {
        if (pending.expired || socket.destroyed) return;
        pending.release();
        if (user === undefined) {
          this.opts.metrics.consoleRejections.inc({ reason: "unauthenticated" });
          this.log.warn({ remote: address }, "console: bearer token refused at upgrade");
          refuse(socket, 401, "the bearer token was refused (unknown, expired or for another audience)", {
            "WWW-Authenticate": "Bearer",
          });
          return;
        }
        this.accept(req, socket, head, { user, token }, undefined);
      },
      (e: unknown) => {
        if (pending.expired || socket.destroyed) return;
        pending.release();
        this.log.warn({ err: (e as Error).message }, "console: cannot authenticate at upgrade");
        refuse(socket, 503, toErrorBody(e).message);
      },
    );
  };

  /** Upgrades the socket: authenticated already (`auth`), or still `pending` its `auth` frame. */
  private accept(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    auth: { user: UserInfo; token: string } | undefined,
    pending: PendingAuth | undefined,
  ): void {
    if (socket.destroyed || this.closing) {
      socket.destroy();
      return;
    }
    // The cap may have filled while the token was being checked.
    if (auth !== undefined && this.authenticated.size >= this.limits.maxConnections) {
      this.refuseFull(socket);
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const conn = new Connection(this.ctx, ws, this.nextConn++, req.socket.remoteAddress ?? "", auth);
      this.conns.add(conn);
      if (auth !== undefined) this.authenticated.add(conn);
      else if (pending !== undefined) {
        this.pendingAuth.set(conn, pending);
        pending.onExpire = () => conn.expire();
      }
      this.opts.metrics.consoleConnections.set({}, this.conns.size);
      ws.once("close", () => {
        conn.end();
        this.conns.delete(conn);
        this.authenticated.delete(conn);
        this.pendingAuth.get(conn)?.release();
        this.pendingAuth.delete(conn);
        this.opts.metrics.consoleConnections.set({}, this.conns.size);
      });
    });
  }

  /** A connection sent a valid `auth` frame: it moves to the authenticated pool, if there is room. */
  private onAuthenticated(conn: Connection): boolean {
    if (this.closing || this.authenticated.size >= this.limits.maxConnections) {
      this.opts.metrics.consoleRejections.inc({ reason: "too_many_connections" });
      return false;
    }
    this.pendingAuth.get(conn)?.release();
    this.pendingAuth.delete(conn);
    this.authenticated.add(conn);
    return true;
  }

  private refuseFull(socket: Duplex): void {
    this.opts.metrics.consoleRejections.inc({ reason: "too_many_connections" });
    refuse(socket, 503, "too many console connections; try again later", { "Retry-After": "5" });
  }

  private countUnauthenticated(): void {
    const m = this.opts.metrics.consoleUnauthenticated;
    m.set({ stage: "token_review" }, this.checkingHeader.size);
    m.set({ stage: "auth_frame" }, this.awaitingFrame.size);
  }

  private heartbeat(): void {
    for (const c of this.conns) c.heartbeat();
  }
}
