/**
 * One console connection: its rate limit, authentication state and replies, and the `Session` that
 * the operations in `console-ops.ts` use. `console.ts` accepts connections and hands them here.
 */
import { WebSocket, type RawData } from "ws";
import type { Logger } from "../../shared/logger.js";
import {
  ConsoleError,
  RequestError,
  encodeError,
  encodeEvent,
  encodeProgress,
  encodeResult,
  parseRequest,
  toErrorBody,
  type ConsoleRequest,
  type RequestId,
} from "../../shared/protocol.js";
import type { Authenticator, Authorizer, PodVerb, UserInfo } from "./auth.js";
import type { ConsoleOps, Session } from "./ops.js";
import type { AgentMetrics } from "./http.js";

export interface ConsoleLimits {
  /** Largest frame in bytes; a larger one closes the connection with 1009. */
  readonly maxPayloadBytes: number;
  /**
   * Authenticated connections at once. Connections that have not authenticated yet do not count
   * here: they have their own pool, below.
   */
  readonly maxConnections: number;
  /**
   * Connections that have not authenticated yet, in total (503 at upgrade beyond it), in each of two
   * pools: upgrades whose `Authorization` header is being checked, and websockets waiting for their
   * `auth` frame.
   */
  readonly maxUnauthenticated: number;
  /** The same, per remote address (429 at upgrade beyond it). */
  readonly maxUnauthenticatedPerAddress: number;
  /**
   * TCP connections of one remote address that have not sent their first HTTP request yet (TLS
   * handshake, request headers); more are reset at accept.
   */
  readonly maxHandshakesPerAddress: number;
  /** Sustained frames per second per connection. */
  readonly requestsPerSecond: number;
  /** Frames a connection may send at once before the rate applies. */
  readonly burst: number;
  /**
   * Rate-limited frames within {@link ABUSE_WINDOW_MS} after which the connection is closed (1008).
   * A window, not a run: a flood still gets a frame through now and then as the bucket refills.
   */
  readonly maxRateLimited: number;
  /** Requests of one connection in progress at once (mounts wait for the reconciler). */
  readonly maxInFlight: number;
  readonly maxWatches: number;
  readonly pingIntervalMs: number;
  /**
   * From the TCP accept to a valid token (TLS handshake, upgrade and TokenReview included): a socket
   * still without one is closed (1008 once it is a websocket).
   */
  readonly authTimeoutMs: number;
  /**
   * Bytes that may wait in a connection's send buffer for longer than `slowReaderGraceMs` before the
   * connection is dropped (1013); twice as many drop it at once.
   */
  readonly maxBufferedBytes: number;
  readonly slowReaderGraceMs: number;
}

export const DEFAULT_CONSOLE_LIMITS: ConsoleLimits = Object.freeze({
  maxPayloadBytes: 1024 * 1024,
  maxConnections: 1024,
  maxUnauthenticated: 64,
  maxUnauthenticatedPerAddress: 8,
  maxHandshakesPerAddress: 32,
  requestsPerSecond: 20,
  burst: 40,
  maxRateLimited: 100,
  maxInFlight: 32,
  maxWatches: 16,
  pingIntervalMs: 20_000,
  authTimeoutMs: 10_000,
  maxBufferedBytes: 4 * 1024 * 1024,
  slowReaderGraceMs: 2_000,
});

export const ABUSE_WINDOW_MS = 10_000;

/** What a connection shares with the server that accepted it. */
export interface ConnectionContext {
  readonly limits: ConsoleLimits;
  readonly ops: ConsoleOps;
  readonly authenticator: Authenticator;
  readonly authorizer: Authorizer;
  readonly metrics: AgentMetrics;
  readonly log: Logger;
  /**
   * A connection has just presented a valid `auth` frame: false when there is no room left for
   * another authenticated connection.
   */
  readonly onAuthenticated: (conn: Connection) => boolean;
}

function frameText(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString("utf8");
  if (Array.isArray(data)) return Buffer.concat(data).toString("utf8");
  return Buffer.from(data).toString("utf8");
}

/** The id of a small frame that was not served, so that even a refusal can be matched; else null. */
function peekId(text: string): RequestId | null {
  if (text.length > 4096) return null;
  try {
    return (parseRequest(text) as { id: RequestId }).id;
  } catch (e) {
    return e instanceof RequestError ? e.id : null;
  }
}

/** One console connection: rate limit, authentication state, replies, and the {@link Session} for ops. */
export class Connection implements Session {
  private user: UserInfo | undefined;
  private token: string | undefined;
  private authenticating = false;
  private tokens: number;
  private refilled = performance.now();
  private limited = 0;
  private limitedSince = 0;
  private inFlight = 0;
  private watches = 0;
  private alive = true;
  private ended = false;
  private readonly endFns = new Set<() => void>();
  private drainCheck: NodeJS.Timeout | undefined;
  private readonly log: Logger;
  private readonly limits: ConsoleLimits;

  constructor(
    private readonly ctx: ConnectionContext,
    readonly ws: WebSocket,
    id: number,
    remote: string,
    auth: { user: UserInfo; token: string } | undefined,
  ) {
    this.limits = ctx.limits;
    this.tokens = this.limits.burst;
    this.user = auth?.user;
    this.token = auth?.token;
    this.log = ctx.log.child({ conn: id, remote });
    // ws reports protocol errors (oversized frame: 1009, bad UTF-8: 1007) here, then closes.
    ws.on("error", (e) => {
      this.ctx.metrics.consoleRejections.inc({ reason: "protocol_error" });
      this.log.info({ err: e.message }, "console: connection closed on a protocol error");
    });
    ws.on("pong", () => (this.alive = true));
    ws.on("message", (data, isBinary) => this.onFrame(data, isBinary));
    this.log.debug({ user: this.user?.username }, "console: connected");
  }

  heartbeat(): void {
    if (!this.alive) {
      this.ctx.metrics.consoleRejections.inc({ reason: "heartbeat" });
      this.log.info("console: peer missed a pong; terminating");
      this.ws.terminate();
      return;
    }
    this.alive = false;
    this.ws.ping();
  }

  /** The authentication deadline passed: closes the connection unless it has authenticated. */
  expire(): void {
    if (this.user !== undefined || this.ended) return;
    this.ctx.metrics.consoleRejections.inc({ reason: "auth_timeout" });
    this.log.info("console: closing a connection that did not authenticate in time");
    this.end();
    this.ws.close(1008, "authentication timeout: send an auth request first");
    // Its slot is held until the socket is gone; a peer that ignores the close is cut off.
    setTimeout(() => this.ws.terminate(), 1000).unref();
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.drainCheck);
    for (const fn of [...this.endFns]) fn();
    this.endFns.clear();
  }

  // --- Session ---

  get username(): string | undefined {
    return this.user?.username;
  }

  async may(verb: PodVerb, namespace: string): Promise<boolean> {
    if (this.user === undefined) return false;
    return (await this.ctx.authorizer.authorize(this.user, verb, namespace)).allowed;
  }

  async require(verb: PodVerb, namespace: string): Promise<void> {
    const user = this.user;
    const d = user ? await this.ctx.authorizer.authorize(user, verb, namespace) : { allowed: false };
    if (d.allowed) return;
    this.log.warn({ user: user?.username, verb, namespace }, "console: request denied");
    throw new ConsoleError(
      "Forbidden",
      `user "${user?.username ?? "anonymous"}" may not ${verb} pods in namespace "${namespace}"${"reason" in d && d.reason ? `: ${d.reason}` : ""}`,
    );
  }

  progress(id: RequestId, progress: Parameters<Session["progress"]>[1]): void {
    this.send(encodeProgress(id, progress));
  }

  event(e: Parameters<Session["event"]>[0]): boolean {
    return this.send(encodeEvent(e));
  }

  onEnd(fn: () => void): () => void {
    if (this.ended) {
      fn();
      return () => undefined;
    }
    this.endFns.add(fn);
    return () => this.endFns.delete(fn);
  }

  drop(reason: string): void {
    if (this.ended) return;
    this.ctx.metrics.consoleRejections.inc({ reason: "slow_reader" });
    this.log.warn(
      { user: this.user?.username, buffered: this.ws.bufferedAmount },
      `console: dropped: ${reason}`,
    );
    this.end();
    this.ws.close(1013, reason.slice(0, 120));
    // A peer that does not read will not read the close frame either.
    setTimeout(() => this.ws.terminate(), 1000).unref();
  }

  // --- frames ---

  /**
   * Sends one frame. Frames sent within one tick all wait in the buffer until the socket gets a
   * turn, so a burst above `maxBufferedBytes` gets `slowReaderGraceMs` to drain; a peer that is
   * still behind then, or twice as far behind at any time, is dropped.
   */
  private send(text: string): boolean {
    if (this.ended || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(text);
    const buffered = this.ws.bufferedAmount;
    if (buffered <= this.limits.maxBufferedBytes) return true;
    if (buffered > 2 * this.limits.maxBufferedBytes) {
      this.drop("the client does not read fast enough; reconnect");
      return false;
    }
    if (this.drainCheck === undefined) {
      this.drainCheck = setTimeout(() => {
        this.drainCheck = undefined;
        if (this.ws.bufferedAmount > this.limits.maxBufferedBytes)
          this.drop("the client does not read fast enough; reconnect");
      }, this.limits.slowReaderGraceMs);
      this.drainCheck.unref();
    }
    return true;
  }

  private reply(op: string, id: RequestId | null, outcome: { result: unknown } | { error: unknown }): void {
    if ("error" in outcome) {
      const body = toErrorBody(outcome.error);
      if (body.code === "Internal")
        this.log.error({ op, err: (outcome.error as Error)?.message }, "console: request failed");
      this.ctx.metrics.consoleRequests.inc({ op, result: body.code });
      this.send(encodeError(id, body));
    } else {
      this.ctx.metrics.consoleRequests.inc({ op, result: "ok" });
      this.send(encodeResult(id as RequestId, outcome.result));
    }
  }

  /** Token bucket: `requestsPerSecond` refilled continuously, up to `burst`. */
  private admit(): boolean {
    const now = performance.now();
    this.tokens = Math.min(
      this.limits.burst,
      this.tokens + ((now - this.refilled) / 1000) * this.limits.requestsPerSecond,
    );
    this.refilled = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  private onFrame(data: RawData, isBinary: boolean): void {
    if (this.ended) return;
    this.alive = true;
    try {
      if (!this.admit()) {
        const now = performance.now();
        if (now - this.limitedSince > ABUSE_WINDOW_MS) {
          this.limitedSince = now;
          this.limited = 0;
        }
        if (++this.limited > this.limits.maxRateLimited) {
          this.ctx.metrics.consoleRejections.inc({ reason: "rate_limit" });
          this.log.warn(
            { user: this.user?.username },
            "console: closing a connection that ignores the rate limit",
          );
          this.end();
          this.ws.close(1008, "rate limit exceeded repeatedly");
          return;
        }
        const id = isBinary ? null : peekId(frameText(data));
        this.reply("invalid", id, {
          error: new ConsoleError(
            "RateLimited",
            `more than ${this.limits.requestsPerSecond} requests per second (burst ${this.limits.burst}); slow down`,
          ),
        });
        return;
      }
      if (isBinary) {
        this.reply("invalid", null, {
          error: new ConsoleError("BadRequest", "binary frames are not accepted; send JSON text frames"),
        });
        return;
      }
      let req: ConsoleRequest;
      try {
        req = parseRequest(frameText(data));
      } catch (e) {
        this.reply("invalid", e instanceof RequestError ? e.id : null, { error: e });
        return;
      }
      void this.serve(req);
    } catch (e) {
      this.reply("invalid", null, { error: e });
    }
  }

  private async serve(req: ConsoleRequest): Promise<void> {
    if (req.op === "auth") {
      await this.authenticate(req.id, req.token);
      return;
    }
    if (this.user === undefined || this.token === undefined) {
      this.reply(req.op, req.id, {
        error: new ConsoleError(
          "Unauthenticated",
          'authenticate first: send {"id":1,"op":"auth","token":"..."} or connect with an Authorization: Bearer header',
        ),
      });
      return;
    }
    if (this.inFlight >= this.limits.maxInFlight) {
      this.reply(req.op, req.id, {
        error: new ConsoleError(
          "RateLimited",
          `more than ${this.limits.maxInFlight} requests in progress; wait for replies`,
        ),
      });
      return;
    }
    if (req.op === "watch" && this.watches >= this.limits.maxWatches) {
      this.reply(req.op, req.id, {
        error: new ConsoleError("RateLimited", `at most ${this.limits.maxWatches} watches per connection`),
      });
      return;
    }
    this.inFlight++;
    try {
      // Re-checked (cached) on every request, so that a revoked token stops working here too.
      const user = await this.ctx.authenticator.authenticate(this.token);
      if (user === undefined) {
        this.reply(req.op, req.id, {
          error: new ConsoleError("Unauthenticated", "the bearer token is no longer valid"),
        });
        this.end();
        this.ws.close(1008, "token no longer valid");
        return;
      }
      this.user = user;
      const out = await this.ctx.ops.handle(this, req);
      if (req.op === "watch") {
        this.watches++;
        this.onEnd(() => this.watches--);
      }
      this.reply(req.op, req.id, { result: out.result });
      out.afterReply?.();
    } catch (e) {
      this.reply(req.op, req.id, { error: e });
    } finally {
      this.inFlight--;
    }
  }

  private async authenticate(id: RequestId, token: string): Promise<void> {
    if (this.authenticating) {
      this.reply("auth", id, {
        error: new ConsoleError("Conflict", "an auth request is already in progress"),
      });
      return;
    }
    this.authenticating = true;
    try {
      const user = await this.ctx.authenticator.authenticate(token);
      // Closed meanwhile (the deadline, the peer): nothing to answer.
      if (this.ended) return;
      if (user === undefined) {
        this.ctx.metrics.consoleRejections.inc({ reason: "unauthenticated" });
        this.log.warn("console: token refused in an auth frame");
        this.reply("auth", id, {
          error: new ConsoleError(
            "Unauthenticated",
            "the token was refused (unknown, expired or for another audience)",
          ),
        });
        this.end();
        this.ws.close(1008, "authentication failed");
        return;
      }
      if (!this.ctx.onAuthenticated(this)) {
        this.reply("auth", id, {
          error: new ConsoleError("Unavailable", "too many console connections; try again later"),
        });
        this.end();
        this.ws.close(1013, "too many console connections; try again later");
        return;
      }
      this.user = user;
      this.token = token;
      this.log.info({ user: user.username }, "console: authenticated");
      this.reply("auth", id, { result: { user: user.username } });
    } catch (e) {
      this.reply("auth", id, { error: e });
    } finally {
      this.authenticating = false;
    }
  }
}
