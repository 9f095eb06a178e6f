/**
 * The fleet view, which needs no agent: `dvctl ls` (-A, -n, -l) and `dvctl describe` read the pods'
 * annotations and Events from the fake API server with the real `@kubernetes/client-node`, through
 * the real dvctl process and a kubeconfig file.
 */
import { expect } from "chai";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EVENT_COMPONENT as AGENT_EVENT_COMPONENT } from "../../../agent/sources/kubernetes.js";
import { EVENT_COMPONENT } from "../../../dvctl/agent-names.js";
import type { FleetPod } from "../../../dvctl/fleet.js";
import { ANNOTATIONS, VOLUME_NAME } from "../../../shared/names.js";
import { runDvctl, type DvctlResult } from "../../support/dvctl.js";
import { CORE_V1, FakeKubeApiServer } from "../../support/kube-api-server.js";

const pods = (namespace: string) => ({ apiPath: CORE_V1, resource: "pods", namespace });
const events = (namespace: string) => ({ apiPath: CORE_V1, resource: "events", namespace });

const explain = (r: DvctlResult): string =>
  `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;

const ago = (seconds: number): string => new Date(Date.now() - seconds * 1000).toISOString();

function pod(
  namespace: string,
  name: string,
  o: {
    node?: string;
    labels?: Record<string, string>;
    buckets?: string;
    status?: Record<string, unknown>;
    injected?: "annotation" | "volume" | false;
  } = {},
) {
  const injected = o.injected ?? "annotation";
  const annotations: Record<string, string> = {};
  if (injected === "annotation") annotations[ANNOTATIONS.id] = "0123456789abcdef0123456789abcdef";
  if (o.buckets !== undefined) annotations[ANNOTATIONS.buckets] = o.buckets;
  if (o.status !== undefined) annotations[ANNOTATIONS.status] = JSON.stringify(o.status);
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace, labels: o.labels ?? {}, annotations },
    spec: {
      ...(o.node !== undefined ? { nodeName: o.node } : {}),
      containers: [{ name: "c", image: "busybox" }],
      volumes: injected === "volume" ? [{ name: VOLUME_NAME, hostPath: { path: "/x" } }] : [],
    },
    status: { phase: "Running" },
  };
}

describe("dvctl's fleet view from the Kubernetes API", function () {
  this.timeout(60_000);
  let api: FakeKubeApiServer;
  let dir: string;
  let kubeconfig: string;
  const dv = (args: string[]): Promise<DvctlResult> =>
    runDvctl(["--kubeconfig", kubeconfig, ...args], { env: { HOME: dir } });

  before(async () => {
    api = await FakeKubeApiServer.start();
    const st = (state: string, bucket: string, seconds: number, extra: Record<string, unknown> = {}) => ({
      state,
      bucket,
      prefix: "",
      readOnly: false,
      since: ago(seconds),
      ...extra,
    });
    api.store.create(
      pods("team-a"),
      pod("team-a", "trainer", {
        node: "node-1",
        labels: { app: "train" },
        buckets: "data=bucket-a/2024:ro,models=bucket-m,late=bucket-l",
        status: {
          data: { ...st("mounted", "bucket-a", 1800), prefix: "2024", readOnly: true },
          models: st("failed", "bucket-m", 600, { error: "s3fs: bucket-m: AccessDenied" }),
        },
      }),
    );
    api.store.create(
      pods("team-a"),
      pod("team-a", "server", {
        node: "node-2",
        labels: { app: "serve" },
        injected: "volume",
        buckets: "web=bucket-w",
        status: { web: st("mounted", "bucket-w", 7200) },
      }),
    );
    api.store.create(pods("team-a"), pod("team-a", "plain", { node: "node-1", injected: false }));
    api.store.create(
      pods("team-b"),
      pod("team-b", "etl", {
        node: "node-3",
        labels: { app: "train" },
        buckets: "raw=bucket-r,Bad_Name=x",
        status: { raw: st("mounting", "bucket-r", 5) },
      }),
    );
    api.store.create(pods("default"), pod("default", "empty", { node: "node-2" }));
    api.store.create(pods("team-b"), pod("team-b", "sidecar-free", { node: "node-3", injected: false }));

    const event = (name: string, reason: string, message: string, component: string, seconds: number) => ({
      apiVersion: "v1",
      kind: "Event",
      metadata: { name: `trainer.${name}`, namespace: "team-a" },
      involvedObject: { apiVersion: "v1", kind: "Pod", name: "trainer", namespace: "team-a" },
      reason,
      message,
      type: reason === "MountFailed" ? "Warning" : "Normal",
      source: { component, host: "node-1" },
      reportingComponent: component,
      reportingInstance: "node-1",
      firstTimestamp: ago(seconds),
      lastTimestamp: ago(seconds),
      count: 1,
    });
    api.store.create(
      events("team-a"),
      event("a", "Mounted", "mounted data (bucket-a/2024, ro)", EVENT_COMPONENT, 1800),
    );
    api.store.create(
      events("team-a"),
      event("b", "MountFailed", "models: s3fs: AccessDenied", EVENT_COMPONENT, 600),
    );
    api.store.create(events("team-a"), event("c", "Pulled", "Container image pulled", "kubelet", 600));

    dir = mkdtempSync(join(tmpdir(), "dvctl-fleet-"));
    kubeconfig = join(dir, "kubeconfig");
    writeFileSync(kubeconfig, api.kubeConfig().exportConfig(), { mode: 0o600 });
  });

  after(async () => {
    await api?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("EVENT_COMPONENT is the agent's", () => {
    expect(EVENT_COMPONENT).to.equal(AGENT_EVENT_COMPONENT);
  });

  it("ls -A lists every injected pod on every node, one row per mount, with no agent at all", async () => {
    const r = await dv(["ls", "-A"]);
    expect(r.code, explain(r)).to.equal(0);
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines[0]).to.match(/^NAMESPACE\s+POD\s+NODE\s+NAME\s+STATE\s+SOURCE\s+ACCESS\s+AGE\s+MESSAGE$/);
    const rows = lines.slice(1).map((l) => l.split(/\s{3,}/));
    expect(rows.map((c) => c.slice(0, 5))).to.deep.equal([
      ["default", "empty", "node-2", "-", "-"],
      ["team-a", "server", "node-2", "web", "mounted"],
      ["team-a", "trainer", "node-1", "data", "mounted"],
      ["team-a", "trainer", "node-1", "models", "failed"],
      ["team-a", "trainer", "node-1", "late", "pending"],
      ["team-b", "etl", "node-3", "raw", "mounting"],
      ["team-b", "etl", "node-3", "Bad_Name=x", "invalid"],
    ]);
    expect(lines[3]).to.match(/^team-a\s+trainer\s+node-1\s+data\s+mounted\s+bucket-a\/2024\s+ro\s+30m$/);
    expect(lines[2]).to.match(/\sweb\s+mounted\s+bucket-w\s+rw\s+120m$/);
    expect(lines[4]).to.match(/\smodels\s+failed\s+bucket-m\s+rw\s+10m\s+s3fs: bucket-m: AccessDenied$/);
    expect(lines[5]).to.match(/\slate\s+pending\s+bucket-l\s+rw\s+-$/);
    // Pods the webhook did not inject are not ours.
    expect(r.stdout).not.to.match(/plain|sidecar-free/);
    // No agent was looked for: only pod lists.
    expect(
      api.requests.filter((q) => q.path.includes("portforward") || q.path.includes("configmaps")),
    ).to.deep.equal([]);
    expect(api.requestsTo("GET", "/api/v1/pods").length).to.be.greaterThan(0);
  });

  it("-n and the kubeconfig context's namespace filter; -l selects by label", async () => {
    const a = await dv(["ls", "-n", "team-a"]);
    expect(a.code, explain(a)).to.equal(0);
    expect(a.stdout).to.match(/team-a\s+server/);
    expect(a.stdout).not.to.match(/team-b|default/);
    // The context's namespace is "default".
    const d = await dv(["ls"]);
    expect(
      d.stdout
        .trimEnd()
        .split("\n")
        .slice(1)
        .map((l) => l.split(/\s+/)[1]),
    ).to.deep.equal(["empty"]);
    const l = await dv(["-o", "json", "ls", "-A", "-l", "app=train"]);
    expect(l.code, explain(l)).to.equal(0);
    const listed = (JSON.parse(l.stdout) as { pods: FleetPod[] }).pods;
    expect(listed.map((p) => `${p.namespace}/${p.pod}@${p.node}`)).to.deep.equal([
      "team-a/trainer@node-1",
      "team-b/etl@node-3",
    ]);
    expect(listed[0]!.mounts[1]).to.deep.include({
      name: "models",
      state: "failed",
      error: "s3fs: bucket-m: AccessDenied",
    });
    expect(listed[0]!.mounts[2]).to.deep.equal({
      name: "late",
      state: "pending",
      bucket: "bucket-l",
      prefix: "",
      readOnly: false,
    });
    const none = await dv(["ls", "-n", "team-c"]);
    expect(none.code, explain(none)).to.equal(0);
    expect(none.stdout).to.equal("");
    expect(none.stderr).to.equal("No pods with a dynamic-volumes volume in namespace team-c.\n");
    expect((await dv(["ls", "-n", "team-a", "-A"])).code).to.equal(2);
  });

  it("describe shows one pod's mounts and only the agents' Events", async () => {
    const r = await dv(["describe", "team-a/trainer"]);
    expect(r.code, explain(r)).to.equal(0);
    expect(r.stdout).to.match(
      /^Pod: +team-a\/trainer\nNode: +node-1\nPhase: +Running\nMount path: +\/datasets\nMounts:\n/,
    );
    expect(r.stdout).to.match(
      /\n {2}models\s+failed\s+bucket-m\s+rw\s+\/datasets\/models\s+10m\s+s3fs: bucket-m: AccessDenied\n/,
    );
    expect(r.stdout).to.match(
      /\nEvents:\n {2}LAST SEEN\s+TYPE\s+REASON\s+FROM\s+MESSAGE\n {2}30m\s+Normal\s+Mounted\s+node-1\s+mounted data/,
    );
    expect(r.stdout).to.match(/\n {2}10m\s+Warning\s+MountFailed\s+node-1\s+models: s3fs: AccessDenied\n$/);
    expect(r.stdout).not.to.include("Pulled");
    const j = await dv(["-o", "json", "describe", "team-a/trainer"]);
    const parsed = JSON.parse(j.stdout) as FleetPod & { events: Array<{ reason: string }> };
    expect(parsed.events.map((e) => e.reason)).to.deep.equal(["Mounted", "MountFailed"]);
    expect(parsed.node).to.equal("node-1");
  });

  it("[error] describe of a missing pod exits 1; of a pod without injection, 1 saying so", async () => {
    const missing = await dv(["describe", "team-a/nope"]);
    expect(missing.code, explain(missing)).to.equal(1);
    expect(missing.stderr).to.match(/reading pod team-a\/nope/);
    const plain = await dv(["describe", "team-a/plain"]);
    expect(plain.code, explain(plain)).to.equal(1);
    expect(plain.stderr).to.match(/has no dynamic-volumes volume: the webhook did not inject it/);
  });

  it("[error] RBAC refusals exit 3 and name the permission", async () => {
    api.inject({ path: "/api/v1/pods", status: 403 });
    const r = await dv(["ls", "-A"]);
    expect(r.code, explain(r)).to.equal(3);
    expect(r.stderr).to.match(/list on pods in all namespaces/);
  });

  it("with --agent or --node, ls still asks that agent; -l is then a usage error", async () => {
    const r = await dv(["--agent", "wss://127.0.0.1:1", "--token", "t", "ls", "-l", "app=x"]);
    expect(r.code, explain(r)).to.equal(2);
    expect(r.stderr).to.match(/ls -l works in the fleet view only/);
  });
});
