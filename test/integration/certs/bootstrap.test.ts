import type { V1ConfigMap, V1MutatingWebhookConfiguration, V1Secret } from "@kubernetes/client-node";
import { expect } from "chai";
import { X509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import {
  CA_CERT_KEY,
  TLS_CERT_KEY,
  TLS_KEY_KEY,
  ensureServingSecret,
  patchCaBundle,
  type EnsureServingSecretOptions,
} from "../../../certs/bootstrap.js";
import { publishCaConfigMap } from "../../../certs/ca-config-map.js";
import { runCli } from "../../../certs/cli.js";
import {
  certExpiry,
  certMatchesCa,
  certSubjectAltNames,
  generateCa,
  generateServingCert,
  keyMatchesCert,
  serviceDnsNames,
} from "../../../certs/generate.js";
import { KubernetesCertsApi } from "../../../certs/kube-client.js";
import {
  ADMISSIONREGISTRATION_V1,
  CORE_V1,
  FakeKubeApiServer,
  type KubeObject,
} from "../../support/kube-api-server.js";
import { appFailure as failure } from "../../support/processes.js";

const NS = "dynamic-volumes";
const SECRET = "dv-webhook-tls";
const SERVICE = "dv-webhook";
const DAY = 24 * 60 * 60 * 1000;
const T0 = new Date("2030-01-01T00:00:00Z");
const SECRETS = { apiPath: CORE_V1, resource: "secrets", namespace: NS };
const MWCS = { apiPath: ADMISSIONREGISTRATION_V1, resource: "mutatingwebhookconfigurations" };
const SECRET_PATH = `/api/v1/namespaces/${NS}/secrets/${SECRET}`;
const MWC_PATH = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/dynamic-volumes";
const CA_CM = "dynamic-volumes-ca";
const CONFIGMAPS = { apiPath: CORE_V1, resource: "configmaps", namespace: NS };
const CA_CM_PATH = `/api/v1/namespaces/${NS}/configmaps/${CA_CM}`;
/** The certificates of a PEM bundle, line endings normalized. */
const pemCerts = (bundle: string): string[] =>
  (bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []).map((p) =>
    p.replace(/\r\n/g, "\n").trim(),
  );

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");
const unb64 = (s: string | undefined) => Buffer.from(s ?? "", "base64").toString("utf8");

/** A valid bundle as another replica would have written it. */
function theirBundle(now = T0, service = SERVICE): Record<string, string> {
  const ca = generateCa({ commonName: "their CA", now });
  const leaf = generateServingCert({ ca, service, namespace: NS, now });
  return {
    [TLS_CERT_KEY]: b64(leaf.certPem),
    [TLS_KEY_KEY]: b64(leaf.keyPem),
    [CA_CERT_KEY]: b64(ca.certPem),
  };
}

function webhook(name: string, caBundle?: string): Record<string, unknown> {
  return {
    name,
    admissionReviewVersions: ["v1"],
    sideEffects: "None",
    clientConfig: {
      service: { name: SERVICE, namespace: NS, path: "/mutate" },
      ...(caBundle ? { caBundle } : {}),
    },
  };
}

describe("certificate bootstrap against the fake API server with the real client", () => {
  let api: FakeKubeApiServer;
  let certsApi: KubernetesCertsApi;
  const opts = (over: Partial<EnsureServingSecretOptions> = {}): EnsureServingSecretOptions => ({
    namespace: NS,
    secretName: SECRET,
    service: SERVICE,
    now: T0,
    ...over,
  });
  const stored = () => api.store.get(SECRETS, SECRET) as (KubeObject & V1Secret) | undefined;

  beforeEach(async () => {
    api = await FakeKubeApiServer.start();
    certsApi = new KubernetesCertsApi(api.kubeConfig());
  });
  afterEach(async () => {
    await api.close();
  });

  describe("ensureServingSecret", () => {
    it("creates a kubernetes.io/tls Secret with tls.crt, tls.key, ca.crt and the CA's key for the Service", async () => {
      const result = await ensureServingSecret(certsApi, opts());
      expect(result.outcome).to.equal("created");

      const secret = stored()!;
      expect(secret.type).to.equal("kubernetes.io/tls");
      expect(Object.keys(secret.data ?? {}).sort()).to.deep.equal(["ca.crt", "ca.key", "tls.crt", "tls.key"]);
      const [cert, key, ca] = [TLS_CERT_KEY, TLS_KEY_KEY, CA_CERT_KEY].map((k) => unb64(secret.data?.[k]));
      expect(keyMatchesCert(ca!, unb64(secret.data?.["ca.key"]))).to.equal(true);
      expect([cert, key, ca]).to.deep.equal([result.certPem, result.keyPem, result.caPem]);
      expect(certSubjectAltNames(cert!).dns).to.deep.equal(serviceDnsNames(SERVICE, NS));
      expect(certMatchesCa(cert!, ca!)).to.equal(true);
      expect(keyMatchesCert(cert!, key!)).to.equal(true);
      expect(new X509Certificate(ca!).ca).to.equal(true);
      expect(result.notAfter.getTime()).to.equal(T0.getTime() + 365 * DAY);
      expect(api.requestsTo("POST", `/api/v1/namespaces/${NS}/secrets`)).to.have.length(1);
    });

    it("reuses a valid Secret unchanged on the next run", async () => {
      const first = await ensureServingSecret(certsApi, opts());
      const rv = stored()!.metadata?.resourceVersion;
      api.requests.length = 0;

      const second = await ensureServingSecret(certsApi, opts({ now: new Date(T0.getTime() + 100 * DAY) }));
      expect(second.outcome).to.equal("reused");
      expect([second.certPem, second.keyPem, second.caPem]).to.deep.equal([
        first.certPem,
        first.keyPem,
        first.caPem,
      ]);
      expect(stored()!.metadata?.resourceVersion).to.equal(rv);
      expect(api.requests.map((r) => `${r.method} ${r.path}`)).to.deep.equal([`GET ${SECRET_PATH}`]);
    });

    it("renews a certificate that expires within renewBefore, replacing every key", async () => {
      const first = await ensureServingSecret(certsApi, opts());
      // Leave something stale behind that must not survive the renewal.
      const secret = stored()!;
      const staleRv = api.store.update(SECRETS, SECRET, {
        ...secret,
        data: { ...secret.data, "ca.key": b64("stale") },
      }).metadata?.resourceVersion;

      const later = new Date(T0.getTime() + 340 * DAY);
      const renewed = await ensureServingSecret(certsApi, opts({ now: later }));
      expect(renewed.outcome).to.equal("renewed");
      expect(renewed.reason).to.match(/within the renewal window/);
      expect(renewed.certPem).to.not.equal(first.certPem);
      expect(renewed.caPem).to.not.equal(first.caPem);
      expect(certExpiry(renewed.certPem).getTime()).to.equal(later.getTime() + 365 * DAY);
      const after = stored()!;
      expect(Object.keys(after.data ?? {}).sort()).to.deep.equal(["ca.crt", "ca.key", "tls.crt", "tls.key"]);
      expect(keyMatchesCert(renewed.caPem, unb64(after.data?.["ca.key"]))).to.equal(true);
      expect(unb64(after.data?.[TLS_CERT_KEY])).to.equal(renewed.certPem);
      const [put] = api.requestsTo("PUT", SECRET_PATH);
      expect((put!.body as V1Secret).metadata?.resourceVersion).to.equal(staleRv);
    });

    it("renews only the serving certificate, under the same CA, when the Secret keeps the CA's key", async () => {
      const first = await ensureServingSecret(certsApi, opts());
      const secret = stored()!;
      const staged = { "next-ca.crt": b64("staged"), "next-ca.key": b64("staged key") };
      api.store.update(SECRETS, SECRET, { ...secret, data: { ...secret.data, ...staged } });
      const later = new Date(T0.getTime() + 340 * DAY);
      const renewed = await ensureServingSecret(certsApi, opts({ now: later }));
      expect(renewed.outcome).to.equal("renewed");
      expect(renewed.caPem).to.equal(first.caPem);
      expect(renewed.certPem).to.not.equal(first.certPem);
      expect(certMatchesCa(renewed.certPem, first.caPem)).to.equal(true);
      // A CA staged for rotation by a running webhook stays staged.
      expect(stored()!.data).to.include(staged);
      expect(stored()!.data?.["ca.key"]).to.equal(secret.data?.["ca.key"]);
    });

    it("keeps a certificate 31 days from expiry and renews it at 29 with the default 30-day window", async () => {
      await ensureServingSecret(certsApi, opts());
      expect(
        (await ensureServingSecret(certsApi, opts({ now: new Date(T0.getTime() + 334 * DAY) }))).outcome,
      ).to.equal("reused");
      expect(
        (await ensureServingSecret(certsApi, opts({ now: new Date(T0.getTime() + 336 * DAY) }))).outcome,
      ).to.equal("renewed");
    });

    const broken: [string, (data: Record<string, string>) => Record<string, string>, RegExp][] = [
      ["tls.key is missing", ({ [TLS_KEY_KEY]: _k, ...rest }) => rest, /missing keys: tls.key/],
      ["ca.crt is empty", (d) => ({ ...d, [CA_CERT_KEY]: "" }), /missing keys: ca.crt/],
      ["tls.crt is not a certificate", (d) => ({ ...d, [TLS_CERT_KEY]: b64("garbage") }), /unparsable/],
      [
        "tls.key belongs to another certificate",
        (d) => ({ ...d, [TLS_KEY_KEY]: theirBundle()[TLS_KEY_KEY]! }),
        /not the key/,
      ],
      [
        "ca.crt did not issue tls.crt",
        (d) => ({ ...d, [CA_CERT_KEY]: theirBundle()[CA_CERT_KEY]! }),
        /not issued by/,
      ],
      [
        "the certificate is for another Service",
        () => theirBundle(T0, "other-svc"),
        /does not cover dv-webhook/,
      ],
    ];
    for (const [what, breakIt, reason] of broken) {
      it(`[renew] when ${what}`, async () => {
        api.store.create(SECRETS, {
          metadata: { name: SECRET, labels: { keep: "me" } },
          type: "kubernetes.io/tls",
          data: breakIt(theirBundle()),
        });
        const result = await ensureServingSecret(certsApi, opts());
        expect(result.outcome).to.equal("renewed");
        expect(result.reason).to.match(reason);
        const after = stored()!;
        expect(after.metadata?.labels).to.include({ keep: "me" });
        expect(certMatchesCa(unb64(after.data?.[TLS_CERT_KEY]), unb64(after.data?.[CA_CERT_KEY]))).to.equal(
          true,
        );
        expect(keyMatchesCert(unb64(after.data?.[TLS_CERT_KEY]), unb64(after.data?.[TLS_KEY_KEY]))).to.equal(
          true,
        );
      });
    }

    it("uses the other replica's Secret when its create loses the race (409)", async () => {
      const theirs = theirBundle();
      api.inject({
        method: "POST",
        path: `/api/v1/namespaces/${NS}/secrets`,
        before: () => {
          api.store.create(SECRETS, { metadata: { name: SECRET }, type: "kubernetes.io/tls", data: theirs });
        },
      });
      const result = await ensureServingSecret(certsApi, opts());
      expect(result.outcome).to.equal("adopted");
      expect(result.certPem).to.equal(unb64(theirs[TLS_CERT_KEY]));
      expect(api.requestsTo("POST", `/api/v1/namespaces/${NS}/secrets`)[0]?.status).to.equal(409);
      expect(stored()!.data).to.deep.equal(theirs);
      expect(api.requestsTo("PUT", SECRET_PATH)).to.have.length(0);
    });

    it("uses the other replica's renewal when its replace loses the race (409 Conflict)", async () => {
      await ensureServingSecret(certsApi, opts());
      const later = new Date(T0.getTime() + 340 * DAY);
      const theirs = theirBundle(later);
      api.inject({
        method: "PUT",
        path: SECRET_PATH,
        before: () => {
          api.store.update(SECRETS, SECRET, { ...stored()!, data: theirs });
        },
      });
      const result = await ensureServingSecret(certsApi, opts({ now: later }));
      expect(result.outcome).to.equal("adopted");
      expect(result.caPem).to.equal(unb64(theirs[CA_CERT_KEY]));
      expect(api.requestsTo("PUT", SECRET_PATH).map((r) => r.status)).to.deep.equal([409]);
    });

    it("[error] refuses a Secret of another type, which cannot be changed in place", async () => {
      api.store.create(SECRETS, { metadata: { name: SECRET }, type: "Opaque", data: { x: b64("y") } });
      const e = await failure(ensureServingSecret(certsApi, opts()));
      expect(e.code).to.equal("Conflict");
      expect(e.message).to.match(/type "Opaque".*delete it or choose another secret name/);
    });

    it("[error] reports Forbidden with the RBAC it needs, and never includes key material", async () => {
      api.inject({
        method: "POST",
        status: 403,
        message: 'secrets is forbidden: User "x" cannot create resource',
      });
      const e = await failure(ensureServingSecret(certsApi, opts()));
      expect(e.code).to.equal("Forbidden");
      expect(e.message).to.match(/creating Secret dynamic-volumes\/dv-webhook-tls: secrets is forbidden/);
      expect(e.message).to.match(/get, create and update on secrets/);
      expect(e.message).to.not.match(/PRIVATE KEY|BEGIN/);
    });
  });

  describe("patchCaBundle", () => {
    const caPem = () => generateCa({ commonName: "bundle CA" }).certPem;

    it("sets caBundle on every webhook with one JSON patch: add where missing, replace where stale", async () => {
      api.store.create(MWCS, {
        metadata: { name: "dynamic-volumes" },
        webhooks: [webhook("pods.dynamic-volumes.io"), webhook("second.dynamic-volumes.io", b64("old CA"))],
      });
      const ca = caPem();
      const result = await patchCaBundle(certsApi, { webhookConfigName: "dynamic-volumes", caPem: ca });
      expect(result).to.deep.equal({
        patched: ["pods.dynamic-volumes.io", "second.dynamic-volumes.io"],
        unchanged: [],
      });

      const patches = api.requestsTo("PATCH", MWC_PATH);
      expect(patches).to.have.length(1);
      expect(patches[0]!.contentType).to.equal("application/json-patch+json");
      const ops = (patches[0]!.body as { op: string; path: string }[]).filter((o) => o.op !== "test");
      expect(ops.map((o) => [o.op, o.path])).to.deep.equal([
        ["add", "/webhooks/0/clientConfig/caBundle"],
        ["replace", "/webhooks/1/clientConfig/caBundle"],
      ]);
      const after = api.store.get(MWCS, "dynamic-volumes") as V1MutatingWebhookConfiguration;
      for (const w of after.webhooks ?? []) {
        expect(unb64(w.clientConfig.caBundle)).to.equal(ca);
        expect(w.clientConfig.service?.name).to.equal(SERVICE);
      }
    });

    it("sends no patch when every caBundle is already the CA", async () => {
      const ca = caPem();
      api.store.create(MWCS, {
        metadata: { name: "dynamic-volumes" },
        webhooks: [webhook("a.dynamic-volumes.io", b64(ca)), webhook("b.dynamic-volumes.io", b64(ca))],
      });
      const rv = api.store.get(MWCS, "dynamic-volumes")?.metadata?.resourceVersion;
      const result = await patchCaBundle(certsApi, { webhookConfigName: "dynamic-volumes", caPem: ca });
      expect(result.patched).to.deep.equal([]);
      expect(result.unchanged).to.deep.equal(["a.dynamic-volumes.io", "b.dynamic-volumes.io"]);
      expect(api.requestsTo("PATCH", MWC_PATH)).to.have.length(0);
      expect(api.store.get(MWCS, "dynamic-volumes")?.metadata?.resourceVersion).to.equal(rv);
    });

    it("patches only the webhooks that differ", async () => {
      const ca = caPem();
      api.store.create(MWCS, {
        metadata: { name: "dynamic-volumes" },
        webhooks: [webhook("a.dynamic-volumes.io", b64(ca)), webhook("b.dynamic-volumes.io")],
      });
      const result = await patchCaBundle(certsApi, { webhookConfigName: "dynamic-volumes", caPem: ca });
      expect(result).to.deep.equal({
        patched: ["b.dynamic-volumes.io"],
        unchanged: ["a.dynamic-volumes.io"],
      });
      const ops = api.requestsTo("PATCH", MWC_PATH)[0]!.body as { op: string; path: string }[];
      expect(ops.every((o) => o.path.startsWith("/webhooks/1/"))).to.equal(true);
    });

    it("recomputes the patch when the webhook list changed under it", async () => {
      api.store.create(MWCS, {
        metadata: { name: "dynamic-volumes" },
        webhooks: [webhook("a.dynamic-volumes.io")],
      });
      api.inject({
        method: "PATCH",
        path: MWC_PATH,
        before: () => {
          const cur = api.store.get(MWCS, "dynamic-volumes")!;
          api.store.update(MWCS, "dynamic-volumes", {
            ...cur,
            webhooks: [webhook("new.dynamic-volumes.io"), ...(cur.webhooks as object[])],
          });
        },
      });
      const ca = caPem();
      const result = await patchCaBundle(certsApi, { webhookConfigName: "dynamic-volumes", caPem: ca });
      expect(api.requestsTo("PATCH", MWC_PATH).map((r) => r.status)).to.deep.equal([422, 200]);
      expect(result.patched).to.deep.equal(["new.dynamic-volumes.io", "a.dynamic-volumes.io"]);
      const after = api.store.get(MWCS, "dynamic-volumes") as V1MutatingWebhookConfiguration;
      expect(after.webhooks?.map((w) => unb64(w.clientConfig.caBundle))).to.deep.equal([ca, ca]);
    });

    it("keeps trusting the previous CA until it expires, so webhook pods not yet restarted keep working", async () => {
      const oldCa = caPem();
      api.store.create(MWCS, {
        metadata: { name: "dynamic-volumes" },
        webhooks: [webhook("pods.dynamic-volumes.io", b64(oldCa))],
      });
      const newCa = caPem();
      const result = await patchCaBundle(certsApi, { webhookConfigName: "dynamic-volumes", caPem: newCa });
      expect(result.patched).to.deep.equal(["pods.dynamic-volumes.io"]);
      const bundle = unb64(
        (api.store.get(MWCS, "dynamic-volumes") as V1MutatingWebhookConfiguration).webhooks![0]!.clientConfig
          .caBundle,
      );
      const certs = bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
      const norm = (p: string) => p.replace(/\r\n/g, "\n").trim();
      expect(certs.map(norm)).to.deep.equal([norm(newCa), norm(oldCa)]);

      // Run again (the next webhook pod's bootstrap): nothing to do.
      const again = await patchCaBundle(certsApi, { webhookConfigName: "dynamic-volumes", caPem: newCa });
      expect(again.unchanged).to.deep.equal(["pods.dynamic-volumes.io"]);
      expect(api.requestsTo("PATCH", MWC_PATH)).to.have.length(1);

      // Once the old CA has expired, the next run drops it.
      const later = new Date(Date.now() + 20 * 365 * 24 * 60 * 60 * 1000);
      const newer = generateCa({ commonName: "newest CA", now: later }).certPem;
      await patchCaBundle(certsApi, { webhookConfigName: "dynamic-volumes", caPem: newer, now: later });
      const final = unb64(
        (api.store.get(MWCS, "dynamic-volumes") as V1MutatingWebhookConfiguration).webhooks![0]!.clientConfig
          .caBundle,
      );
      expect(final).to.equal(newer);
    });

    it("[error] NotFound, naming the configuration, when it does not exist", async () => {
      const e = await failure(patchCaBundle(certsApi, { webhookConfigName: "missing", caPem: caPem() }));
      expect(e.code).to.equal("NotFound");
      expect(e.message).to.match(/MutatingWebhookConfiguration "missing" not found/);
    });
  });

  describe("publishCaConfigMap", () => {
    const storedCm = () => api.store.get(CONFIGMAPS, CA_CM) as (KubeObject & V1ConfigMap) | undefined;
    const newCa = (now = T0) => generateCa({ commonName: "a CA", now }).certPem;

    it("creates the ConfigMap with ca.crt and nothing else, then leaves it alone while the CA is the same", async () => {
      const ca = newCa();
      expect(await publishCaConfigMap(certsApi, { namespace: NS, name: CA_CM, caPem: ca, now: T0 })).to.equal(
        "created",
      );
      const cm = storedCm()!;
      expect(cm.data).to.deep.equal({ "ca.crt": ca });
      expect(cm.binaryData).to.equal(undefined);
      expect(cm.metadata?.labels?.["app.kubernetes.io/managed-by"]).to.equal("dynamic-volumes-certs");
      expect(await publishCaConfigMap(certsApi, { namespace: NS, name: CA_CM, caPem: ca, now: T0 })).to.equal(
        "unchanged",
      );
      expect(api.requestsTo("PUT", CA_CM_PATH)).to.have.length(0);
    });

    it("puts a new CA first and keeps the previous one until it expires, for agents not yet reloaded", async () => {
      const oldCa = newCa();
      await publishCaConfigMap(certsApi, { namespace: NS, name: CA_CM, caPem: oldCa, now: T0 });
      const renewed = newCa();
      expect(
        await publishCaConfigMap(certsApi, { namespace: NS, name: CA_CM, caPem: renewed, now: T0 }),
      ).to.equal("updated");
      expect(pemCerts(storedCm()!.data!["ca.crt"]!)).to.deep.equal(pemCerts(renewed + oldCa));
      const later = new Date(T0.getTime() + 20 * 365 * DAY);
      const newest = newCa(later);
      await publishCaConfigMap(certsApi, { namespace: NS, name: CA_CM, caPem: newest, now: later });
      expect(storedCm()!.data).to.deep.equal({ "ca.crt": newest });
    });

    it("replaces content it did not write: other keys, binaryData", async () => {
      const ca = newCa();
      api.store.create(CONFIGMAPS, {
        metadata: { name: CA_CM, labels: { team: "x" } },
        data: { "ca.crt": ca, "evil.crt": newCa() },
        binaryData: { "ca.der": b64("x") },
      });
      expect(await publishCaConfigMap(certsApi, { namespace: NS, name: CA_CM, caPem: ca, now: T0 })).to.equal(
        "updated",
      );
      const cm = storedCm()!;
      expect(cm.data).to.deep.equal({ "ca.crt": ca });
      expect(cm.binaryData ?? {}).to.deep.equal({});
      expect(cm.metadata?.labels?.team).to.equal("x");
    });

    it("reads again when another replica creates it first (409), and when its replace loses a race", async () => {
      const theirs = newCa();
      const ours = newCa();
      api.inject({
        method: "POST",
        path: `/api/v1/namespaces/${NS}/configmaps`,
        before: () => {
          api.store.create(CONFIGMAPS, { metadata: { name: CA_CM }, data: { "ca.crt": theirs } });
        },
      });
      expect(
        await publishCaConfigMap(certsApi, { namespace: NS, name: CA_CM, caPem: ours, now: T0 }),
      ).to.equal("updated");
      expect(api.requestsTo("POST", `/api/v1/namespaces/${NS}/configmaps`)[0]?.status).to.equal(409);
      expect(pemCerts(storedCm()!.data!["ca.crt"]!)).to.deep.equal(pemCerts(ours + theirs));
      const newest = newCa();
      api.inject({
        method: "PUT",
        path: CA_CM_PATH,
        before: () => {
          api.store.update(CONFIGMAPS, CA_CM, { ...storedCm()!, data: { "ca.crt": newest } });
        },
      });
      expect(
        await publishCaConfigMap(certsApi, { namespace: NS, name: CA_CM, caPem: newest, now: T0 }),
      ).to.equal("unchanged");
      expect(api.requestsTo("PUT", CA_CM_PATH).map((r) => r.status)).to.deep.equal([200, 409]);
    });

    it("[error] reports Forbidden with the RBAC it needs", async () => {
      api.inject({ method: "GET", path: CA_CM_PATH, status: 403 });
      const e = await failure(publishCaConfigMap(certsApi, { namespace: NS, name: CA_CM, caPem: newCa() }));
      expect(e.code).to.equal("Forbidden");
      expect(e.message).to.match(/reading ConfigMap dynamic-volumes\/dynamic-volumes-ca: .*configmaps/);
    });
  });

  describe("certs bootstrap (command line)", () => {
    let dir: string;
    beforeEach(async () => {
      dir = await mkdtemp(join(tmpdir(), "dv-certs-"));
    });
    afterEach(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    const bootstrapArgs = (...more: string[]): string[] => [
      "bootstrap",
      "--namespace",
      NS,
      "--secret-name",
      SECRET,
      "--service",
      SERVICE,
      "--webhook-config",
      "dynamic-volumes",
      ...more,
    ];

    it("creates the Secret, patches the caBundle and writes the PEMs with 0600 for the key", async () => {
      api.store.create(MWCS, {
        metadata: { name: "dynamic-volumes" },
        webhooks: [webhook("a.dynamic-volumes.io")],
      });
      const logs: string[] = [];
      const code = await runCli(bootstrapArgs("--write-dir", join(dir, "out")), {
        env: {},
        stdout: (l) => logs.push(l),
        stderr: (l) => logs.push(l),
        kubeApi: () => certsApi,
        log: pino({ level: "info" }, { write: (l: string) => void logs.push(l) }),
      });
      expect(code, logs.join("\n")).to.equal(0);
      const secret = stored()!;
      const files = Object.fromEntries(
        await Promise.all(
          ["ca.crt", "tls.crt", "tls.key"].map(async (f) => [f, await readFile(join(dir, "out", f), "utf8")]),
        ),
      ) as Record<string, string>;
      expect(files["tls.crt"]).to.equal(unb64(secret.data?.[TLS_CERT_KEY]));
      expect(files["tls.key"]).to.equal(unb64(secret.data?.[TLS_KEY_KEY]));
      expect(files["ca.crt"]).to.equal(unb64(secret.data?.[CA_CERT_KEY]));
      expect((await stat(join(dir, "out", "tls.key"))).mode & 0o777).to.equal(0o600);
      const mwc = api.store.get(MWCS, "dynamic-volumes") as V1MutatingWebhookConfiguration;
      expect(unb64(mwc.webhooks?.[0]?.clientConfig.caBundle)).to.equal(files["ca.crt"]);
      expect(logs.join("\n")).to.not.match(/PRIVATE KEY/);
      expect(logs.join("\n")).to.match(/certificate bootstrap done/);
    });

    const run = async (args: string[], logs: string[]): Promise<number> =>
      runCli(args, {
        env: {},
        stdout: (l) => logs.push(l),
        stderr: (l) => logs.push(l),
        kubeApi: () => certsApi,
        log: pino({ level: "info" }, { write: (l: string) => void logs.push(l) }),
        now: () => T0,
      });

    it("with --ca-config-map, publishes the Secret's CA, and only it, in that ConfigMap", async () => {
      api.store.create(MWCS, {
        metadata: { name: "dynamic-volumes" },
        webhooks: [webhook("a.dynamic-volumes.io")],
      });
      const logs: string[] = [];
      expect(await run(bootstrapArgs("--ca-config-map", CA_CM), logs), logs.join("\n")).to.equal(0);
      const cm = api.store.get(CONFIGMAPS, CA_CM) as (KubeObject & V1ConfigMap) | undefined;
      expect(Object.keys(cm?.data ?? {})).to.deep.equal(["ca.crt"]);
      expect(cm!.data!["ca.crt"]).to.equal(unb64(stored()!.data?.[CA_CERT_KEY]));
      expect(JSON.stringify(cm)).to.not.match(/PRIVATE KEY/);
      expect(logs.join("\n")).to.match(/"caConfigMap":"dynamic-volumes-ca: created"/);
      // Without the flag, no ConfigMap is touched.
      const before = api.requests.length;
      expect(await run(bootstrapArgs(), logs)).to.equal(0);
      expect(api.requests.slice(before).filter((r) => r.path.includes("/configmaps"))).to.deep.equal([]);
    });

    it("a ConfigMap it may not write is a warning: the webhook still starts", async () => {
      api.store.create(MWCS, {
        metadata: { name: "dynamic-volumes" },
        webhooks: [webhook("a.dynamic-volumes.io")],
      });
      api.inject({ path: /\/configmaps/, status: 403, times: Infinity });
      const logs: string[] = [];
      expect(
        await run(bootstrapArgs("--ca-config-map", CA_CM, "--write-dir", join(dir, "out")), logs),
      ).to.equal(0);
      expect(logs.join("\n")).to.match(
        /cannot publish the CA in its ConfigMap; until it is, dvctl needs --ca-file/,
      );
      expect(logs.join("\n")).to.match(/"caConfigMap":"dynamic-volumes-ca: failed"/);
      expect(await readFile(join(dir, "out", "ca.crt"), "utf8")).to.equal(
        unb64(stored()!.data?.[CA_CERT_KEY]),
      );
    });

    it("exits 1 with the reason when the API refuses", async () => {
      const errors: string[] = [];
      api.inject({ method: "GET", status: 401, times: Infinity });
      const code = await runCli(
        [
          "bootstrap",
          "--namespace",
          NS,
          "--secret-name",
          SECRET,
          "--service",
          SERVICE,
          "--webhook-config",
          "x",
        ],
        {
          env: {},
          stdout: () => {},
          stderr: (l) => errors.push(l),
          kubeApi: () => certsApi,
          log: pino({ level: "silent" }),
        },
      );
      expect(code).to.equal(1);
      expect(errors.join("\n")).to.match(
        /reading Secret dynamic-volumes\/dv-webhook-tls: .*credentials were refused/,
      );
    });
  });
});
