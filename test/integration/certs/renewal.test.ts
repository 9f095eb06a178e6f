import type { V1MutatingWebhookConfiguration, V1Secret } from "@kubernetes/client-node";
import { expect } from "chai";
import { X509Certificate } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { Agent, request } from "node:https";
import { tmpdir } from "node:os";
import type { TLSSocket } from "node:tls";
import { join } from "node:path";
import {
  checkCertificates,
  startCertificateRenewal,
  type CertificateRenewalOptions,
  type CheckResult,
  type RenewalLoop,
} from "../../../certs/renewer.js";
import { certMatchesCa, splitPemCertificates } from "../../../certs/generate.js";
import { KubernetesCertsApi } from "../../../certs/kube-client.js";
import { startHttpsServer, type RunningHttpsServer } from "../../../shared/https-server.js";
import { createLogger } from "../../../shared/logger.js";
import { seriesValue } from "../../../shared/metrics.js";
import { mintPodId } from "../../../shared/signing.js";
import { createWebhookApp, createWebhookMetrics, type WebhookMetrics } from "../../../webhook/server.js";
import { admissionReview, deploymentPod } from "../../fixtures/pods.js";
import {
  ADMISSIONREGISTRATION_V1,
  CORE_V1,
  FakeKubeApiServer,
  type KubeObject,
} from "../../support/kube-api-server.js";
import { TEST_NAMESPACE, TEST_SERVER_NAME, TEST_SERVICE } from "../../support/tls.js";

const NS = TEST_NAMESPACE;
const SECRET = "dynamic-volumes-tls";
const MWC = "dynamic-volumes";
const MWCS = { apiPath: ADMISSIONREGISTRATION_V1, resource: "mutatingwebhookconfigurations" };
const SECRETS = { apiPath: CORE_V1, resource: "secrets", namespace: NS };
const key = Buffer.from("renewal-test-signing-key-0123456789");
const silent = createLogger({ name: "test", level: "silent" });
const REVIEW = JSON.stringify(admissionReview(deploymentPod()));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Certificates that live seconds: a serving certificate of 6 s renewed 4 s before it expires, a CA
 * of 16 s for which a successor is staged 8 s before it expires and served 1.5 s later. X.509 times
 * have whole seconds, so each of these is up to a second shorter in practice; the margins leave
 * room for a check that takes a second on a busy machine (two RSA key generations, a few requests).
 */
const FAST = {
  validityMs: 6000,
  renewBeforeMs: 4000,
  caValidityMs: 16_000,
  caRenewBeforeMs: 8000,
  caOverlapMs: 1500,
} as const;

interface Sample {
  readonly ok: boolean;
  readonly error?: string;
  /** The certificate the server presented (PEM), when the handshake got that far. */
  readonly served?: string;
  /** The caBundle of every webhook of the configuration, read just before the request. */
  readonly bundles: readonly string[];
  readonly reusedSocket?: boolean;
  readonly at?: string;
}

/** The caBundle of each webhook of the configuration on the fake API server, as PEM. */
function bundlesOf(api: FakeKubeApiServer): string[] {
  const mwc = api.store.get(MWCS, MWC) as (KubeObject & V1MutatingWebhookConfiguration) | undefined;
  return (mwc?.webhooks ?? []).map((w) =>
    Buffer.from(w.clientConfig.caBundle ?? "", "base64").toString("utf8"),
  );
}

/**
 * POSTs one AdmissionReview to /mutate as the API server would: trusting only the caBundle it reads
 * now (the first webhook's; every webhook's is checked against the served certificate too), on a
 * fresh connection unless an agent is given.
 */
function review(
  port: number,
  api: FakeKubeApiServer,
  keepAlive?: { agent: Agent; bundles: readonly string[] },
): Promise<Sample> {
  // An agent pools sockets by their TLS options, the CA among them: a kept-alive connection is found
  // again only with the CA it was opened with.
  const bundles = keepAlive?.bundles ?? bundlesOf(api);
  return new Promise((resolve) => {
    let served: string | undefined;
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path: "/mutate",
        method: "POST",
        ca: bundles[0] ?? "",
        servername: TEST_SERVER_NAME,
        agent: keepAlive?.agent ?? false,
        headers: { "content-type": "application/json" },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const body = Buffer.concat(chunks).toString("utf8");
          const ok =
            res.statusCode === 200 &&
            (JSON.parse(body) as { response?: { allowed?: boolean } }).response?.allowed === true;
          resolve({
            ok,
            ...(ok ? {} : { error: `HTTP ${res.statusCode}: ${body.slice(0, 200)}` }),
            ...(served !== undefined ? { served } : {}),
            bundles,
            reusedSocket: req.reusedSocket,
          });
        });
      },
    );
    req.on("socket", (socket) => {
      const record = (): void => {
        const raw = (socket as TLSSocket).getPeerCertificate?.().raw;
        if (raw) served = new X509Certificate(raw).toString();
      };
      if ((socket as TLSSocket).encrypted && !socket.connecting) record();
      else socket.once("secureConnect", record);
    });
    req.on("error", (e: NodeJS.ErrnoException) =>
      resolve({ ok: false, error: `${e.code ?? ""} ${e.message}`, bundles, ...(served ? { served } : {}) }),
    );
    req.end(REVIEW);
  });
}

interface Replica {
  readonly server: RunningHttpsServer;
  readonly metrics: WebhookMetrics;
  readonly dir: string;
  readonly checks: (CheckResult & { at: string })[];
  loop?: RenewalLoop;
}

describe("in-cluster certificate renewal while the webhook runs (certificates that live seconds)", function () {
  this.timeout(90_000);
  let api: FakeKubeApiServer;
  let certsApi: KubernetesCertsApi;
  const replicas: Replica[] = [];

  const renewalOptions = (dir: string, replica: () => Replica | undefined): CertificateRenewalOptions => ({
    namespace: NS,
    secretName: SECRET,
    service: TEST_SERVICE,
    webhookConfigName: MWC,
    extraDnsNames: ["localhost"],
    extraIps: ["127.0.0.1"],
    ...FAST,
    certFile: join(dir, "tls.crt"),
    keyFile: join(dir, "tls.key"),
    reload: () => replica()?.server.reload() ?? false,
    log: silent,
  });

  /** A webhook replica: the init container's check writes its files, then the server starts on them. */
  async function startReplica(): Promise<Replica> {
    const dir = await mkdtemp(join(tmpdir(), "dv-renewal-"));
    // No server yet: the files are written and nothing is reloaded.
    await checkCertificates(
      certsApi,
      renewalOptions(dir, () => undefined),
    );
    const metrics = createWebhookMetrics();
    const server = await startHttpsServer({
      handler: createWebhookApp({
        mutate: { root: "/var/lib/dynamic-volumes", defaultMountPath: "/datasets", signingKey: key },
        log: silent,
        metrics,
        mintId: mintPodId,
      }),
      tls: { certFile: join(dir, "tls.crt"), keyFile: join(dir, "tls.key") },
      host: "127.0.0.1",
      port: 0,
      log: silent,
      // Only the renewer's explicit reload may install a certificate in these tests.
      pollIntervalMs: 3_600_000,
      onCertificate: (notAfter) => metrics.certificateExpiry.set(notAfter),
    });
    const self: Replica = { server, metrics, dir, checks: [] };
    replicas.push(self);
    return self;
  }

  function startLoop(r: Replica): void {
    r.loop = startCertificateRenewal(certsApi, {
      ...renewalOptions(r.dir, () => r),
      intervalMs: 200,
      jitter: 0.2,
      onCheck: (c) => {
        if (!(c instanceof Error)) r.checks.push({ ...c, at: new Date().toISOString() });
      },
    });
  }

  beforeEach(async () => {
    api = await FakeKubeApiServer.start();
    certsApi = new KubernetesCertsApi(api.kubeConfig());
    const webhook = (name: string) => ({
      name,
      admissionReviewVersions: ["v1"],
      sideEffects: "None",
      clientConfig: { service: { name: TEST_SERVICE, namespace: NS, path: "/mutate" } },
    });
    api.store.create(MWCS, {
      apiVersion: "admissionregistration.k8s.io/v1",
      kind: "MutatingWebhookConfiguration",
      metadata: { name: MWC },
      webhooks: [webhook("pods.dynamic-volumes.io"), webhook("ephemeral.dynamic-volumes.io")],
    });
  });

  afterEach(async () => {
    for (const r of replicas.splice(0)) {
      await r.loop?.stop();
      await r.server.close(100);
      await rm(r.dir, { recursive: true, force: true });
    }
    await api.close();
  });

  it("keeps every review succeeding across serving and CA rotations, on two replicas, with the caBundle always verifying what is served", async () => {
    const a = await startReplica();
    const b = await startReplica();
    // A connection opened before any rotation, kept alive across all of them.
    const keepAlive = { agent: new Agent({ keepAlive: true, maxSockets: 1 }), bundles: bundlesOf(api) };
    const first = await review(a.server.port, api, keepAlive);
    expect(first.ok, first.error).to.equal(true);
    expect(first.reusedSocket).to.equal(false);
    const firstCa = splitPemCertificates(bundlesOf(api)[0]!)[0]!;
    startLoop(a);
    startLoop(b);

    const samples: Sample[] = [];
    const servedCerts = new Set<string>();
    const servedCas = new Set<string>();
    const deadline = Date.now() + 60_000;
    let firstCaGone = false;
    let i = 0;
    while (Date.now() < deadline) {
      const r = i++ % 2 === 0 ? a : b;
      const s = {
        ...(await review(r.server.port, api)),
        at: new Date().toISOString(),
        replica: r === a ? "a" : "b",
      };
      samples.push(s);
      if (s.served) {
        servedCerts.add(s.served);
        const ca = splitPemCertificates(s.bundles[0]!).find((c) => certMatchesCa(s.served!, c));
        if (ca) servedCas.add(ca.replace(/\r\n/g, "\n").trim());
      }
      firstCaGone = !bundlesOf(api).some((bundle) =>
        bundle.replace(/\r\n/g, "\n").includes(firstCa.replace(/\r\n/g, "\n").trim()),
      );
      // Two serving rotations under one CA, one CA rotation, and the first CA out of the bundle.
      if (servedCerts.size >= 4 && servedCas.size >= 2 && firstCaGone) break;
      await sleep(50);
    }
    const failed = samples.filter((s) => !s.ok);
    if (process.env.DEBUG_RENEWAL)
      for (const f of failed)
        console.log(
          f.error,
          f.at,
          f.served ? new X509Certificate(f.served).validTo : "no cert",
          f.bundles.map((b) => splitPemCertificates(b).map((c) => new X509Certificate(c).validTo)),
          JSON.stringify([
            ...a.checks.map((c) => ["a", c.at, c.step, c.served]),
            ...b.checks.map((c) => ["b", c.at, c.step, c.served]),
          ]),
        );
    expect(
      failed.map((s) => s.error),
      `${failed.length} of ${samples.length} reviews failed`,
    ).to.deep.equal([]);
    for (const s of samples)
      for (const bundle of s.bundles)
        expect(
          certMatchesCa(s.served!, bundle),
          "the caBundle read before the request verifies the served certificate",
        ).to.equal(true);
    const steps = [...a.checks, ...b.checks].map((c) => c.step);
    expect(steps).to.include.members(["renew-serving", "stage-ca", "promote-ca"]);
    expect(servedCerts.size, "distinct serving certificates seen").to.be.at.least(4);
    expect(servedCas.size, "distinct CAs that signed what was served").to.be.at.least(2);
    expect(firstCaGone, "the first CA left the caBundle once it expired").to.equal(true);

    // The connection opened before the first rotation still works, though its certificate expired.
    const again = await review(a.server.port, api, keepAlive);
    expect(again.ok, again.error).to.equal(true);
    expect(again.reusedSocket).to.equal(true);
    keepAlive.agent.destroy();

    // The expiry gauge follows the reloads: it is the notAfter of what each replica serves now.
    for (const r of [a, b]) {
      const now = await review(r.server.port, api);
      expect(now.ok, now.error).to.equal(true);
      expect(await seriesValue(r.metrics.certificateExpiry)).to.equal(
        Date.parse(new X509Certificate(now.served!).validTo) / 1000,
      );
    }
    // The Secret never carries more than the serving pair, its CA and a staged one; no key is logged
    // because nothing here logs key material (the renewer logs names, times and reasons only).
    const secret = api.store.get(SECRETS, SECRET) as (KubeObject & V1Secret) | undefined;
    expect(
      Object.keys(secret?.data ?? {}).filter(
        (k) => !["tls.crt", "tls.key", "ca.crt", "ca.key", "next-ca.crt", "next-ca.key"].includes(k),
      ),
    ).to.deep.equal([]);
  });

  it("serves a certificate from the Secret only once every caBundle verifies it", async () => {
    const a = await startReplica();
    const before = (await review(a.server.port, api)).served;
    // Another writer replaces the Secret with a bundle of a new CA; the caBundle patch is "accepted"
    // but lost (answered 200 without being applied), so the configuration does not trust that CA.
    const secret = api.store.get(SECRETS, SECRET) as KubeObject & V1Secret;
    api.store.update(SECRETS, SECRET, { ...secret, data: { ...secret.data, "tls.crt": "", "tls.key": "" } });
    const warnings: string[] = [];
    const log = createLogger(
      { name: "test", level: "warn" },
      { write: (l: string) => void warnings.push(l) },
    );
    api.inject({ method: "PATCH", path: /mutatingwebhookconfigurations/, status: 200, times: Infinity });
    const r = await checkCertificates(certsApi, { ...renewalOptions(a.dir, () => a), log });
    expect(r.step).to.equal("regenerated");
    expect(r.served).to.equal("untrusted");
    expect(warnings.join("")).to.match(/not yet verified by every caBundle; still serving the current one/);
    const still = await review(a.server.port, api);
    expect(still.ok, still.error).to.equal(true);
    expect(still.served).to.equal(before);

    // Once the patch goes through, the next check serves it.
    api.clearInjections();
    const next = await checkCertificates(certsApi, { ...renewalOptions(a.dir, () => a), log });
    expect(next.served).to.equal("installed");
    const after = await review(a.server.port, api);
    expect(after.ok, after.error).to.equal(true);
    expect(after.served).to.not.equal(before);
  });

  it("[negative control] without renewal, reviews fail once the serving certificate expires", async () => {
    const a = await startReplica();
    const first = await review(a.server.port, api);
    expect(first.ok, first.error).to.equal(true);
    const deadline = Date.now() + 10_000;
    let last: Sample = first;
    while (last.ok && Date.now() < deadline) {
      await sleep(100);
      last = await review(a.server.port, api);
    }
    expect(last.ok).to.equal(false);
    expect(last.error).to.match(/CERT_HAS_EXPIRED|certificate has expired/);
  });
});
