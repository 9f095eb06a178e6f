/**
 * Child process of the webhook benchmark (spawned by `bench/webhook.ts`, never run by hand):
 *
 *     node --import tsx bench/webhook-server.ts <webhook|baseline> <certFile> <keyFile>
 *
 * Both modes serve through the same `startHttpsServer` on 127.0.0.1 and an ephemeral port:
 * - `webhook`: the real `createWebhookApp`, wired as `webhook/main.ts` wires it, except that the
 *   logger is at level "warn" and writes to a sink that discards, so that logging does not dominate;
 * - `baseline`: an express app with the same settings and the same `express.json` parser that
 *   answers every `POST /mutate` with a constant AdmissionReview echoing the uid: allowed, with the
 *   JSONPatch the webhook gives the benchmark's pod, computed once at start-up.
 */
import { createSecretKey, randomBytes } from "node:crypto";
import express, { type Request, type Response } from "express";
import { startHttpsServer } from "../shared/https-server.js";
import { createLogger } from "../shared/logger.js";
import { DEFAULT_MOUNT_PATH, DEFAULT_ROOT } from "../shared/names.js";
import { mintPodId } from "../shared/signing.js";
import { admissionReview, deploymentPod } from "../test/fixtures/pods.js";
import { admitPod } from "../webhook/mutate.js";
import { ADMISSION_API_VERSION, decodeAdmissionReview, findUid, patched } from "../webhook/review.js";
import { createWebhookApp, createWebhookMetrics } from "../webhook/server.js";
import { runChild, serveParent } from "./server-child.js";

/** The parser settings of `createWebhookApp` (3 MiB limit, strict, JSON content types). */
const JSON_TYPES = ["application/json", "application/*+json"];
const MAX_BODY_BYTES = 3 * 1024 * 1024;

/**
 * The base64 JSONPatch the webhook gives the benchmark's pod, computed once: the baseline sends it
 * with every reply, so that both servers write the same bytes and the client does the same work to
 * read them; what remains different is the mutation logic.
 */
function constantPatch(): string {
  const mutate = { root: DEFAULT_ROOT, defaultMountPath: DEFAULT_MOUNT_PATH, signingKey: randomBytes(32) };
  const request = decodeAdmissionReview(admissionReview(deploymentPod()));
  const result = admitPod(request, mutate, mintPodId);
  if (result.kind !== "patched") throw new Error(`the benchmark's pod was ${result.kind}, not patched`);
  const patch = patched(request.uid, result.patch).response.patch;
  if (patch === undefined) throw new Error("the benchmark's pod got an empty patch");
  return patch;
}

function createBaselineApp(): express.Express {
  const patch = constantPatch();
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);
  app.post(
    "/mutate",
    express.json({ limit: MAX_BODY_BYTES, strict: true, type: JSON_TYPES }),
    (req: Request, res: Response) => {
      // Written as the webhook writes its replies (one string to `end`), not through `res.json`.
      const text = JSON.stringify({
        apiVersion: ADMISSION_API_VERSION,
        kind: "AdmissionReview",
        response: { uid: findUid(req.body) ?? "", allowed: true, patchType: "JSONPatch", patch },
      });
      res.statusCode = 200;
      res.setHeader("Content-Type", "application/json; charset=utf-8");
      res.setHeader("Content-Length", Buffer.byteLength(text, "utf8"));
      res.end(text);
    },
  );
  return app;
}

function createBenchWebhookApp(): express.Express {
  // Discards every line; "warn" keeps the per-request info lines from even being formatted.
  const sink = { write: (_line: string): void => undefined };
  const log = createLogger({ name: "dynamic-volumes-webhook", level: "warn" }, sink).child({
    component: "webhook",
  });
  return createWebhookApp({
    // A KeyObject, as `readSigningKey` gives `webhook/main.ts`.
    mutate: {
      root: DEFAULT_ROOT,
      defaultMountPath: DEFAULT_MOUNT_PATH,
      signingKey: createSecretKey(randomBytes(32)),
    },
    log,
    metrics: createWebhookMetrics(),
    mintId: mintPodId,
  });
}

async function main(argv: readonly string[]): Promise<void> {
  const [mode, certFile, keyFile] = argv;
  if ((mode !== "webhook" && mode !== "baseline") || certFile === undefined || keyFile === undefined)
    throw new Error("usage: webhook-server.ts <webhook|baseline> <certFile> <keyFile>");
  if (process.send === undefined) throw new Error("webhook-server.ts runs as a child with an IPC channel");

  const app = mode === "webhook" ? createBenchWebhookApp() : createBaselineApp();
  // The server's own warnings (unreadable TLS files) still reach stderr.
  const log = createLogger({ name: `bench-${mode}`, level: "warn" }, process.stderr);
  const server = await startHttpsServer({
    handler: app,
    tls: { certFile, keyFile },
    host: "127.0.0.1",
    port: 0,
    log,
  });

  serveParent(server.port, () => server.close(1_000));
}

runChild("bench server", () => main(process.argv.slice(2)));
