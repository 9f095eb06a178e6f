import { expect } from "chai";
import { X509Certificate } from "node:crypto";
import { rmSync, writeFileSync } from "node:fs";
import { Agent } from "node:https";
import type { RequestListener } from "node:http";
import { Worker } from "node:worker_threads";
import { generateCa } from "../../../certs/generate.js";
import { startHttpsServer, type RunningHttpsServer } from "../../../shared/https-server.js";
import { createLogger } from "../../../shared/logger.js";
import { ANNOTATIONS, CSI_DRIVER_NAME, VOLUME_NAME } from "../../../shared/names.js";
import { mintPodId, verifyPodId } from "../../../shared/signing.js";
import { MAX_JSON_DEPTH } from "../../../webhook/review.js";
import { createWebhookApp, createWebhookMetrics } from "../../../webhook/server.js";
import { admissionReview, deploymentPod, type Json } from "../../fixtures/pods.js";
import { httpsRequest } from "../../support/https-client.js";
import { applyJsonPatch, validatePod } from "../../support/patch.js";
import { TEST_SERVER_NAME, makeServing, makeTestPki, type TestPki } from "../../support/tls.js";
import { seriesValue } from "../../../shared/metrics.js";

const key = Buffer.from("integration-signing-key-0123456789");
const silent = createLogger({ name: "test", level: "silent" });

/** A review whose arrays and objects nest `depth` levels, the deepest in an unknown field of the spec. */
function nestedReview(depth: number): string {
  const pod = deploymentPod();
  (pod.spec as Json)["x-nested"] = "NESTED";
  // The review, its request, the pod and its spec take the first four levels.
  const arrays = depth - 4;
  return JSON.stringify(admissionReview(pod)).replace('"NESTED"', "[".repeat(arrays) + "]".repeat(arrays));
}

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
      [
        "a charset other than UTF-8",
        () => Buffer.from(JSON.stringify(admissionReview(deploymentPod())), "utf16le"),
        415,
        /UTF-8/,
        "",
        "application/json; charset=utf-16le",
      ],
      [
        `JSON nested deeper than ${MAX_JSON_DEPTH} levels`,
        () => nestedReview(MAX_JSON_DEPTH + 1),
        400,
        new RegExp(`deeper than ${MAX_JSON_DEPTH} levels`),
        "",
      ],
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

    it(`reads a review nested exactly ${MAX_JSON_DEPTH} levels, and brackets inside strings not at all`, async () => {
      expect((await post(nestedReview(MAX_JSON_DEPTH))).status).to.equal(200);
      const brackets = admissionReview(deploymentPod({ "example.com/note": '[{"\\'.repeat(5000) }));
      const r = await post(JSON.stringify(brackets));
      expect(r.status).to.equal(200);
      expect((JSON.parse(r.text) as { response: Json }).response.patchType).to.equal("JSONPatch");
    });
  });

  describe("a pods/ephemeralcontainers UPDATE (kubectl debug)", () => {
    /** A pod as the API server holds it after this webhook's patch. */
    async function injectedPod(): Promise<Json> {
      const review = admissionReview(deploymentPod());
      const r = await post(JSON.stringify(review));
      const resp = (JSON.parse(r.text) as { response: { patch: string } }).response;
      const patch = JSON.parse(Buffer.from(resp.patch, "base64").toString("utf8")) as [];
      return applyJsonPatch((review.request as Json).object, patch) as Json;
    }

    function withDebugger(pod: Json, volumeMounts: Json[]): Json {
      const spec = pod.spec as Json;
      spec.ephemeralContainers = [
        { name: "debugger", image: "busybox:1.36", targetContainerName: "trainer", volumeMounts },
      ];
      return pod;
    }

    const update = (pod: Json) =>
      JSON.stringify(
        admissionReview(pod, { operation: "UPDATE", subResource: "ephemeralcontainers", oldObject: pod }),
      );

    it("[attack] is denied when the ephemeral container mounts dynamic-volumes, with a message and the uid", async () => {
      const pod = withDebugger(await injectedPod(), [
        { name: VOLUME_NAME, mountPath: "/host", readOnly: false },
      ]);
      const r = await post(update(pod));
      expect(r.status).to.equal(200);
      const resp = (
        JSON.parse(r.text) as {
          response: { uid: string; allowed: boolean; status: { code: number; message: string } };
        }
      ).response;
      expect(resp.uid).to.equal("705ab4f5-6393-11e8-b7cc-42010a800002");
      expect(resp.allowed).to.equal(false);
      expect(resp.status.code).to.equal(403);
      expect(resp.status.message)
        .to.include(
          `ephemeral container "debugger" (spec.ephemeralContainers[0]) mounts volume "${VOLUME_NAME}"`,
        )
        .and.include("Remove that volumeMount");
    });

    it("is admitted unchanged when the ephemeral container mounts other volumes", async () => {
      const pod = withDebugger(await injectedPod(), [
        { name: "kube-api-access-7xk2p", mountPath: "/var/run/secrets/kubernetes.io/serviceaccount" },
      ]);
      const r = await post(update(pod));
      expect(r.status).to.equal(200);
      const resp = (JSON.parse(r.text) as { response: Json }).response;
      expect(resp).to.deep.equal({ uid: "705ab4f5-6393-11e8-b7cc-42010a800002", allowed: true });
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
        .to.equal(await seriesValue(metrics.requests, { result: "patched" }))
        .and.to.be.greaterThan(1);
      expect(r.text).to.match(/dynamic_volumes_webhook_requests_total\{result="bad_request"\} [1-9]/);
      expect(r.text).to.match(/dynamic_volumes_webhook_request_duration_seconds_count [1-9]/);
    });

    it("answers an internal failure with 500, counted apart from the clients' mistakes", async () => {
      const failing = createWebhookMetrics();
      const broken = await startHttpsServer({
        handler: createWebhookApp({
          mutate: { root: "/var/lib/dynamic-volumes", defaultMountPath: "/datasets", signingKey: key },
          log: silent,
          metrics: failing,
          mintId: () => {
            throw new Error("entropy source failed");
          },
        }),
        tls: { certFile: pki.certFile, keyFile: pki.keyFile },
        host: "127.0.0.1",
        port: 0,
        log: silent,
      });
      try {
        const r = await httpsRequest({
          port: broken.port,
          path: "/mutate",
          ca: pki.ca.certPem,
          servername: TEST_SERVER_NAME,
          body: JSON.stringify(admissionReview(deploymentPod())),
        });
        expect(r.status).to.equal(500);
        expect(r.text).to.not.contain("entropy source failed");
        const m = await httpsRequest({ port: broken.port, path: "/metrics", ca: pki.ca.certPem });
        expect(m.text).to.match(/^dynamic_volumes_webhook_internal_errors_total 1$/m);
        expect(await seriesValue(failing.requests, { result: "bad_request" })).to.equal(0);
      } finally {
        await broken.close(1000);
      }
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

/**
 * A worker thread that, for each message it gets, posts every one of `bodies` at once, each on its own
 * connection; it answers "written" when the first body has been handed to its socket, then the
 * replies. The bodies' TLS work stays off the event loop under test, as an attacker's would.
 */
const FLOOD_WORKER = `
const https = require("node:https");
const { parentPort, workerData: w } = require("node:worker_threads");
const bodies = w.bodies.map((b) => Buffer.from(b));
const send = (body, written) =>
  new Promise((resolve, reject) => {
    const req = https.request(
      { host: "127.0.0.1", port: w.port, path: "/mutate", method: "POST", ca: w.ca, servername: w.servername,
        agent: false, headers: { "content-type": "application/json", "content-length": body.length } },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c) => (text += c));
        res.on("end", () => resolve({ status: res.statusCode, text: text.slice(0, 400) }));
      },
    );
    req.on("error", reject);
    req.on("finish", written);
    req.end(body);
  });
parentPort.on("message", () => {
  let first = true;
  const written = () => first && !(first = false) && parentPort.postMessage("written");
  Promise.all(bodies.map((b) => send(b, written))).then(
    (replies) => parentPort.postMessage({ replies }),
    (e) => parentPort.postMessage({ error: String(e) }),
  );
});
`;

describe("webhook under a flood of deeply nested bodies", function () {
  this.timeout(120_000);
  const MAX_BODY = 3 * 1024 * 1024;
  const IN_FLIGHT = 8;
  /**
   * How much slower than idle a review may be while the bodies are in flight. Receiving 8 × 3 MiB
   * over TLS costs the event loop about 200 ms on a 2-core machine whatever the bodies hold (about 10
   * to 20 times an idle review); parsing them before the depth bound held it for about 2 s (over 200).
   */
  const MAX_SLOWDOWN = 50;
  let pki: TestPki;
  let srv: RunningHttpsServer;

  before(async () => {
    pki = makeTestPki();
    srv = await startHttpsServer({
      handler: createWebhookApp({
        mutate: { root: "/var/lib/dynamic-volumes", defaultMountPath: "/datasets", signingKey: key },
        log: silent,
        metrics: createWebhookMetrics(),
        mintId: mintPodId,
        maxBodyBytes: MAX_BODY,
      }),
      tls: { certFile: pki.certFile, keyFile: pki.keyFile },
      host: "127.0.0.1",
      port: 0,
      log: silent,
    });
  });

  after(async () => {
    await srv?.close(1000);
    rmSync(pki.dir, { recursive: true, force: true });
  });

  /** Milliseconds for one pod review over a fresh connection, as the API server sends it. */
  async function reviewMs(): Promise<number> {
    const started = performance.now();
    const r = await httpsRequest({
      port: srv.port,
      path: "/mutate",
      ca: pki.ca.certPem,
      servername: TEST_SERVER_NAME,
      body: JSON.stringify(admissionReview(deploymentPod())),
    });
    expect(r.status).to.equal(200);
    return performance.now() - started;
  }

  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

  it(`[attack] answers a pod review sent while ${IN_FLIGHT} bodies of 3 MiB nesting are in flight within ${MAX_SLOWDOWN} times its idle latency`, async () => {
    // Nested arrays filling the limit; and the same behind a long string, which the depth scan reads
    // through before it finds the nesting.
    const half = MAX_BODY / 2 - 8;
    const arrays = "[".repeat(half) + "]".repeat(half);
    const head = '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","pad":"';
    const tail = `","request":${"[".repeat(5000)}${"]".repeat(5000)}}`;
    const padded = head + "x".repeat(MAX_BODY - head.length - tail.length - 8) + tail;
    const bodies = Array.from({ length: IN_FLIGHT }, (_, i) => (i % 2 === 0 ? arrays : padded));
    for (const b of bodies) expect(Buffer.byteLength(b)).to.be.within(MAX_BODY - 64, MAX_BODY);

    for (let i = 0; i < 3; i++) await reviewMs();
    const idle: number[] = [];
    for (let i = 0; i < 9; i++) idle.push(await reviewMs());

    const flood = new Worker(FLOOD_WORKER, {
      eval: true,
      workerData: { port: srv.port, ca: pki.ca.certPem, servername: TEST_SERVER_NAME, bodies },
    });
    const next = (): Promise<unknown> =>
      new Promise((resolve, reject) => {
        flood.once("message", resolve);
        flood.once("error", reject);
      });
    const loaded: number[] = [];
    const replies: Array<{ status: number; text: string }> = [];
    try {
      for (let round = 0; round < 5; round++) {
        flood.postMessage("go");
        // Once a whole hostile body has been sent, the server has it, or soon will, to read.
        expect(await next()).to.equal("written");
        const [ms, done] = await Promise.all([reviewMs(), next()]);
        const { replies: r, error } = done as { replies?: typeof replies; error?: string };
        expect(error, "the flood itself failed").to.equal(undefined);
        loaded.push(ms);
        replies.push(...r!);
      }
    } finally {
      await flood.terminate();
    }

    const summary = `idle ${idle.map((ms) => ms.toFixed(1)).join(", ")} ms; with the bodies in flight ${loaded.map((ms) => ms.toFixed(1)).join(", ")} ms`;
    expect(median(loaded) / median(idle), summary).to.be.at.most(MAX_SLOWDOWN);
    expect(replies).to.have.length(5 * IN_FLIGHT);
    for (const r of replies) {
      expect(r.status, r.text).to.equal(400);
      expect(r.text).to.include(`deeper than ${MAX_JSON_DEPTH} levels`);
    }
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

describe("webhook over HTTPS in csi mode (--volume-mode csi)", function () {
  let pki: TestPki;
  let srv: RunningHttpsServer;
  const app = createWebhookApp({
    mutate: { root: "/var/lib/dynamic-volumes", defaultMountPath: "/datasets", volumeMode: "csi" },
    log: silent,
    metrics: createWebhookMetrics(),
    mintId: mintPodId,
  });

  before(async () => {
    pki = makeTestPki();
    srv = await startHttpsServer({
      handler: app,
      tls: { certFile: pki.certFile, keyFile: pki.keyFile },
      host: "127.0.0.1",
      port: 0,
      log: silent,
    });
  });

  after(async () => {
    await srv?.close(1000);
    rmSync(pki.dir, { recursive: true, force: true });
  });

  const review = async (overrides: Json = {}, pod: Json = deploymentPod()): Promise<Json> => {
    const r = await httpsRequest({
      port: srv.port,
      path: "/mutate",
      ca: pki.ca.certPem,
      servername: TEST_SERVER_NAME,
      body: JSON.stringify(admissionReview(pod, overrides)),
    });
    expect(r.status).to.equal(200);
    return (JSON.parse(r.text) as { response: Json }).response;
  };
  const patchOf = (resp: Json): unknown[] =>
    JSON.parse(Buffer.from(resp.patch as string, "base64").toString("utf8")) as unknown[];

  it("patches in the CSI volume, without a signing key, id or Pod Security warning; the pod validates", async () => {
    const resp = await review();
    expect(resp).to.include({ allowed: true, patchType: "JSONPatch" });
    expect(resp.warnings ?? []).to.deep.equal([]);
    const pod = applyJsonPatch(deploymentPod(), patchOf(resp) as []) as {
      metadata: { annotations: Record<string, string> };
      spec: { volumes: Json[] };
    };
    validatePod(pod);
    expect(pod.spec.volumes.find((v) => v.name === VOLUME_NAME)).to.deep.equal({
      name: VOLUME_NAME,
      csi: { driver: CSI_DRIVER_NAME, readOnly: true },
    });
    expect(pod.metadata.annotations).to.not.have.property(ANNOTATIONS.id);
    const again = await review({}, pod);
    expect(again).to.include({ allowed: true });
    expect(again.patch).to.equal(undefined);
  });

  it("answers a dryRun request with the very same patch", async () => {
    const [real, dry] = await Promise.all([review(), review({ dryRun: true })]);
    expect(patchOf(dry)).to.deep.equal(patchOf(real));
  });

  it("[attack] denies a user volume of csi.dynamic-volumes.io with 403 and a message", async () => {
    const pod = deploymentPod();
    (pod.spec as { volumes: Json[] }).volumes.push({
      name: "mine",
      csi: { driver: CSI_DRIVER_NAME, readOnly: false },
    });
    const resp = await review({}, pod);
    expect(resp.allowed).to.equal(false);
    expect((resp.status as Json).code).to.equal(403);
    expect((resp.status as Json).message).to.match(
      /volume "mine" uses the CSI driver csi\.dynamic-volumes\.io/,
    );
  });
});
