import { expect } from "chai";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { admissionReview, deploymentPod } from "../../fixtures/pods.js";
import { httpsRequest } from "../../support/https-client.js";
import { TEST_SERVER_NAME, makeTestPki, type TestPki } from "../../support/tls.js";

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
});
