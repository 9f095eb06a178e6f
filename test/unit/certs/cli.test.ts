import { expect } from "chai";
import { X509Certificate } from "node:crypto";
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli, type CliDeps } from "../../../certs/cli.js";
import { certMatchesCa, certSubjectAltNames, keyMatchesCert } from "../../../certs/generate.js";

function io(env: NodeJS.ProcessEnv = {}): CliDeps & { out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return {
    env,
    out,
    err,
    stdout: (l) => out.push(l),
    stderr: (l) => err.push(l),
    kubeApi: () => {
      throw new Error("the Kubernetes API must not be used here");
    },
  };
}

describe("certs command line", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "dv-certs-cli-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  describe("generate", () => {
    it("writes ca.crt, ca.key, tls.crt and tls.key, the keys with mode 0600", async () => {
      const deps = io();
      const out = join(dir, "certs");
      const code = await runCli(
        [
          "generate",
          "--service",
          "dv-webhook",
          "--namespace",
          "dynamic-volumes",
          "--out-dir",
          out,
          "--extra-dns",
          "localhost",
          "--extra-ip",
          "127.0.0.1",
        ],
        deps,
      );
      expect(code, deps.err.join("\n")).to.equal(0);
      expect((await readdir(out)).sort()).to.deep.equal(["ca.crt", "ca.key", "tls.crt", "tls.key"]);
      const modes = await Promise.all(
        ["ca.crt", "ca.key", "tls.crt", "tls.key"].map(async (f) => (await stat(join(out, f))).mode & 0o777),
      );
      expect(modes).to.deep.equal([0o644, 0o600, 0o644, 0o600]);

      const [caCrt, caKey, tlsCrt, tlsKey] = await Promise.all(
        ["ca.crt", "ca.key", "tls.crt", "tls.key"].map((f) => readFile(join(out, f), "utf8")),
      );
      expect(certMatchesCa(tlsCrt!, caCrt!)).to.equal(true);
      expect(keyMatchesCert(tlsCrt!, tlsKey!)).to.equal(true);
      expect(keyMatchesCert(caCrt!, caKey!)).to.equal(true);
      expect(new X509Certificate(caCrt!).ca).to.equal(true);
      expect(certSubjectAltNames(tlsCrt!)).to.deep.equal({
        dns: [
          "dv-webhook",
          "dv-webhook.dynamic-volumes",
          "dv-webhook.dynamic-volumes.svc",
          "dv-webhook.dynamic-volumes.svc.cluster.local",
          "localhost",
        ],
        ips: ["127.0.0.1"],
      });
      expect(deps.out.join("\n")).to.match(/valid until/);
      expect(deps.out.join("\n")).to.not.match(/PRIVATE KEY/);
    });

    it("takes its flags from DV_* environment variables, with comma-separated lists", async () => {
      const deps = io({
        DV_SERVICE: "svc",
        DV_NAMESPACE: "ns",
        DV_OUT_DIR: dir,
        DV_EXTRA_DNS: "localhost, svc.example.com",
        DV_EXTRA_IP: "127.0.0.1,::1",
      });
      expect(await runCli(["generate"], deps)).to.equal(0);
      const sans = certSubjectAltNames(await readFile(join(dir, "tls.crt"), "utf8"));
      expect(sans.dns.slice(4)).to.deep.equal(["localhost", "svc.example.com"]);
      expect(sans.ips).to.have.length(2);
    });
  });

  describe("usage errors", () => {
    const usageErrors: [string, string[], RegExp][] = [
      ["no command", [], /a command is required/],
      ["an unknown command", ["renew"], /unknown command "renew"/],
      [
        "a missing --service",
        ["generate", "--namespace", "ns", "--out-dir", "/tmp/x"],
        /--service \(env DV_SERVICE\) is required/,
      ],
      [
        "a missing --out-dir",
        ["generate", "--service", "s", "--namespace", "ns"],
        /--out-dir \(env DV_OUT_DIR\) is required/,
      ],
      ["an unknown flag", ["generate", "--servce", "s"], /Unknown option '--servce'/],
      [
        "a service that is not a DNS label",
        ["generate", "--service", "Web_Hook", "--namespace", "ns", "--out-dir", "/tmp/x"],
        /service "Web_Hook"/,
      ],
      [
        "an extra IP that is not an address",
        ["generate", "--service", "s", "--namespace", "ns", "--out-dir", "/tmp/x", "--extra-ip", "256.1.1.1"],
        /"256.1.1.1" is not an IPv4/,
      ],
      [
        "a validity that is not a number",
        ["generate", "--service", "s", "--namespace", "ns", "--out-dir", "/tmp/x", "--validity-days", "1y"],
        /--validity-days .* must be a positive whole number/,
      ],
      [
        "bootstrap without --webhook-config",
        ["bootstrap", "--namespace", "ns", "--secret-name", "s", "--service", "svc"],
        /--webhook-config \(env DV_WEBHOOK_CONFIG\) is required/,
      ],
      [
        "a renewal window as long as the validity",
        [
          "bootstrap",
          "--namespace",
          "ns",
          "--secret-name",
          "s",
          "--service",
          "svc",
          "--webhook-config",
          "w",
          "--renew-before-days",
          "400",
        ],
        /must be less than --validity-days/,
      ],
    ];
    for (const [what, argv, message] of usageErrors) {
      it(`[error] exits 2 for ${what}, saying why`, async () => {
        const deps = io();
        expect(await runCli(argv, deps)).to.equal(2);
        expect(deps.err.join("\n")).to.match(message);
      });
    }
  });

  describe("help", () => {
    it("prints usage and exits 0 for --help", async () => {
      const deps = io();
      expect(await runCli(["generate", "--help"], deps)).to.equal(0);
      expect(deps.out.join("\n")).to.match(/--out-dir VALUE[\s\S]*DV_OUT_DIR/);
    });
  });

  describe("generate failures", () => {
    it("[error] exits 1 when the directory cannot be written", async () => {
      const deps = io();
      await writeFile(join(dir, "a-file"), "");
      const target = join(dir, "a-file", "certs");
      const code = await runCli(
        ["generate", "--service", "s", "--namespace", "ns", "--out-dir", target],
        deps,
      );
      expect(code).to.equal(1);
      expect(deps.err.join("\n")).to.include(`cannot create the directory "${target}": ENOTDIR`);
    });
  });
});
