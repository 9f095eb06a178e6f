import { expect } from "chai";
import { X509Certificate } from "node:crypto";
import { rmSync, writeFileSync } from "node:fs";
import { Agent } from "node:https";
import type { RequestListener } from "node:http";
import { generateCa } from "../../../certs/generate.js";
import { startHttpsServer, type RunningHttpsServer } from "../../../shared/https-server.js";
import { createLogger } from "../../../shared/logger.js";
import { ANNOTATIONS } from "../../../shared/names.js";
import { mintPodId, verifyPodId } from "../../../shared/signing.js";
import { createWebhookApp, createWebhookMetrics } from "../../../webhook/server.js";
import { admissionReview, deploymentPod, type Json } from "../../fixtures/pods.js";
import { httpsRequest } from "../../support/https-client.js";
import { applyJsonPatch, validatePod } from "../../support/patch.js";
import { TEST_SERVER_NAME, makeServing, makeTestPki, type TestPki } from "../../support/tls.js";

const key = Buffer.from("integration-signing-key-0123456789");
const silent = createLogger({ name: "test", level: "silent" });

describe("webhook over HTTPS", function () {
  let pki: TestPki;
  let srv: RunningHttpsServer;
  const metrics = createWebhookMetrics();
  const app = createWebhookApp({
    mutate: { root: "/var/lib/dynamic-volumes", defaultMountPath: "/datasets", signingKey: key },
    log: silent,
    metrics,
    mintId: mintPodId,
    maxBodyBytes: 64 * 1024,
  });

  before(async () => {
    pki = makeTestPki();
    srv = await startHttpsServer({
      handler: app,
      tls: { certFile: pki.certFile, keyFile: pki.keyFile },
      host: "127.0.0.1",
      port: 0,
      log: silent,
      pollIntervalMs: 200,
    });
  });

  after(async () => {
    await srv?.close(1000);
    rmSync(pki.dir, { recursive: true, force: true });
  });

  const post = (body: string | Buffer, contentType?: string) =>
    httpsRequest({
      port: srv.port,
      path: "/mutate",
      ca: pki.ca.certPem,
      servername: TEST_SERVER_NAME,
      body,
      ...(contentType ? { contentType } : {}),
    });

  describe("a client that trusts only the generated CA", () => {
    it("gets a patch that applies, validates as a Pod, and echoes the uid", async () => {
      const review = admissionReview(deploymentPod());
      const r = await post(JSON.stringify(review));
      expect(r.status).to.equal(200);
      const resp = (JSON.parse(r.text) as { response: Json }).response;
      expect(resp).to.include({
        uid: "705ab4f5-6393-11e8-b7cc-42010a800002",
        allowed: true,
        patchType: "JSONPatch",
      });
      const patch = JSON.parse(Buffer.from(resp.patch as string, "base64").toString("utf8")) as [];
      const pod = applyJsonPatch((review.request as Json).object, patch) as {
        metadata: { annotations: Record<string, string> };
      };
      validatePod(pod);
      const a = pod.metadata.annotations;
      expect(verifyPodId(key, "team-a", a[ANNOTATIONS.id]!, a[ANNOTATIONS.idSignature]!)).to.be.true;
      expect(resp.warnings).to.be.an("array").that.is.not.empty;
    });

    it("answers a dryRun request with the same kind of patch", async () => {
      const r = await post(JSON.stringify(admissionReview(deploymentPod(), { dryRun: true })));
      const resp = (JSON.parse(r.text) as { response: Json }).response;
      expect(resp.patchType).to.equal("JSONPatch");
    });

    it("is refused by a client that does not trust the CA (negative control)", async () => {
      const other = generateCa({ commonName: "someone else" });
      let err: unknown;
      try {
        await httpsRequest({
          port: srv.port,
          path: "/healthz",
          ca: other.certPem,
          servername: TEST_SERVER_NAME,
        });
      } catch (e) {
        err = e;
      }
      expect((err as NodeJS.ErrnoException)?.code).to.match(/UNABLE_TO_VERIFY|SELF_SIGNED|CERT/);
    });
  });

  describe("malformed input", () => {
    const cases: Array<[string, () => string | Buffer, number, RegExp, string | undefined, string?]> = [
      ["not JSON", () => "{not json", 400, /not valid JSON/, ""],
      ["a JSON string", () => '"hello"', 400, /not valid JSON|JSON object/, ""],
      [
        "wrong apiVersion",
        () => JSON.stringify({ ...admissionReview(deploymentPod()), apiVersion: "v1" }),
        400,
        /apiVersion/,
        "705ab4f5-6393-11e8-b7cc-42010a800002",
      ],
      [
        "wrong kind",
        () => JSON.stringify({ ...admissionReview(deploymentPod()), kind: "Pod" }),
        400,
        /kind/,
        "705ab4f5-6393-11e8-b7cc-42010a800002",
      ],
      [
        "missing request",
        () => JSON.stringify({ apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview" }),
        400,
        /request is missing/,
        "",
      ],
      [
        "missing object",
        () => JSON.stringify(admissionReview(undefined)),
        400,
        /object is missing/,
        "705ab4f5-6393-11e8-b7cc-42010a800002",
      ],
      [
        "body over the limit",
        () => JSON.stringify(admissionReview(deploymentPod({ big: "x".repeat(100_000) }))),
        413,
        /larger than/,
        "",
      ],
      ["wrong content type", () => "a=b", 415, /Content-Type/, "", "application/x-www-form-urlencoded"],
      ["empty body", () => "", 400, /malformed AdmissionReview: apiVersion/, ""],
      [
        "JSON parameters in the content type",
        () => "{",
        400,
        /not valid JSON/,
        "",
        "application/json; charset=utf-8",
      ],
    ];
    for (const [label, body, status, message, uid, type] of cases)
      it(`[error] ${label}: HTTP ${status} with a clear message and no stack trace`, async () => {
        const r = await post(body(), type);
        expect(r.status).to.equal(status);
        const resp = (
          JSON.parse(r.text) as { response: { uid: string; allowed: boolean; status: { message: string } } }
        ).response;
        expect(resp.allowed).to.equal(false);
        expect(resp.status.message).to.match(message);
        expect(resp.uid).to.equal(uid);
        expect(r.text).to.not.match(/\.ts:\d+|node_modules|at [A-Za-z]+ \(/);
      });

    it("keeps serving after all of them", async () => {
      const r = await post(JSON.stringify(admissionReview(deploymentPod())));
      expect(r.status).to.equal(200);
    });
  });

  describe("probes and metrics", () => {
    it("serves /healthz and /readyz", async () => {
      for (const path of ["/healthz", "/readyz"]) {
        const r = await httpsRequest({ port: srv.port, path, ca: pki.ca.certPem });
        expect(r.status).to.equal(200);
      }
    });

    it("counts requests by result and records latency", async () => {
      const r = await httpsRequest({ port: srv.port, path: "/metrics", ca: pki.ca.certPem });
      expect(r.headers["content-type"]).to.match(/text\/plain; version=0\.0\.4/);
      const patchedCount = Number(
        /dynamic_volumes_webhook_requests_total\{result="patched"\} (\d+)/.exec(r.text)?.[1],
      );
      expect(patchedCount)
        .to.equal(metrics.requests.get({ result: "patched" }))
        .and.to.be.greaterThan(1);
      expect(r.text).to.match(/dynamic_volumes_webhook_requests_total\{result="bad_request"\} [1-9]/);
      expect(r.text).to.match(/dynamic_volumes_webhook_request_duration_seconds_count [1-9]/);
    });

    it("answers unknown paths with 404", async () => {
      expect((await httpsRequest({ port: srv.port, path: "/nope", ca: pki.ca.certPem })).status).to.equal(
        404,
      );
    });
  });

  describe("certificate reload", () => {
    it("serves a new certificate to new connections after the files change, keeping open ones", async () => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      const before = await httpsRequest({ port: srv.port, path: "/healthz", ca: pki.ca.certPem, agent });
      const reloadsBefore = srv.reloads();
      const next = makeServing(pki.ca);
      writeFileSync(pki.keyFile, next.keyPem);
      writeFileSync(pki.certFile, next.certPem);
      const deadline = Date.now() + 5000;
      while (srv.reloads() === reloadsBefore && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 50));
      expect(srv.reloads()).to.be.greaterThan(reloadsBefore);
      // The kept-alive connection opened before the reload is still served.
      const sameConn = await httpsRequest({ port: srv.port, path: "/healthz", ca: pki.ca.certPem, agent });
      expect(sameConn.status).to.equal(200);
      expect(sameConn.reusedSocket, "the open connection was kept").to.equal(true);
      const fresh = await httpsRequest({ port: srv.port, path: "/healthz", ca: pki.ca.certPem });
      expect(fresh.fingerprint).to.equal(new X509Certificate(next.certPem).fingerprint256);
      expect(fresh.fingerprint).to.not.equal(before.fingerprint);
      agent.destroy();
    });

    it("keeps the current certificate when the new files are not a matching pair", async () => {
      const current = (await httpsRequest({ port: srv.port, path: "/healthz", ca: pki.ca.certPem }))
        .fingerprint;
      const other = makeServing(pki.ca);
      writeFileSync(pki.certFile, other.certPem); // key left as is: mismatched pair
      expect(srv.reload()).to.equal(false);
      const r = await httpsRequest({ port: srv.port, path: "/healthz", ca: pki.ca.certPem });
      expect(r.status).to.equal(200);
      expect(r.fingerprint).to.equal(current);
      writeFileSync(pki.keyFile, other.keyPem);
      expect(srv.reload()).to.equal(true);
    });
  });
});

describe("graceful shutdown", () => {
  it("finishes in-flight requests, then refuses new connections", async () => {
    const pki = makeTestPki();
    const app: RequestListener = (_req, res) => {
      setTimeout(() => res.end("done"), 300);
    };
    const srv = await startHttpsServer({
      handler: app,
      tls: { certFile: pki.certFile, keyFile: pki.keyFile },
      host: "127.0.0.1",
      port: 0,
      log: silent,
    });
    try {
      const inflight = httpsRequest({ port: srv.port, path: "/slow", ca: pki.ca.certPem });
      await new Promise((r) => setTimeout(r, 100));
      const closed = srv.close(5000);
      const r = await inflight;
      expect(r.status).to.equal(200);
      expect(r.text).to.equal("done");
      await closed;
      let refused: unknown;
      try {
        await httpsRequest({ port: srv.port, path: "/", ca: pki.ca.certPem });
      } catch (e) {
        refused = e;
      }
      expect((refused as NodeJS.ErrnoException)?.code).to.equal("ECONNREFUSED");
    } finally {
      await srv.close(100);
      rmSync(pki.dir, { recursive: true, force: true });
    }
  });
});
