/**
 * The webhook's express app: `POST /mutate` plus `/healthz`, `/readyz` and `/metrics`. It builds the
 * app and does not listen; `main.ts` puts it behind HTTPS.
 */
import express, { type NextFunction, type Request, type Response } from "express";
import { isAppError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import {
  METRICS_CONTENT_TYPE,
  Registry,
  type Counter,
  type Gauge,
  type Histogram,
} from "../shared/metrics.js";
import { admitPod, type MutateConfig, type MutateResult } from "./mutate.js";
import {
  MAX_JSON_DEPTH,
  allowed,
  decodeAdmissionReview,
  denied,
  errored,
  findUid,
  nestsDeeperThan,
  patched,
} from "./review.js";

export type AdmissionResult = MutateResult["kind"] | "bad_request" | "error";

const RESULTS: readonly AdmissionResult[] = [
  "patched",
  "unchanged",
  "skipped",
  "denied",
  "bad_request",
  "error",
];

export interface WebhookMetrics {
  readonly registry: Registry;
  readonly requests: Counter;
  readonly duration: Histogram;
  /** Requests answered with 500: a bug or an unexpected failure, never the client's doing. */
  readonly internalErrors: Counter;
  /** notAfter of the serving certificate, in Unix seconds; set by `main.ts` at start and on reload. */
  readonly certificateExpiry: Gauge;
}

export function createWebhookMetrics(registry = new Registry()): WebhookMetrics {
  const internalErrors = registry.counter(
    "dynamic_volumes_webhook_internal_errors_total",
    "Requests answered with HTTP 500 (an internal error; the webhook's log has the details).",
  );
  internalErrors.inc(0);
  return {
    registry,
    requests: registry.counter(
      "dynamic_volumes_webhook_requests_total",
      "AdmissionReview requests by result: patched, unchanged, skipped, denied, bad_request, error.",
      ["result"],
    ),
    duration: registry.histogram(
      "dynamic_volumes_webhook_request_duration_seconds",
      "Time to answer one AdmissionReview, from body parsed to reply written.",
    ),
    internalErrors,
    certificateExpiry: registry.gauge(
      "dynamic_volumes_webhook_certificate_expiry_timestamp_seconds",
      "notAfter of the TLS certificate the webhook serves now, in Unix seconds (updated on reload).",
    ),
  };
}

export interface WebhookAppOptions {
  readonly mutate: MutateConfig;
  readonly log: Logger;
  readonly metrics: WebhookMetrics;
  readonly mintId: () => string;
  /** Largest accepted body in bytes. Default 3 MiB, the API server's own request limit. */
  readonly maxBodyBytes?: number;
  /** False while starting or shutting down; drives `/readyz`. */
  readonly isReady?: () => boolean;
}

const JSON_TYPES = ["application/json", "application/*+json"];

/** body-parser's hook on the raw body, before the parse: an error thrown here carries its status. */
function checkRawBody(_req: unknown, _res: unknown, body: Buffer, encoding: string | null): void {
  // body-parser lets any "utf-" charset through; the depth scan reads UTF-8 bytes only.
  if (encoding !== null && encoding !== "utf-8")
    throw Object.assign(new Error(`charset ${encoding}`), { status: 415, type: "charset.unsupported" });
  // JSON.parse and every walk over its result take time in proportion to the nesting, all of it
  // on the event loop that serves every other review: refuse a deep body before parsing it.
  if (nestsDeeperThan(body, MAX_JSON_DEPTH))
    throw Object.assign(new Error("nested too deep"), { status: 400, type: "entity.too.deep" });
}

export function createWebhookApp(opts: WebhookAppOptions): express.Express {
  const { log, metrics } = opts;
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);

  const maxBodyBytes = opts.maxBodyBytes ?? 3 * 1024 * 1024;
  // Every result's series exists from the start, at 0, as Prometheus advises for rate().
  for (const result of RESULTS) metrics.requests.inc({ result }, 0);
  const count = (result: AdmissionResult, started: number): void => {
    metrics.requests.inc({ result });
    metrics.duration.observe({}, (performance.now() - started) / 1000);
  };

  // A refused request: counted, and answered with a review whose status says why.
  const badRequest = (res: Response, status: number, message: string, started = performance.now()): void => {
    count("bad_request", started);
    sendReview(res, status, errored(undefined, status, message));
  };

  app.post(
    "/mutate",
    express.json({ limit: maxBodyBytes, strict: true, type: JSON_TYPES, verify: checkRawBody }),
    (req: Request, res: Response) => {
      const started = performance.now();
      const body: unknown = req.body;
      // The parser has already matched the content type of every body it parsed; only a request
      // it left alone is looked at again, to say why.
      if (body === undefined) {
        if (req.is(JSON_TYPES) === false) {
          const got = req.get("content-type") ?? "none";
          badRequest(res, 415, `Content-Type must be application/json, got "${got}"`, started);
        } else badRequest(res, 400, "the request has no body; send an AdmissionReview v1 object", started);
        return;
      }
      let request;
      try {
        request = decodeAdmissionReview(body);
      } catch (e) {
        if (!isAppError(e)) throw e;
        const uid = findUid(body);
        count("bad_request", started);
        log.warn({ uid, err: e.message }, "malformed AdmissionReview");
        sendReview(res, 400, errored(uid, 400, `malformed AdmissionReview: ${e.message}`));
        return;
      }
      const result = admitPod(request, opts.mutate, opts.mintId);
      count(result.kind, started);
      // Every line about this review carries its uid. Fields rather than a child logger: a child
      // runs its bindings through the redaction paths even when the line is below the level.
      const review = { uid: request.uid, namespace: request.namespace, pod: podName(request.object) };
      switch (result.kind) {
        case "patched":
          log.info(
            {
              ...review,
              id: result.id,
              mountPath: result.mountPath,
              containers: result.containers,
              dryRun: request.dryRun ?? false,
            },
            "injected",
          );
          sendReview(res, 200, patched(request.uid, result.patch, result.warnings));
          return;
        case "denied":
          log.info({ ...review, reason: result.message }, "denied");
          sendReview(res, 200, denied(request.uid, result.message, result.code, result.warnings));
          return;
        case "unchanged":
        case "skipped":
          log.debug({ ...review, reason: result.reason }, result.kind);
          sendReview(res, 200, allowed(request.uid, result.warnings));
          return;
      }
    },
  );

  app.get("/healthz", (_req, res) => {
    res.type("text/plain").send("ok\n");
  });
  app.get("/readyz", (_req, res) => {
    const ready = opts.isReady?.() ?? true;
    res
      .status(ready ? 200 : 503)
      .type("text/plain")
      .send(ready ? "ok\n" : "not ready\n");
  });
  app.get("/metrics", (_req, res, next) => {
    metrics.registry.render().then((text) => res.type(METRICS_CONTENT_TYPE).send(text), next);
  });

  app.use((_req: Request, res: Response) => {
    res
      .status(404)
      .type("text/plain")
      .send("not found; the webhook serves POST /mutate, /healthz, /readyz, /metrics\n");
  });

  // Body-parser failures and anything unexpected: a clear 4xx/5xx, never a stack trace.
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const e = err as { type?: string; status?: number; message?: string };
    if (e.type === "entity.too.large") {
      badRequest(res, 413, `body is larger than the ${maxBodyBytes} byte limit`);
      return;
    }
    if (e.type === "entity.too.deep") {
      badRequest(
        res,
        400,
        `body nests arrays and objects deeper than ${MAX_JSON_DEPTH} levels; an AdmissionReview never does`,
      );
      return;
    }
    if (e.type === "entity.parse.failed" || e.status === 400) {
      badRequest(res, 400, "body is not valid JSON; expected an AdmissionReview v1 object");
      return;
    }
    if (e.type === "charset.unsupported" || e.type === "encoding.unsupported") {
      badRequest(res, 415, "send the AdmissionReview as uncompressed UTF-8 JSON (application/json)");
      return;
    }
    // Any other client error body-parser raises stays a client error, with its own status.
    if (typeof e.status === "number" && e.status >= 400 && e.status < 500) {
      badRequest(res, e.status, "the request body could not be read");
      return;
    }
    count("error", performance.now());
    metrics.internalErrors.inc();
    log.error({ err, path: req.path }, "unexpected error while handling a request");
    if (!res.headersSent)
      sendReview(res, 500, errored(findUid(req.body), 500, "internal error; see the webhook's log"));
  });

  return app;
}

/**
 * Writes a review as one string. Express's `res.json` turns a body over 1000 characters (every
 * reply with a patch) into a Buffer, which Node then writes apart from the headers: two TLS records
 * per reply, about an eighth of the webhook's CPU under load.
 */
function sendReview(res: Response, status: number, review: unknown): void {
  const text = JSON.stringify(review);
  res.statusCode = status;
  res.setHeader("Content-Type", "application/json; charset=utf-8");
  res.setHeader("Content-Length", Buffer.byteLength(text));
  res.end(text);
}

function podName(obj: unknown): string | undefined {
  const md = (obj as { metadata?: { name?: unknown; generateName?: unknown } } | undefined)?.metadata;
  if (typeof md?.name === "string") return md.name;
  if (typeof md?.generateName === "string") return `${md.generateName}*`;
  return undefined;
}
