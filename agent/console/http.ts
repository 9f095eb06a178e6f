/**
 * The agent's plain HTTP endpoints, served on the same HTTPS server as the console: `/healthz`,
 * `/readyz` and `/metrics`. Everything else is 404; the console itself arrives as an `upgrade`.
 */
import type { RequestListener } from "node:http";
import { METRICS_CONTENT_TYPE, Registry, type Counter, type Gauge } from "../../shared/metrics.js";

export interface AgentMetrics {
  /** The agent's registry; other components add their metrics to it. */
  readonly registry: Registry;
  /** Open console connections (authenticated or not). */
  readonly consoleConnections: Gauge;
  /**
   * Connections to the console's port without a valid token yet, by `stage`: `handshake` (no HTTP
   * request yet), `token_review` (the upgrade's `Authorization` header is being checked) or
   * `auth_frame` (a websocket that has not yet sent a valid `auth` frame).
   */
  readonly consoleUnauthenticated: Gauge;
  /** Console requests by `op` and `result` (`ok` or an error code). */
  readonly consoleRequests: Counter;
  /** Console connections refused or dropped, by `reason`. */
  readonly consoleRejections: Counter;
  /** notAfter of the console's TLS certificate, in Unix seconds; set at start and on reload. */
  readonly certificateExpiry: Gauge;
  /** 1 while the agent holds a connection to the node's mounter, else 0 (read at each scrape). */
  readonly mounterConnected: Gauge;
  /** Sets what `mounterConnected` reads at each scrape (`MounterLink.connected`). */
  watchMounter(connected: () => boolean): void;
}

export function createAgentMetrics(registry = new Registry()): AgentMetrics {
  const consoleConnections = registry.gauge(
    "dynamic_volumes_console_connections",
    "Open websocket console connections.",
  );
  consoleConnections.set({}, 0);
  let mounterIsConnected: () => boolean = () => false;
  const mounterConnected = registry.gauge(
    "dynamic_volumes_agent_mounter_connected",
    "1 while the agent is connected to the node's mounter, 0 otherwise (the agent is then not ready).",
  );
  mounterConnected.set({}, 0);
  // Read when scraped, so the value is never stale: prom-client calls `collect` before rendering.
  (mounterConnected as unknown as { collect: () => void }).collect = () =>
    mounterConnected.set({}, mounterIsConnected() ? 1 : 0);
  return {
    registry,
    consoleConnections,
    consoleUnauthenticated: registry.gauge(
      "dynamic_volumes_console_unauthenticated_connections",
      "Connections to the console's port that have not authenticated yet, by stage (handshake, token_review, auth_frame).",
      ["stage"],
    ),
    consoleRequests: registry.counter(
      "dynamic_volumes_console_requests_total",
      "Console requests by op and result (ok or an error code).",
      ["op", "result"],
    ),
    consoleRejections: registry.counter(
      "dynamic_volumes_console_rejections_total",
      "Console connections refused at upgrade or dropped, by reason.",
      ["reason"],
    ),
    certificateExpiry: registry.gauge(
      "dynamic_volumes_agent_certificate_expiry_timestamp_seconds",
      "notAfter of the TLS certificate the agent's console serves now, in Unix seconds (updated on reload).",
    ),
    mounterConnected,
    watchMounter: (connected) => {
      mounterIsConnected = connected;
    },
  };
}

export interface AgentHttpOptions {
  readonly registry: Registry;
  /** False while starting or stopping; drives `/readyz`. */
  readonly isReady: () => boolean;
}

export function createAgentHttpHandler(opts: AgentHttpOptions): RequestListener {
  return (req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const send = (status: number, type: string, body: string): void => {
      res.writeHead(status, { "content-type": type, "cache-control": "no-store" });
      res.end(req.method === "HEAD" ? undefined : body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("allow", "GET, HEAD");
      send(405, "text/plain", "method not allowed\n");
      return;
    }
    switch (path) {
      case "/healthz":
        send(200, "text/plain", "ok\n");
        return;
      case "/readyz": {
        const ready = opts.isReady();
        send(ready ? 200 : 503, "text/plain", ready ? "ok\n" : "not ready\n");
        return;
      }
      case "/metrics":
        opts.registry.render().then(
          (text) => send(200, METRICS_CONTENT_TYPE, text),
          () => send(500, "text/plain", "internal error; see the agent's log\n"),
        );
        return;
      default:
        send(404, "text/plain", "not found; the console is a websocket at /console\n");
    }
  };
}
