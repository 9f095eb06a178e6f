/**
 * What the console's port admits before a peer has authenticated (docs/design.md "Websocket console
 * protocol", Limits). A socket without a valid token must never take the slot of an authenticated
 * user, so such sockets have caps and a deadline of their own:
 *
 * - {@link AddressCounter}: a count per remote address, capped per address and in total. Pure.
 * - {@link HandshakeGuard}: every TCP connection to the HTTPS server from its accept until it sends
 *   its first HTTP request (the TLS handshake, then the request line and headers). At most
 *   `maxPerAddress` of them per address; more are reset at once, since nothing can be answered
 *   before TLS. One that has not sent a request by its deadline is destroyed.
 * - {@link PendingAuth}: an upgrade that has not authenticated yet, from the upgrade request until a
 *   valid token (in the `Authorization` header or the first frame) or the deadline.
 */
import type { IncomingMessage, Server } from "node:http";
import type { Socket } from "node:net";

/** Which cap refused a connection. */
export type CapExceeded = "total" | "address";

/** A count per remote address, capped per address and in total. Pure. */
export class AddressCounter {
  private readonly byAddress = new Map<string, number>();
  private count = 0;

  constructor(
    private readonly maxTotal: number,
    private readonly maxPerAddress: number,
  ) {}

  /** Counts one more for `address`, or says which cap refuses it (and counts nothing). */
  take(address: string): CapExceeded | undefined {
    const held = this.byAddress.get(address) ?? 0;
    if (held >= this.maxPerAddress) return "address";
    if (this.count >= this.maxTotal) return "total";
    this.byAddress.set(address, held + 1);
    this.count++;
    return undefined;
  }

  /** Gives back one taken for `address`. */
  release(address: string): void {
    const held = this.byAddress.get(address);
    if (held === undefined) return;
    if (held <= 1) this.byAddress.delete(address);
    else this.byAddress.set(address, held - 1);
    this.count--;
  }

  get size(): number {
    return this.count;
  }

  /** How many `address` holds. */
  of(address: string): number {
    return this.byAddress.get(address) ?? 0;
  }
}

export interface HandshakeGuardOptions {
  /** The HTTPS server; the guard listens to its `connection` and `request` events. */
  readonly server: Server;
  /** Sockets of one address that may be in the handshake at once. */
  readonly maxPerAddress: number;
  /** From accept to the first HTTP request, in ms. */
  readonly timeoutMs: number;
  /** A socket was reset: over the per-address cap, or past its deadline. */
  readonly onRefused: (reason: "too_many_handshakes_per_address" | "handshake_timeout") => void;
  /** The number of sockets in the handshake changed. */
  readonly onChange: (count: number) => void;
}

interface Handshake {
  readonly socket: Socket;
  readonly address: string;
  /** `performance.now()` at accept. */
  readonly since: number;
  readonly timer: NodeJS.Timeout;
}

/**
 * Tracks every TCP connection from its accept until its first HTTP request, which is either a plain
 * request (`/healthz`, `/metrics`: the socket is then an ordinary HTTP client) or a console upgrade
 * (the console {@link claim}s it and goes on counting its time).
 *
 * Node's own limits leave such a socket open for minutes: the TLS handshake may take 120 s, and
 * `headersTimeout` only starts with the first byte of a request, so a peer that completes TLS and
 * sends nothing is never timed out. Hence a deadline of our own, and a cap per address.
 *
 * Connections are matched to their requests by remote address and port, which identify one TCP
 * connection for as long as it is open.
 */
export class HandshakeGuard {
  private readonly counter: AddressCounter;
  private readonly open = new Map<string, Handshake>();

  constructor(private readonly opts: HandshakeGuardOptions) {
    this.counter = new AddressCounter(Number.POSITIVE_INFINITY, opts.maxPerAddress);
    opts.server.on("connection", this.onConnection);
    opts.server.on("request", this.onRequest);
  }

  /** Sockets in the handshake now. */
  get size(): number {
    return this.open.size;
  }

  /**
   * Stops tracking the socket that carried `req`; returns its accept time (`performance.now()`),
   * or undefined for a socket that was not tracked (one that already carried a request).
   */
  claim(req: IncomingMessage): number | undefined {
    const key = keyOf(req.socket);
    const h = key !== undefined ? this.open.get(key) : undefined;
    if (h === undefined) return undefined;
    this.forget(key!, h);
    return h.since;
  }

  /** Stops listening and forgets every socket (the server closes them). */
  close(): void {
    this.opts.server.off("connection", this.onConnection);
    this.opts.server.off("request", this.onRequest);
    for (const [key, h] of this.open) this.forget(key, h);
  }

  private readonly onConnection = (socket: Socket): void => {
    const key = keyOf(socket);
    const address = socket.remoteAddress;
    if (key === undefined || address === undefined) {
      socket.destroy();
      return;
    }
    if (this.counter.take(address) !== undefined) {
      this.opts.onRefused("too_many_handshakes_per_address");
      socket.destroy();
      return;
    }
    const timer = setTimeout(() => {
      if (this.open.get(key) !== h) return;
      this.forget(key, h);
      this.opts.onRefused("handshake_timeout");
      socket.destroy();
    }, this.opts.timeoutMs);
    timer.unref();
    const h: Handshake = { socket, address, since: performance.now(), timer };
    this.open.set(key, h);
    this.opts.onChange(this.open.size);
    socket.once("close", () => {
      if (this.open.get(key) === h) this.forget(key, h);
    });
  };

  private readonly onRequest = (req: IncomingMessage): void => {
    this.claim(req);
  };

  private forget(key: string, h: Handshake): void {
    clearTimeout(h.timer);
    this.open.delete(key);
    this.counter.release(h.address);
    this.opts.onChange(this.open.size);
  }
}

function keyOf(socket: Pick<Socket, "remoteAddress" | "remotePort">): string | undefined {
  const { remoteAddress, remotePort } = socket;
  return remoteAddress === undefined || remotePort === undefined
    ? undefined
    : `${remoteAddress}|${remotePort}`;
}

/**
 * One upgrade that has not authenticated, holding a slot of the unauthenticated pool from the upgrade
 * request until {@link release} (a valid token, or the socket closed). At the deadline, unless
 * released by then, `onExpire` runs: it must close the socket, whose close then releases the slot,
 * so that a peer that ignores the close still counts until it is gone.
 */
export class PendingAuth {
  private released = false;
  private timedOut = false;
  private readonly timer: NodeJS.Timeout;
  /** What the deadline does; changes when the upgrade becomes a websocket. */
  onExpire: () => void = () => undefined;

  constructor(
    private readonly pool: AddressCounter,
    readonly address: string,
    remainingMs: number,
    private readonly onRelease: () => void,
  ) {
    this.timer = setTimeout(
      () => {
        if (this.released) return;
        this.timedOut = true;
        this.onExpire();
      },
      Math.max(0, remainingMs),
    );
    this.timer.unref();
  }

  /** Gives the slot back; true the first time, false once released already. */
  release(): boolean {
    if (this.released) return false;
    this.released = true;
    clearTimeout(this.timer);
    this.pool.release(this.address);
    this.onRelease();
    return true;
  }

  /** True once the deadline has passed without a release: the socket is being closed. */
  get expired(): boolean {
    return this.timedOut;
  }
}
