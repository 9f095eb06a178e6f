/**
 * A connection to an agent's websocket console (docs/design.md "Websocket console protocol"): TLS
 * verified by default, the bearer token in the upgrade's `Authorization` header, numbered requests
 * matched to their replies, progress and watch events handed to callbacks, timeouts, and a clean
 * close. Every failure is an error that `errors.ts` maps to an exit code.
 */
import { WebSocket, type RawData } from "ws";
import { AppError } from "../shared/errors.js";
import {
  ConsoleError,
  DEFAULT_TIMEOUT_SECONDS,
  encodeRequest,
  parseServerFrame,
  type ConsoleRequest,
  type ListResult,
  type ProgressFrame,
  type RequestId,
  type ResultOf,
  type StateEvent,
  type WatchRequest,
} from "../shared/protocol.js";
import { AGENT_NAMESPACE, CA_CONFIG_MAP } from "./agent-names.js";
import type { Unnumbered } from "./args.js";

export interface ConnectOptions {
  /** `wss://HOST:PORT/console`. */
  readonly url: string;
  readonly token: string;
  /** PEM CA bundle to trust instead of the system's CAs. */
  readonly ca?: string;
  /** The name the certificate must carry, when it is not the URL's host (port-forwarding). */
  readonly servername?: string;
  /** Accept any certificate. Only with `--insecure-skip-tls-verify`. */
  readonly insecureSkipTlsVerify?: boolean;
  /** Time to connect, TLS and upgrade included. Default 10 s. */
  readonly connectTimeoutMs?: number;
  /** Time for `list`, `status` and `watch` to answer. Default 30 s. */
  readonly requestTimeoutMs?: number;
  /** Explains a failed connection better than the socket can (a port-forward's own error). */
  readonly explainFailure?: () => AppError | undefined;
}

export interface RequestOptions {
  readonly onProgress?: (p: ProgressFrame["progress"]) => void;
  /** Stops waiting (the agent keeps working on a mount); rejects with a Timeout error. */
  readonly signal?: AbortSignal;
}

type NonAuth = Exclude<ConsoleRequest, { op: "auth" }>;
type OpOf<R> = R extends { op: infer O } ? O : never;

interface Pending {
  readonly resolve: (result: unknown) => void;
  readonly reject: (e: Error) => void;
  readonly onProgress?: (p: ProgressFrame["progress"]) => void;
}

const TLS_CODES = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_GET_ISSUER_CERT",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "CERT_SIGNATURE_FAILURE",
]);

function frameText(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString("utf8");
  if (Array.isArray(data)) return Buffer.concat(data).toString("utf8");
  return Buffer.from(data).toString("utf8");
}

/** The error for a connection that did not open. */
function connectError(url: string, e: Error & { code?: string }): AppError {
  if (e.code !== undefined && TLS_CODES.has(e.code))
    return new AppError(
      "Unavailable",
      `cannot verify the agent's certificate at ${url} (${e.code}: ${e.message}); pass the CA that signed it with --ca-file (in a cluster: ca.crt of ConfigMap ${CA_CONFIG_MAP} in namespace ${AGENT_NAMESPACE}, which dvctl reads itself when it finds the agent), or --tls-server-name when the certificate names another host`,
      { cause: e },
    );
  return new AppError(
    "Unavailable",
    `cannot reach the agent's console at ${url}: ${e.message}${e.code !== undefined && !e.message.includes(e.code) ? ` (${e.code})` : ""}`,
    { cause: e },
  );
}

/**
 * The agent's console answers 429, or 503 with `Retry-After: 1`, while too many connections are still
 * authenticating (from this address, or in all): a state that lasts about one TokenReview. Such a
 * refusal is tried again, a few times within the connect timeout; a longer `Retry-After` (every
 * authenticated slot taken) is not.
 */
const MAX_CONNECT_ATTEMPTS = 4;
const MAX_RETRY_AFTER_MS = 2000;

/** A refusal worth trying again after `afterMs`. */
class RetryLater extends AppError {
  constructor(
    refusal: AppError,
    readonly afterMs: number,
  ) {
    super(refusal.code, refusal.message);
  }
}

/** `Retry-After` in seconds, as ms; undefined when absent or an HTTP date. */
function retryAfterMs(header: string | string[] | undefined): number | undefined {
  const v = Array.isArray(header) ? header[0] : header;
  return v !== undefined && /^\d{1,4}$/.test(v.trim()) ? Number(v.trim()) * 1000 : undefined;
}

/** The error for an upgrade the agent answered with a plain HTTP status. */
function refusedError(url: string, status: number, body: string): AppError {
  const why = body.trim().slice(0, 300) || `HTTP ${status}`;
  if (status === 401 || status === 403)
    return new AppError("Unauthenticated", `the agent refused the token: ${why}`);
  if (status === 404)
    return new AppError(
      "Unavailable",
      `no console at ${url} (HTTP 404: ${why}); is --agent the agent's address?`,
    );
  return new AppError(
    "Unavailable",
    `the agent at ${url} cannot take the connection now: ${why} (HTTP ${status})`,
  );
}

export class DvctlClient {
  private readonly pending = new Map<RequestId, Pending>();
  private readonly watchers = new Map<RequestId, (e: StateEvent) => void>();
  private nextId = 1;
  private closedBy: AppError | undefined;
  private readonly closeFns = new Set<(why: AppError) => void>();

  private constructor(
    private readonly ws: WebSocket,
    private readonly opts: ConnectOptions,
  ) {
    ws.on("message", (data, isBinary) => this.onFrame(data, isBinary));
    ws.on("error", () => undefined);
    ws.on("close", (code, reason) => this.ended(code, reason.toString()));
  }

  /**
   * Opens the console; rejects with an AppError (Unauthenticated, Unavailable) when it cannot. A
   * brief refusal ({@link RetryLater}) is tried again after its `Retry-After`, with some jitter so
   * that clients refused together do not come back together, while the connect timeout allows.
   */
  static async connect(opts: ConnectOptions): Promise<DvctlClient> {
    const deadline = performance.now() + (opts.connectTimeoutMs ?? 10_000);
    for (let attempt = 1; ; attempt++) {
      try {
        return await DvctlClient.connectOnce(opts);
      } catch (e) {
        if (!(e instanceof RetryLater) || attempt >= MAX_CONNECT_ATTEMPTS) throw e;
        const wait = e.afterMs * (1 + Math.random() / 2);
        if (performance.now() + wait >= deadline) throw e;
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  private static connectOnce(opts: ConnectOptions): Promise<DvctlClient> {
    const ws = new WebSocket(opts.url, {
      headers: { authorization: `Bearer ${opts.token}` },
      ...(opts.ca !== undefined ? { ca: opts.ca } : {}),
      ...(opts.servername !== undefined ? { servername: opts.servername } : {}),
      rejectUnauthorized: opts.insecureSkipTlsVerify !== true,
      handshakeTimeout: opts.connectTimeoutMs ?? 10_000,
      perMessageDeflate: false,
      // A list of a busy node is large; the agent bounds what it sends, not dvctl.
      maxPayload: 64 * 1024 * 1024,
      followRedirects: false,
    });
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (e: AppError): void => {
        if (settled) return;
        settled = true;
        ws.terminate();
        reject(opts.explainFailure?.() ?? e);
      };
      const onError = (e: Error & { code?: string }): void => fail(connectError(opts.url, e));
      const onEarlyClose = (): void =>
        fail(new AppError("Unavailable", `the agent at ${opts.url} closed the connection`));
      ws.once("unexpected-response", (_req, res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += body.length < 4096 ? c : ""));
        res.on("end", () => {
          const status = res.statusCode ?? 0;
          const refusal = refusedError(opts.url, status, body);
          const after = retryAfterMs(res.headers["retry-after"]);
          const brief =
            (status === 429 || status === 503) && after !== undefined && after <= MAX_RETRY_AFTER_MS;
          fail(brief ? new RetryLater(refusal, after) : refusal);
        });
        res.on("error", () => fail(refusedError(opts.url, res.statusCode ?? 0, body)));
      });
      ws.on("error", onError);
      ws.once("close", onEarlyClose);
      ws.once("open", () => {
        ws.off("error", onError);
        ws.off("close", onEarlyClose);
        if (settled) return;
        settled = true;
        resolve(new DvctlClient(ws, opts));
      });
    });
  }

  /** Set once the connection is gone: why. */
  get closed(): AppError | undefined {
    return this.closedBy;
  }

  /** Calls `fn` once when the connection ends (at once if it has); returns a function that cancels that. */
  onClose(fn: (why: AppError) => void): () => void {
    if (this.closedBy !== undefined) {
      fn(this.closedBy);
      return () => undefined;
    }
    this.closeFns.add(fn);
    return () => this.closeFns.delete(fn);
  }

  /**
   * Sends a request and resolves with its result; an `{ok:false}` reply rejects with ConsoleError.
   * `mount`/`unmount` wait for the agent's own timeout (`timeoutSeconds`, default 60) plus a margin,
   * so that the agent's Timeout reply, which says what it keeps doing, wins over dvctl's.
   */
  request<R extends Unnumbered<NonAuth>>(req: R, o: RequestOptions = {}): Promise<ResultOf[OpOf<R>]> {
    const id = this.nextId++;
    return this.send(id, { ...req, id }, o) as Promise<ResultOf[OpOf<R>]>;
  }

  /** Starts a watch: resolves with the snapshot; `onEvent` gets every later state change. */
  async watch(req: Unnumbered<WatchRequest>, onEvent: (e: StateEvent) => void): Promise<ListResult> {
    const id = this.nextId++;
    // Registered before sending: events can follow the reply in the same read.
    this.watchers.set(id, onEvent);
    try {
      return (await this.send(id, { ...req, id }, {})) as ListResult;
    } catch (e) {
      this.watchers.delete(id);
      throw e;
    }
  }

  /** Closes with 1000 and waits for the agent's close (at most 1 s). */
  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    const done = new Promise<void>((resolve) => this.onClose(() => resolve()));
    this.ws.close(1000, "bye");
    const t = setTimeout(() => this.ws.terminate(), 1000);
    await done;
    clearTimeout(t);
  }

  private send(id: RequestId, req: NonAuth, o: RequestOptions): Promise<unknown> {
    if (this.closedBy !== undefined) return Promise.reject(this.closedBy);
    const ms =
      req.op === "mount" || req.op === "unmount"
        ? ((req.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS) + 10) * 1000
        : (this.opts.requestTimeoutMs ?? 30_000);
    return new Promise((resolve, reject) => {
      const stop = (): void => {
        clearTimeout(timer);
        o.signal?.removeEventListener("abort", onAbort);
        this.pending.delete(id);
      };
      const timer = setTimeout(() => {
        stop();
        reject(
          new AppError("Timeout", `the agent did not answer ${req.op} within ${Math.round(ms / 1000)} s`),
        );
      }, ms);
      const onAbort = (): void => {
        stop();
        reject(
          new AppError(
            "Timeout",
            `stopped waiting for ${req.op}; the agent keeps working on it (see status)`,
          ),
        );
      };
      o.signal?.addEventListener("abort", onAbort, { once: true });
      this.pending.set(id, {
        resolve: (r) => (stop(), resolve(r)),
        reject: (e) => (stop(), reject(e)),
        ...(o.onProgress !== undefined ? { onProgress: o.onProgress } : {}),
      });
      this.ws.send(encodeRequest(req));
    });
  }

  private onFrame(data: RawData, isBinary: boolean): void {
    if (isBinary) return;
    let frame;
    try {
      frame = parseServerFrame(frameText(data));
    } catch (e) {
      this.failAll(
        new AppError("Internal", `the agent sent a frame dvctl cannot read: ${(e as Error).message}`),
      );
      return;
    }
    if ("event" in frame) {
      this.watchers.get(frame.watch)?.(frame);
      return;
    }
    if ("progress" in frame) {
      this.pending.get(frame.id)?.onProgress?.(frame.progress);
      return;
    }
    if (frame.ok) {
      this.pending.get(frame.id)?.resolve(frame.result);
      return;
    }
    const err = new ConsoleError(frame.error.code, frame.error.message);
    if (frame.id === null) this.failAll(err);
    else this.pending.get(frame.id)?.reject(err);
  }

  private failAll(e: Error): void {
    for (const p of [...this.pending.values()]) p.reject(e);
  }

  private ended(code: number, reason: string): void {
    // 1008 is how the agent ends a connection whose token stopped working.
    const why =
      code === 1008 && /token|auth/i.test(reason)
        ? new AppError("Unauthenticated", `the agent closed the connection: ${reason}`)
        : new AppError(
            "Unavailable",
            `the connection to the agent closed (${code}${reason !== "" ? `: ${reason}` : ""})`,
          );
    this.closedBy = why;
    this.failAll(why);
    this.watchers.clear();
    for (const fn of [...this.closeFns]) fn(why);
    this.closeFns.clear();
  }
}
