/**
 * dvctl without `--agent`: the pod → node → agent pod lookup against the fake API server with the
 * real `@kubernetes/client-node`, and the whole path through the fake's `portforward` subresource
 * (client side real: `PortForward`; kubelet side: test/support/kube-api-portforward.ts) to an agent
 * console whose certificate names the agents' Service, verified with `--ca-file` or, without it,
 * with the CA the certificate bootstrap publishes in a ConfigMap.
 */
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { expect } from "chai";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  AuthenticatedUserAuthorizer,
  StaticTokenAuthenticator,
  parseTokenAuthFile,
} from "../../../agent/console/auth.js";
import { generateCa } from "../../../certs/generate.js";
import {
  AGENT_LABEL_SELECTOR,
  AGENT_NAMESPACE,
  CA_CONFIG_MAP,
  DEFAULT_AGENT_SERVER_NAME,
  agentCaFromConfigMap,
  agentPodOnNode,
  kubeconfigBearerToken,
  nodeOfPod,
} from "../../../dvctl/discovery.js";
import { exitCodeOf } from "../../../dvctl/errors.js";
import type { ListResult, PodSummary } from "../../../shared/protocol.js";
import { ConsoleStack } from "../../support/console-stack.js";
import { runDvctl, type DvctlResult } from "../../support/dvctl.js";
import { CORE_V1, FakeKubeApiServer } from "../../support/kube-api-server.js";
import { TEST_AGENT_SERVER_NAME, makeAgentTestPki, type TestPki } from "../../support/tls.js";

const pods = (namespace: string) => ({ apiPath: CORE_V1, resource: "pods", namespace });
const CONFIGMAPS = { apiPath: CORE_V1, resource: "configmaps", namespace: AGENT_NAMESPACE };
const CA_CM_PATH = `/api/v1/namespaces/${AGENT_NAMESPACE}/configmaps/${CA_CONFIG_MAP}`;

function agentPod(name: string, node: string, phase = "Running", ready = true) {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name,
      namespace: AGENT_NAMESPACE,
      labels: { "app.kubernetes.io/name": "dynamic-volumes-agent" },
    },
    spec: { nodeName: node, containers: [{ name: "agent", image: "agent" }] },
    status: { phase, conditions: [{ type: "Ready", status: ready ? "True" : "False" }] },
  };
}

function workload(namespace: string, name: string, node?: string) {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace },
    spec: {
      ...(node !== undefined ? { nodeName: node } : {}),
      containers: [{ name: "c", image: "busybox" }],
    },
  };
}

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const explain = (r: DvctlResult): string =>
  `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;

describe("dvctl agent discovery through the kubeconfig", function () {
  this.timeout(60_000);
  let api: FakeKubeApiServer;
  let core: CoreV1Api;
  let pki: TestPki;
  let stack: ConsoleStack;
  let dir: string;
  let kubeconfig: string;
  // Where the fake kubelet finds each agent pod's port 9443.
  const listening = new Map<string, number>();

  before(async () => {
    pki = makeAgentTestPki();
    api = await FakeKubeApiServer.start({
      portForward: (namespace, pod, port) => {
        const to = listening.get(`${namespace}/${pod}:${port}`);
        return to !== undefined ? { host: "127.0.0.1", port: to } : undefined;
      },
    });
    core = api.kubeConfig().makeApiClient(CoreV1Api);
    // The console accepts the kubeconfig's own token, as TokenReview would in a cluster.
    stack = new ConsoleStack({
      pki,
      authenticator: new StaticTokenAuthenticator(parseTokenAuthFile(`${api.token},kube-user,1\n`).tokens),
      authorizer: new AuthenticatedUserAuthorizer(),
    });
    stack.writePod("trainer.json", stack.mk("team-a", "trainer", "a=bucket-a"));
    await stack.start();
    await until("a mounted", () => stack.settledMounts(1));
    listening.set(`${AGENT_NAMESPACE}/agent-n1:9443`, stack.port);

    api.store.create(pods("team-a"), workload("team-a", "trainer", "node-1"));
    api.store.create(pods("team-a"), workload("team-a", "pending"));
    api.store.create(pods("team-a"), workload("team-a", "lonely", "node-9"));
    api.store.create(pods("team-a"), workload("team-a", "broken", "node-3"));
    api.store.create(pods(AGENT_NAMESPACE), agentPod("agent-n0", "node-0"));
    api.store.create(pods(AGENT_NAMESPACE), agentPod("agent-n1-old", "node-1", "Running", false));
    api.store.create(pods(AGENT_NAMESPACE), agentPod("agent-n1", "node-1"));
    api.store.create(pods(AGENT_NAMESPACE), agentPod("agent-n2", "node-2", "Pending", false));
    api.store.create(pods(AGENT_NAMESPACE), agentPod("agent-n3", "node-3"));

    dir = mkdtempSync(join(tmpdir(), "dvctl-discovery-"));
    kubeconfig = join(dir, "kubeconfig");
    writeFileSync(kubeconfig, api.kubeConfig().exportConfig(), { mode: 0o600 });
  });

  after(async () => {
    await stack?.close();
    await api?.close();
    rmSync(pki.dir, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  });

  describe("lookups", () => {
    it("finds a pod's node, and the running, ready agent pod on it", async () => {
      expect(await nodeOfPod(core, { namespace: "team-a", pod: "trainer" }, api.url)).to.equal("node-1");
      expect(await agentPodOnNode(core, "node-1", api.url)).to.deep.equal({
        namespace: AGENT_NAMESPACE,
        name: "agent-n1",
        node: "node-1",
      });
      const list = api.requestsTo("GET", `/api/v1/namespaces/${AGENT_NAMESPACE}/pods`).at(-1)!;
      expect(list.query).to.deep.include({
        labelSelector: AGENT_LABEL_SELECTOR,
        fieldSelector: "spec.nodeName=node-1",
      });
    });

    const failures: Array<[string, () => Promise<unknown>, RegExp, number]> = [
      [
        "[error] a missing pod: 1",
        () => nodeOfPod(core, { namespace: "team-a", pod: "nope" }, api.url),
        /reading pod team-a\/nope/,
        1,
      ],
      [
        "[error] an unscheduled pod: 1",
        () => nodeOfPod(core, { namespace: "team-a", pod: "pending" }, api.url),
        /not scheduled/,
        1,
      ],
      [
        "[error] no agent on the node: 4",
        () => agentPodOnNode(core, "node-9", api.url),
        /no dynamic-volumes agent runs on node node-9/,
        4,
      ],
      [
        "[error] an agent that is not running: 4",
        () => agentPodOnNode(core, "node-2", api.url),
        /agent-n2 \(Pending\)/,
        4,
      ],
    ];
    for (const [name, f, re, code] of failures)
      it(name, async () => {
        const e = await f().then(
          () => undefined,
          (x: unknown) => x,
        );
        expect((e as Error).message).to.match(re);
        expect(exitCodeOf(e)).to.equal(code);
      });

    it("[error] RBAC refusals exit 3", async () => {
      api.inject({ path: `/api/v1/namespaces/${AGENT_NAMESPACE}/pods`, status: 403 });
      const e = await agentPodOnNode(core, "node-1", api.url).then(
        () => undefined,
        (x: unknown) => x,
      );
      expect((e as Error).message).to.match(/list on pods in namespace "dynamic-volumes"/);
      expect(exitCodeOf(e)).to.equal(3);
    });

    describe("the agents' CA from its ConfigMap", () => {
      afterEach(() => {
        if (api.store.get(CONFIGMAPS, CA_CONFIG_MAP) !== undefined)
          api.store.delete(CONFIGMAPS, CA_CONFIG_MAP);
      });

      it("reads ca.crt", async () => {
        api.store.create(CONFIGMAPS, {
          metadata: { name: CA_CONFIG_MAP },
          data: { "ca.crt": pki.ca.certPem },
        });
        expect(await agentCaFromConfigMap(core, api.url)).to.equal(pki.ca.certPem);
      });

      const failures: Array<[string, () => void, RegExp, number]> = [
        [
          "[error] no ConfigMap: 4, saying who writes it and what else to do",
          () => undefined,
          /ConfigMap dynamic-volumes-ca in namespace dynamic-volumes does not exist\. The webhook's certificate bootstrap writes it .*--ca-file/,
          4,
        ],
        [
          "[error] a ConfigMap without a certificate: 4",
          () => api.store.create(CONFIGMAPS, { metadata: { name: CA_CONFIG_MAP }, data: { "ca.crt": "" } }),
          /has no certificate under "ca\.crt"; or pass .* --ca-file/,
          4,
        ],
        [
          "[error] not allowed to read it: 3, naming the permission",
          () => api.inject({ path: CA_CM_PATH, status: 403 }),
          /get on configmaps "dynamic-volumes-ca" in namespace "dynamic-volumes"/,
          3,
        ],
      ];
      for (const [name, arrange, re, code] of failures)
        it(name, async () => {
          arrange();
          const e = await agentCaFromConfigMap(core, api.url).then(
            () => undefined,
            (x: unknown) => x,
          );
          expect((e as Error).message).to.match(re);
          expect(exitCodeOf(e)).to.equal(code);
        });
    });

    it("reads the kubeconfig user's bearer token; none for a client-certificate user", async () => {
      expect(await kubeconfigBearerToken(api.kubeConfig())).to.equal(api.token);
      const kc = new KubeConfig();
      kc.loadFromOptions({
        clusters: [{ name: "c", server: api.url, skipTLSVerify: false }],
        users: [
          {
            name: "u",
            certData: Buffer.from(pki.serving.certPem).toString("base64"),
            keyData: Buffer.from(pki.serving.keyPem).toString("base64"),
          },
        ],
        contexts: [{ name: "x", cluster: "c", user: "u" }],
        currentContext: "x",
      });
      expect(await kubeconfigBearerToken(kc)).to.equal(undefined);
    });
  });

  describe("the command line through a port-forward", () => {
    const dv = (args: string[]): Promise<DvctlResult> =>
      runDvctl(["--kubeconfig", kubeconfig, "--ca-file", pki.caFile, ...args], { env: { HOME: dir } });

    it("status, mount and umount reach the agent of the pod's node with the kubeconfig's token", async () => {
      expect(DEFAULT_AGENT_SERVER_NAME).to.equal(TEST_AGENT_SERVER_NAME);
      const before = api.requestsTo("GET", /\/portforward$/).length;
      const s = await dv(["-o", "json", "status", "team-a/trainer"]);
      expect(s.code, explain(s)).to.equal(0);
      expect((JSON.parse(s.stdout) as PodSummary).mounts[0]?.state).to.equal("mounted");
      const forwards = api.requestsTo("GET", /\/portforward$/).slice(before);
      expect(forwards.map((r) => [r.path, r.query.ports, r.status])).to.deep.equal([
        [`/api/v1/namespaces/${AGENT_NAMESPACE}/pods/agent-n1/portforward`, "9443", 101],
      ]);
      const m = await dv(["mount", "team-a/trainer", "bucket-d/x", "--name", "d", "--ro"]);
      expect(m.code, explain(m)).to.equal(0);
      expect(m.stdout).to.equal("team-a/trainer: d mounted at /datasets/d (bucket-d/x, ro)\n");
      const u = await dv(["umount", "team-a/trainer", "d"]);
      expect(u.code, explain(u)).to.equal(0);
    });

    it("ls and console use --node; watch without a pod or --node is a usage error", async () => {
      const l = await dv(["--node", "node-1", "-o", "json", "ls"]);
      expect(l.code, explain(l)).to.equal(0);
      expect((JSON.parse(l.stdout) as ListResult).pods.map((p) => p.pod)).to.deep.equal(["trainer"]);
      const c = await runDvctl(
        ["--kubeconfig", kubeconfig, "--ca-file", pki.caFile, "--node", "node-1", "console"],
        {
          env: { HOME: dir },
          input: "status team-a/trainer\n",
        },
      );
      expect(c.code, explain(c)).to.equal(0);
      expect(c.stdout).to.match(/^Pod: +team-a\/trainer/);
      // (`ls` without --node is the fleet view, from the API alone: fleet.test.ts.)
      const none = await dv(["watch"]);
      expect(none.code, explain(none)).to.equal(2);
      expect(none.stderr).to.match(/give NS\/POD, or --node NODE/);
    });

    it("--debug names each step and never prints the token", async () => {
      const r = await dv(["--debug", "--token", "explicit-token", "status", "team-a/trainer"]);
      // An explicit token wins over the kubeconfig's, and this one is unknown to the console.
      expect(r.code, explain(r)).to.equal(3);
      expect(r.stderr).to.match(/debug: node node-1: agent pod dynamic-volumes\/agent-n1/);
      expect(r.stderr).to.match(
        /debug: port-forward: 127\.0\.0\.1:\d+ -> pod dynamic-volumes\/agent-n1:9443/,
      );
      expect(r.stderr).to.include('"token":"[REDACTED]"');
      expect(r.stderr).to.not.include("explicit-token");
      expect(r.stderr).to.not.include(api.token);
    });

    it("the wrong certificate name exits 4", async () => {
      const r = await dv([
        "--tls-server-name",
        "dynamic-volumes-webhook.dynamic-volumes.svc",
        "status",
        "team-a/trainer",
      ]);
      expect(r.code, explain(r)).to.equal(4);
      expect(r.stderr).to.match(/ERR_TLS_CERT_ALTNAME_INVALID/);
    });

    it("exit codes: no such pod 1, nothing listening on the agent pod 4, port-forward forbidden 3", async () => {
      const missing = await dv(["status", "team-a/nope"]);
      expect(missing.code, explain(missing)).to.equal(1);
      // agent-n3 runs, but nothing answers on its port: the kubelet's error channel says so.
      const closed = await dv(["status", "team-a/broken"]);
      expect(closed.code, explain(closed)).to.equal(4);
      expect(closed.stderr).to.match(
        /port-forward to pod dynamic-volumes\/agent-n3 port 9443: error forwarding port 9443/,
      );
      api.inject({ path: /\/portforward$/, status: 403 });
      const forbidden = await dv(["status", "team-a/trainer"]);
      expect(forbidden.code, explain(forbidden)).to.equal(3);
      expect(forbidden.stderr).to.match(/"create" on pods\/portforward in namespace dynamic-volumes/);
    });
  });

  describe("the command line without --ca-file", () => {
    const dv = (args: string[]): Promise<DvctlResult> =>
      runDvctl(["--kubeconfig", kubeconfig, ...args], { env: { HOME: dir } });
    const publish = (caPem: string): void => {
      if (api.store.get(CONFIGMAPS, CA_CONFIG_MAP) !== undefined) api.store.delete(CONFIGMAPS, CA_CONFIG_MAP);
      api.store.create(CONFIGMAPS, { metadata: { name: CA_CONFIG_MAP }, data: { "ca.crt": caPem } });
    };
    after(() => {
      if (api.store.get(CONFIGMAPS, CA_CONFIG_MAP) !== undefined) api.store.delete(CONFIGMAPS, CA_CONFIG_MAP);
    });

    it("verifies the agent with the CA of the ConfigMap the bootstrap publishes", async () => {
      publish(pki.ca.certPem);
      const r = await dv(["--debug", "-o", "json", "status", "team-a/trainer"]);
      expect(r.code, explain(r)).to.equal(0);
      expect((JSON.parse(r.stdout) as PodSummary).mounts[0]?.state).to.equal("mounted");
      expect(r.stderr).to.match(
        /debug: the agent's CA: ConfigMap dynamic-volumes-ca in namespace dynamic-volumes/,
      );
      expect(api.requestsTo("GET", CA_CM_PATH).at(-1)?.status).to.equal(200);
    });

    it("refuses an agent whose certificate another CA signed: the ConfigMap's CA is what it trusts", async () => {
      publish(generateCa({ commonName: "some other CA" }).certPem);
      const r = await dv(["status", "team-a/trainer"]);
      expect(r.code, explain(r)).to.equal(4);
      expect(r.stderr).to.match(
        /cannot verify the agent's certificate .*(SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER)/,
      );
      expect(r.stdout).to.equal("");
    });

    it("without the ConfigMap, exits 4 naming it, before any port-forward", async () => {
      if (api.store.get(CONFIGMAPS, CA_CONFIG_MAP) !== undefined) api.store.delete(CONFIGMAPS, CA_CONFIG_MAP);
      const before = api.requestsTo("GET", /\/portforward$/).length;
      const r = await dv(["status", "team-a/trainer"]);
      expect(r.code, explain(r)).to.equal(4);
      expect(r.stderr).to.match(
        /^dvctl: cannot verify the agent: the ConfigMap dynamic-volumes-ca in namespace dynamic-volumes does not exist\./,
      );
      expect(r.stderr).to.match(/--ca-file/);
      expect(api.requestsTo("GET", /\/portforward$/).length).to.equal(before);
    });

    it("--ca-file wins over the ConfigMap, and --insecure-skip-tls-verify does not read it", async () => {
      publish(generateCa({ commonName: "some other CA" }).certPem);
      const reads = (): number => api.requestsTo("GET", CA_CM_PATH).length;
      const before = reads();
      const withFile = await dv(["--ca-file", pki.caFile, "status", "team-a/trainer"]);
      expect(withFile.code, explain(withFile)).to.equal(0);
      const insecure = await dv(["--insecure-skip-tls-verify", "status", "team-a/trainer"]);
      expect(insecure.code, explain(insecure)).to.equal(0);
      expect(reads()).to.equal(before);
    });
  });
});
