import { expect } from "chai";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import {
  KubernetesPodSource,
  NO_KUBECONFIG,
  isFallbackConfig,
} from "../../../../agent/sources/kubernetes.js";
import { ConfigError } from "../../../../shared/errors.js";
import { createLogger } from "../../../../shared/logger.js";

const log = createLogger({ name: "test", level: "silent" });
const SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token";

const KUBECONFIG = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`;

describe("kubeconfig loading", () => {
  let dir: string;
  const saved = { home: process.env.HOME, kubeconfig: process.env.KUBECONFIG };
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "dv-kubeconfig-"));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
    process.env.HOME = saved.home;
    if (saved.kubeconfig === undefined) delete process.env.KUBECONFIG;
    else process.env.KUBECONFIG = saved.kubeconfig;
  });

  it("recognizes the placeholder the client fills in when it finds nothing", () => {
    const fallback = new KubeConfig();
    fallback.loadFromClusterAndUser(
      { name: "cluster", server: "http://localhost:8080", skipTLSVerify: false },
      { name: "user" },
    );
    expect(isFallbackConfig(fallback)).to.equal(true);
    const real = new KubeConfig();
    real.loadFromString(KUBECONFIG);
    expect(isFallbackConfig(real)).to.equal(false);
    // A deliberate plain-HTTP cluster on localhost with a token is someone's real configuration.
    const proxy = new KubeConfig();
    proxy.loadFromClusterAndUser(
      { name: "cluster", server: "http://localhost:8080", skipTLSVerify: false },
      { name: "user", token: "t" },
    );
    expect(isFallbackConfig(proxy)).to.equal(false);
  });

  it("[error] with no kubeconfig and no service account, fails at once with one line saying what to pass", async function () {
    if (existsSync(SERVICE_ACCOUNT_TOKEN)) this.skip();
    delete process.env.KUBECONFIG;
    process.env.HOME = dir;
    let err: unknown;
    await KubernetesPodSource.fromDefaultConfig({ nodeName: "node-1", log }).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(ConfigError);
    const message = (err as Error).message;
    expect(message).to.equal(NO_KUBECONFIG);
    expect(message).to.include(
      "--pods-dir and --secrets-dir for local mode, or a kubeconfig / in-cluster service account",
    );
    expect(message).not.to.match(/localhost:8080|HTTP protocol/);
    expect(message).not.to.include("\n");
  });

  it("[ok] a kubeconfig file is used as before", async () => {
    writeFileSync(join(dir, "config"), KUBECONFIG);
    process.env.KUBECONFIG = join(dir, "config");
    const source = await KubernetesPodSource.fromDefaultConfig({ nodeName: "node-1", log });
    expect(source).to.be.instanceOf(KubernetesPodSource);
  });
});
