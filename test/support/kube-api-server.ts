/**
 * A fake Kubernetes API server for tests: in-process HTTPS on 127.0.0.1 (port 0), speaking the real
 * REST paths and JSON shapes, so that the real `@kubernetes/client-node` runs against it.
 *
 * - Any resource, core (`/api/v1/...`) or grouped (`/apis/<group>/<version>/...`), namespaced or
 *   cluster-scoped: GET item and list (labelSelector, fieldSelector, limit/continue), POST, PUT, PATCH
 *   (JSON patch, merge patch, strategic merge treated as merge), DELETE, `/status` subresource,
 *   `?dryRun=All`. Errors are real `Status` objects (NotFound, AlreadyExists, Conflict, Invalid...).
 * - `?watch=true`: newline-delimited watch events over a chunked response, from a resourceVersion
 *   (replayed from history) or from "now" (synthetic ADDED for the current objects first); a
 *   compacted resourceVersion gets an `ERROR` event with a 410 Expired Status, as upstream.
 * - TokenReview and (Local/Self)SubjectAccessReview answered from {@link tokenReviews} and
 *   {@link authorizer}; nothing is stored for them.
 * - A bearer token is required; {@link inject} fails or delays chosen requests, and {@link requests}
 *   logs every request for assertions.
 * - `pods/<name>/portforward` over a websocket, as the kubelet serves it, when a
 *   {@link FakeKubeApiServerOptions.portForward} resolver says where the pod's ports are
 *   (kube-api-portforward.ts); injections with `status` or `destroy` apply to it too.
 *
 *     const api = await FakeKubeApiServer.start();
 *     const core = api.kubeConfig().makeApiClient(CoreV1Api);
 *     api.store.create({ apiPath: CORE_V1, resource: "secrets", namespace: "ns" }, secret);
 *     ...
 *     await api.close();
 */
import { KubeConfig } from "@kubernetes/client-node";
import { randomBytes } from "node:crypto";
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { generateCa, generateServingCert, type CertificatePair } from "../../certs/generate.js";
import { answerReview, isReview, type Authorizer, type TokenReviewUser } from "./kube-api-reviews.js";
import { answerUpgrade, type PortForwardResolver } from "./kube-api-portforward.js";
import { serveWatch, type WatchStream } from "./kube-api-watch.js";
import { KubeObjectStore } from "./kube-object-store.js";
import {
  CORE_V1,
  StoreError,
  apiVersionOf,
  kindOf,
  parseRoute,
  reasonFor,
  statusObject,
  type KubeObject,
  type ResourceRef,
  type Route,
} from "./kube-resources.js";

export * from "./kube-api-reviews.js";
export * from "./kube-object-store.js";
export * from "./kube-resources.js";
export * from "./kube-selectors.js";

export interface RecordedRequest {
  readonly method: string;
  /** Path without the query. */
  readonly path: string;
  readonly query: Readonly<Record<string, string>>;
  readonly headers: IncomingHttpHeaders;
  /** Media type of the body, without parameters. */
  readonly contentType: string | undefined;
  /** The body parsed as JSON, or the raw text when it is not JSON; undefined when empty. */
  readonly body: unknown;
  /** HTTP status of the response, once sent. */
  status?: number;
}

/** A rule that intercepts matching requests before the fake handles them. */
export interface Injection {
  readonly method?: string;
  /** Matched against the request path (no query); a string must match exactly. */
  readonly path?: string | RegExp;
  /** Any further condition on the request. */
  readonly when?: (req: RecordedRequest) => boolean;
  /** How many matching requests to intercept; default 1, `Infinity` for all. */
  times?: number;
  readonly delayMs?: number;
  /** Runs before the request is handled (e.g. to win a race against it by changing the store). */
  readonly before?: (req: RecordedRequest) => void | Promise<void>;
  /** Answer with this status and a Status object instead of handling the request. */
  readonly status?: number;
  readonly reason?: string;
  readonly message?: string;
  /** Drop the connection without an answer. */
  readonly destroy?: boolean;
}

export interface FakeKubeApiServerOptions {
  /** The bearer token the client must send; default a random one. */
  readonly token?: string;
  /** Tokens that TokenReview accepts, and for whom. */
  readonly tokenReviews?: Record<string, TokenReviewUser>;
  /** SubjectAccessReview decisions; default: deny everything. */
  readonly authorizer?: Authorizer;
  /** Watch events kept for resuming watches (older resourceVersions get 410). Default 10 000. */
  readonly historyLimit?: number;
  /** Write each watch event in two chunks, so that clients must reassemble lines. */
  readonly splitWatchEvents?: boolean;
  /** Serves `pods/<name>/portforward` to where this says; without it, port-forwards get 404. */
  readonly portForward?: PortForwardResolver;
}

export class FakeKubeApiServer {
  readonly store: KubeObjectStore;
  /** Every request, in arrival order. */
  readonly requests: RecordedRequest[] = [];
  readonly token: string;
  tokenReviews: Record<string, TokenReviewUser>;
  authorizer: Authorizer;
  splitWatchEvents: boolean;

  private readonly injections: Injection[] = [];
  private readonly portForward: PortForwardResolver | undefined;
  private readonly watches = new Set<WatchStream>();
  private watchWaiters: (() => void)[] = [];

  private constructor(
    private readonly server: Server,
    readonly caPem: string,
    opts: FakeKubeApiServerOptions,
  ) {
    this.store = new KubeObjectStore(opts.historyLimit);
    this.token = opts.token ?? randomBytes(16).toString("hex");
    this.tokenReviews = { ...opts.tokenReviews };
    this.authorizer =
      opts.authorizer ?? (() => ({ allowed: false, reason: "no authorizer configured in the fake" }));
    this.splitWatchEvents = opts.splitWatchEvents ?? false;
    this.portForward = opts.portForward;
  }

  /** Starts a server on 127.0.0.1 with a fresh port and a certificate for `127.0.0.1` and `localhost`. */
  static async start(opts: FakeKubeApiServerOptions = {}): Promise<FakeKubeApiServer> {
    const tls = serverCertificates();
    const server = createServer({ cert: tls.serving.certPem, key: tls.serving.keyPem });
    const fake = new FakeKubeApiServer(server, tls.ca.certPem, opts);
    server.on("request", (req: IncomingMessage, res: ServerResponse) => {
      fake.handle(req, res).catch((e: unknown) => {
        if (!res.headersSent) sendStatus(res, 500, "InternalError", `fake API server: ${String(e)}`);
        else res.destroy();
      });
    });
    server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      fake.upgrade(req, socket, head),
    );
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    return fake;
  }

  /** `https://127.0.0.1:<port>`. */
  get url(): string {
    return `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** A KubeConfig that trusts this server's CA and sends its bearer token (namespace `default`). */
  kubeConfig(opts: { token?: string } = {}): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [
        {
          name: "fake",
          server: this.url,
          caData: Buffer.from(this.caPem).toString("base64"),
          skipTLSVerify: false,
        },
      ],
      users: [{ name: "fake", token: opts.token ?? this.token }],
      contexts: [{ name: "fake", cluster: "fake", user: "fake", namespace: "default" }],
      currentContext: "fake",
    });
    return kc;
  }

  /** Adds an interception rule; rules are tried in the order they were added. */
  inject(rule: Injection): void {
    this.injections.push({ ...rule, times: rule.times ?? 1 });
  }

  clearInjections(): void {
    this.injections.length = 0;
  }

  /** Requests with this method whose path matches. */
  requestsTo(method: string, path: string | RegExp): RecordedRequest[] {
    return this.requests.filter((r) => r.method === method && matchPath(path, r.path));
  }

  /** Number of watch streams open now. */
  get openWatches(): number {
    return this.watches.size;
  }

  /** Resolves once at least `count` watch streams are open. */
  async waitForWatches(count = 1, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.watches.size < count) {
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${count} watch(es); ${this.watches.size} open`);
      await new Promise<void>((resolve) => {
        this.watchWaiters.push(resolve);
        setTimeout(resolve, 50).unref();
      });
    }
  }

  /** Ends every open watch stream from the server side, as an API server does at its timeout. */
  closeWatches(): void {
    for (const w of [...this.watches]) w.end();
  }

  /** Sends a BOOKMARK at the current resourceVersion to watches that asked for bookmarks. */
  sendBookmarks(): void {
    for (const w of this.watches) w.bookmark(this.store.resourceVersion);
  }

  async close(): Promise<void> {
    this.closeWatches();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "https://fake");
    const raw = await readBody(req);
    const contentType = req.headers["content-type"]?.split(";")[0]?.trim();
    const rec: RecordedRequest = {
      method: req.method ?? "GET",
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers: req.headers,
      contentType,
      body: parseBody(raw),
    };
    this.requests.push(rec);
    res.on("finish", () => (rec.status = res.statusCode));

    if (req.headers.authorization !== `Bearer ${this.token}`)
      return sendStatus(res, 401, "Unauthorized", "Unauthorized");

    const rule = this.takeInjection(rec);
    if (rule !== undefined) {
      if (rule.delayMs !== undefined) await new Promise((r) => setTimeout(r, rule.delayMs));
      if (rule.before !== undefined) await rule.before(rec);
      if (rule.destroy) return void req.socket.destroy();
      if (rule.status !== undefined)
        return sendStatus(
          res,
          rule.status,
          rule.reason ?? reasonFor(rule.status),
          rule.message ?? "injected failure",
        );
    }

    const route = parseRoute(url.pathname);
    if (route === undefined)
      return sendStatus(res, 404, "NotFound", "the server could not find the requested resource");
    try {
      this.route(rec, route, url.searchParams, res);
    } catch (e) {
      if (!(e instanceof StoreError)) throw e;
      sendStatus(res, e.code, e.reason, e.message, e.details);
    }
  }

  /** The first rule that matches `rec` and has uses left; counts the use. */
  private takeInjection(rec: RecordedRequest): Injection | undefined {
    const rule = this.injections.find(
      (r) =>
        (r.times ?? 0) > 0 &&
        (r.method === undefined || r.method === rec.method) &&
        (r.path === undefined || matchPath(r.path, rec.path)) &&
        (r.when === undefined || r.when(rec)),
    );
    if (rule !== undefined) rule.times = (rule.times ?? 1) - 1;
    return rule;
  }

  /** Websocket upgrades: only `pods/<name>/portforward` (kube-api-portforward.ts). */
  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    answerUpgrade(
      {
        token: this.token,
        resolver: this.portForward,
        record: (rec) => this.requests.push(rec),
        takeInjection: (rec) => this.takeInjection(rec),
        podExists: (namespace, name) => {
          try {
            this.store.read({ apiPath: CORE_V1, resource: "pods", namespace }, name);
            return true;
          } catch {
            return false;
          }
        },
      },
      req,
      socket,
      head,
    );
  }

  private route(rec: RecordedRequest, route: Route, q: URLSearchParams, res: ServerResponse): void {
    const { ref, name, subresource } = route;
    const write = { dryRun: q.get("dryRun") === "All", subresource };
    if (isReview(ref)) {
      if (rec.method !== "POST" || name !== undefined) return methodNotAllowed(res);
      return sendJson(res, 201, answerReview(ref, asObject(rec.body), this.tokenReviews, this.authorizer));
    }
    switch (rec.method) {
      case "GET":
        if (name !== undefined) {
          return sendJson(res, 200, this.store.read(ref, name));
        }
        if (q.get("watch") === "true" || q.get("watch") === "1") return this.watch(ref, q, res);
        return sendJson(res, 200, this.list(ref, q));
      case "POST":
        if (name !== undefined) return methodNotAllowed(res);
        return sendJson(res, 201, this.store.create(ref, asObject(rec.body), write));
      case "PUT":
        if (name === undefined) return methodNotAllowed(res);
        return sendJson(res, 200, this.store.update(ref, name, asObject(rec.body), write));
      case "PATCH":
        if (name === undefined) return methodNotAllowed(res);
        return sendJson(res, 200, this.store.patch(ref, name, rec.contentType ?? "", rec.body, write));
      case "DELETE": {
        if (name === undefined) return methodNotAllowed(res);
        const options = (rec.body ?? {}) as { preconditions?: { resourceVersion?: string; uid?: string } };
        const gone = this.store.delete(ref, name, {
          ...write,
          ...(options.preconditions ? { preconditions: options.preconditions } : {}),
        });
        // Upstream returns the object for resources with graceful deletion (pods), a Status otherwise.
        if (ref.resource === "pods") return sendJson(res, 200, gone);
        return sendJson(res, 200, {
          kind: "Status",
          apiVersion: "v1",
          metadata: {},
          status: "Success",
          details: { name, kind: ref.resource, uid: gone.metadata?.uid },
        });
      }
      default:
        return methodNotAllowed(res);
    }
  }

  private list(ref: ResourceRef, q: URLSearchParams): KubeObject {
    let items = this.store.list(ref, {
      labelSelector: q.get("labelSelector") ?? undefined,
      fieldSelector: q.get("fieldSelector") ?? undefined,
    });
    const rv = String(this.store.resourceVersion);
    const metadata: Record<string, unknown> = { resourceVersion: rv };
    const cont = q.get("continue");
    if (cont) {
      const after = Buffer.from(cont, "base64url").toString("utf8");
      items = items.filter((o) => itemKey(o) > after);
    }
    const limit = Number(q.get("limit") ?? "0");
    if (limit > 0 && items.length > limit) {
      metadata.remainingItemCount = items.length - limit;
      items = items.slice(0, limit);
      metadata.continue = Buffer.from(itemKey(items[items.length - 1]!)).toString("base64url");
    }
    // Upstream omits apiVersion and kind on list items.
    for (const o of items) {
      delete o.apiVersion;
      delete o.kind;
    }
    return { kind: `${kindOf(ref.resource)}List`, apiVersion: apiVersionOf(ref.apiPath), metadata, items };
  }

  private watch(ref: ResourceRef, q: URLSearchParams, res: ServerResponse): void {
    const stream = serveWatch(this.store, ref, q, res, this.splitWatchEvents);
    if (stream === undefined) return;
    this.watches.add(stream);
    stream.onClose(() => this.watches.delete(stream));
    for (const wake of this.watchWaiters.splice(0)) wake();
  }
}

let cachedCertificates: { ca: CertificatePair; serving: CertificatePair } | undefined;

/** One CA and serving certificate for every fake server of the process: RSA keys cost time. */
function serverCertificates(): { ca: CertificatePair; serving: CertificatePair } {
  if (cachedCertificates === undefined) {
    const ca = generateCa({ commonName: "fake-kube-apiserver-ca" });
    const serving = generateServingCert({
      ca,
      service: "kubernetes",
      namespace: "default",
      extraDnsNames: ["localhost"],
      extraIps: ["127.0.0.1"],
    });
    cachedCertificates = { ca, serving };
  }
  return cachedCertificates;
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

function sendStatus(
  res: ServerResponse,
  code: number,
  reason: string,
  message: string,
  details?: object,
): void {
  sendJson(res, code, statusObject(code, reason, message, details as Record<string, unknown> | undefined));
}

function methodNotAllowed(res: ServerResponse): void {
  sendStatus(res, 405, "MethodNotAllowed", "the server does not allow this method on the requested resource");
}

function matchPath(pattern: string | RegExp, path: string): boolean {
  return typeof pattern === "string" ? pattern === path : pattern.test(path);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

function parseBody(raw: string): unknown {
  if (raw === "") return undefined;
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return raw;
  }
}

function asObject(body: unknown): KubeObject {
  if (body === null || typeof body !== "object" || Array.isArray(body))
    throw new StoreError(400, "BadRequest", "the request body must be a JSON object");
  return body as KubeObject;
}

function itemKey(o: KubeObject): string {
  return `${o.metadata?.namespace ?? ""}/${o.metadata?.name ?? ""}`;
}
