import { expect } from "chai";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { V1MutatingWebhookConfiguration, V1Secret } from "@kubernetes/client-node";
import { certMatchesCa } from "../../../certs/generate.js";
import { admissionReview, deploymentPod } from "../../fixtures/pods.js";
import { httpsRequest } from "../../support/https-client.js";
import {
  ADMISSIONREGISTRATION_V1,
  CORE_V1,
  FakeKubeApiServer,
  type KubeObject,
} from "../../support/kube-api-server.js";
import { TEST_NAMESPACE, TEST_SERVER_NAME, makeTestPki, type TestPki } from "../../support/tls.js";

const MAIN = ["--import", "tsx", "webhook/main.ts"];
const NOBODY = 65534;

describe("webhook main", function () {
  this.timeout(30_000);
  let pki: TestPki;
  let keyFile: string;
  let child: ChildProcess | undefined;

  before(() => {
    pki = makeTestPki();
    keyFile = join(pki.dir, "signing-key");
    writeFileSync(keyFile, "  main-test-signing-key-0123456789\n");
    // Readable by the unprivileged user the process runs as, like a Secret volume with fsGroup.
    chmodSync(pki.dir, 0o755);
    for (const f of [pki.keyFile, keyFile]) chmodSync(f, 0o644);
  });

  after(() => {
    child?.kill("SIGKILL");
    rmSync(pki.dir, { recursive: true, force: true });
  });

  it("exits 2 with a message naming the flag and the variable when a required flag is missing", () => {
    const r = spawnSync(process.execPath, [...MAIN, "--tls-cert-file", pki.certFile], { encoding: "utf8" });
    expect(r.status).to.equal(2);
    expect(r.stderr).to.match(/--tls-key-file \(env DV_TLS_KEY_FILE\) is required/);
  });

  it("exits 2 on a bad --listen value and on an unknown flag", () => {
    const common = [
      "--tls-cert-file",
      pki.certFile,
      "--tls-key-file",
      pki.keyFile,
      "--signing-key-file",
      keyFile,
    ];
    const bad = spawnSync(process.execPath, [...MAIN, ...common, "--listen", "nowhere"], {
      encoding: "utf8",
    });
    expect(bad.status).to.equal(2);
    expect(bad.stderr).to.match(/--listen \(env DV_LISTEN\): "nowhere" is not HOST:PORT/);
    const unknown = spawnSync(process.execPath, [...MAIN, ...common, "--bogus", "1"], { encoding: "utf8" });
    expect(unknown.status).to.equal(2);
    expect(unknown.stderr).to.match(/bogus/);
  });

  it("runs as an unprivileged user, takes its flags from the environment, serves, and drains on SIGTERM", async () => {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const env = {
      ...process.env,
      DV_LISTEN: `127.0.0.1:${port}`,
      DV_TLS_CERT_FILE: pki.certFile,
      DV_TLS_KEY_FILE: pki.keyFile,
      DV_SIGNING_KEY_FILE: keyFile,
      DV_LOG_LEVEL: "info",
    };
    const canDrop = spawnSync("setpriv", ["--help"]).status === 0 && process.getuid?.() === 0;
    const [cmd, args] = canDrop
      ? [
          "setpriv",
          ["--reuid", String(NOBODY), "--regid", String(NOBODY), "--clear-groups", process.execPath, ...MAIN],
        ]
      : [process.execPath, MAIN];
    const proc = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    child = proc;
    let out = "";
    proc.stdout.on("data", (d: Buffer) => (out += d.toString()));
    proc.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const deadline = Date.now() + 20_000;
    while (!out.includes("serving AdmissionReview") && Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`webhook exited early: ${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(out).to.include("serving AdmissionReview");
    if (canDrop) {
      const status = spawnSync("ps", ["-o", "uid=", "-p", String(proc.pid)], {
        encoding: "utf8",
      }).stdout.trim();
      expect(Number(status)).to.equal(NOBODY);
    }
    const r = await httpsRequest({
      port,
      path: "/mutate",
      ca: pki.ca.certPem,
      servername: TEST_SERVER_NAME,
      body: JSON.stringify(admissionReview(deploymentPod())),
    });
    expect(r.status).to.equal(200);
    expect(JSON.parse(r.text)).to.have.nested.property("response.patchType", "JSONPatch");
    // The log line travels through a pipe and can arrive after the HTTP reply.
    const logDeadline = Date.now() + 5000;
    while (!/"msg":"injected"/.test(out) && Date.now() < logDeadline)
      await new Promise((r) => setTimeout(r, 20));
    expect(out).to.match(/"msg":"injected"/);
    const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
    proc.kill("SIGTERM");
    expect(await exited).to.equal(0);
    expect(out).to.match(/draining in-flight requests/);
    child = undefined;
  });

  describe("with --renew-certificates, against a fake API server", () => {
    let api: FakeKubeApiServer;
    let dir: string;
    const MWCS = { apiPath: ADMISSIONREGISTRATION_V1, resource: "mutatingwebhookconfigurations" };
    before(async () => {
      api = await FakeKubeApiServer.start();
      api.store.create(MWCS, {
        metadata: { name: "dynamic-volumes" },
        webhooks: [
          {
            name: "pods.dynamic-volumes.io",
            admissionReviewVersions: ["v1"],
            sideEffects: "None",
            clientConfig: { service: { name: "dynamic-volumes-webhook", namespace: TEST_NAMESPACE } },
          },
        ],
      });
      dir = mkdtempSync(join(tmpdir(), "dv-main-renewal-"));
      writeFileSync(join(dir, "kubeconfig"), api.kubeConfig().exportConfig());
      // The files the init container would have written: here a pair from a CA nobody trusts.
      writeFileSync(join(dir, "tls.crt"), readFileSync(pki.certFile));
      writeFileSync(join(dir, "tls.key"), readFileSync(pki.keyFile), { mode: 0o600 });
    });
    after(async () => {
      await api.close();
      rmSync(dir, { recursive: true, force: true });
    });

    it("[error] exits 2 when a certificate name is not a DNS name", () => {
      const r = spawnSync(
        process.execPath,
        [...MAIN, "--renew-certificates", "--certificate-extra-dns", "not a name"],
        {
          encoding: "utf8",
          env: {
            ...process.env,
            DV_TLS_CERT_FILE: join(dir, "tls.crt"),
            DV_TLS_KEY_FILE: join(dir, "tls.key"),
            DV_SIGNING_KEY_FILE: keyFile,
          },
        },
      );
      expect(r.status).to.equal(2);
      expect(r.stderr).to.match(/"not a name" is not a valid DNS name.*--certificate-extra-dns/);
    });

    it("checks at start: creates the Secret, sets the caBundle and serves the new certificate, which that caBundle verifies", async () => {
      const port = 20000 + Math.floor(Math.random() * 20000);
      const proc = spawn(process.execPath, [...MAIN, "--renew-certificates"], {
        env: {
          ...process.env,
          KUBECONFIG: join(dir, "kubeconfig"),
          DV_LISTEN: `127.0.0.1:${port}`,
          DV_TLS_CERT_FILE: join(dir, "tls.crt"),
          DV_TLS_KEY_FILE: join(dir, "tls.key"),
          DV_SIGNING_KEY_FILE: keyFile,
          DV_CERTIFICATE_NAMESPACE: TEST_NAMESPACE,
        },
        stdio: ["ignore", "pipe", "pipe"],
      });
      child = proc;
      let out = "";
      proc.stdout.on("data", (d: Buffer) => (out += d.toString()));
      proc.stderr.on("data", (d: Buffer) => (out += d.toString()));
      const deadline = Date.now() + 20_000;
      while (!out.includes("serving the certificate from the Secret") && Date.now() < deadline) {
        if (proc.exitCode !== null) throw new Error(`webhook exited early: ${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(out).to.match(
        /"component":"certificates".*"msg":"renewing the serving certificate while running"/,
      );
      expect(out).to.match(/"msg":"serving the certificate from the Secret"/);
      expect(out, "no key material in the log").to.not.match(/PRIVATE KEY|BEGIN CERTIFICATE/);
      const secret = api.store.get(
        { apiPath: CORE_V1, resource: "secrets", namespace: TEST_NAMESPACE },
        "dynamic-volumes-tls",
      ) as (KubeObject & V1Secret) | undefined;
      expect(secret?.type).to.equal("kubernetes.io/tls");
      const mwc = api.store.get(MWCS, "dynamic-volumes") as
        (KubeObject & V1MutatingWebhookConfiguration) | undefined;
      const bundle = Buffer.from(mwc!.webhooks![0]!.clientConfig.caBundle!, "base64").toString("utf8");
      const served = readFileSync(join(dir, "tls.crt"), "utf8");
      expect(certMatchesCa(served, bundle)).to.equal(true);
      const r = await httpsRequest({
        port,
        path: "/mutate",
        ca: bundle,
        servername: TEST_SERVER_NAME,
        body: JSON.stringify(admissionReview(deploymentPod())),
      });
      expect(r.status).to.equal(200);
      const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
      proc.kill("SIGTERM");
      expect(await exited).to.equal(0);
      child = undefined;
    });
  });
});
