import {
  ADMISSIONREGISTRATION_V1,
  CORE_V1,
  FakeKubeApiServer,
  type KubeObject,
} from "../../support/kube-api-server.js";
import {
  AdmissionregistrationV1Api,
  ApiException,
  AuthenticationV1Api,
  AuthorizationV1Api,
  CoreV1Api,
  PatchStrategy,
  Watch,
  setHeaderOptions,
  type V1Pod,
} from "@kubernetes/client-node";
import { expect } from "chai";

const pods = (namespace?: string) => ({ apiPath: CORE_V1, resource: "pods", namespace });

function pod(
  name: string,
  namespace: string,
  nodeName = "node-a",
  labels: Record<string, string> = {},
): V1Pod {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace, labels },
    spec: { nodeName, containers: [{ name: "app", image: "busybox" }] },
  };
}

/** The Kubernetes Status carried by a failed call of the real client. */
function statusOf(e: unknown): { code: number; reason?: string; message?: string } {
  expect(e).to.be.instanceOf(ApiException);
  const ex = e as ApiException<string>;
  const body = JSON.parse(ex.body) as { code: number; reason?: string; message?: string; kind?: string };
  expect(body.kind).to.equal("Status");
  expect(body.code).to.equal(ex.code);
  return body;
}

async function failure(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error("expected the call to fail");
}

interface Seen {
  type: string;
  name: string | undefined;
  rv: string | undefined;
  object: KubeObject;
}

/** Starts a real client Watch and collects its events; `done` resolves with the error it ends with. */
async function startWatch(
  api: FakeKubeApiServer,
  path: string,
  query: Record<string, string>,
): Promise<{ seen: Seen[]; done: Promise<unknown>; stop: () => void; until: (n: number) => Promise<void> }> {
  const seen: Seen[] = [];
  let finish: (e: unknown) => void = () => {};
  const done = new Promise<unknown>((resolve) => (finish = resolve));
  const controller = await new Watch(api.kubeConfig()).watch(
    path,
    query,
    (type, object: KubeObject) =>
      seen.push({ type, name: object.metadata?.name, rv: object.metadata?.resourceVersion, object }),
    (err) => finish(err),
  );
  const until = async (n: number) => {
    const deadline = Date.now() + 5000;
    while (seen.length < n) {
      if (Date.now() > deadline)
        throw new Error(`saw ${seen.length} events, wanted ${n}: ${JSON.stringify(seen)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  return { seen, done, stop: () => controller.abort(), until };
}

describe("FakeKubeApiServer", () => {
  let api: FakeKubeApiServer;
  let core: CoreV1Api;

  beforeEach(async () => {
    api = await FakeKubeApiServer.start();
    core = api.kubeConfig().makeApiClient(CoreV1Api);
  });
  afterEach(async () => {
    await api.close();
  });

  describe("objects through the real client", () => {
    it("creates, reads, replaces and deletes a Secret, bumping resourceVersion on every write", async () => {
      const created = await core.createNamespacedSecret({
        namespace: "ns",
        body: { metadata: { name: "s" }, data: { a: "YQ==" } },
      });
      expect(created.metadata?.namespace).to.equal("ns");
      expect(created.metadata?.uid).to.be.a("string");
      expect(created.kind).to.equal("Secret");
      const rv1 = Number(created.metadata?.resourceVersion);

      const read = await core.readNamespacedSecret({ name: "s", namespace: "ns" });
      expect(read.data).to.deep.equal({ a: "YQ==" });

      const replaced = await core.replaceNamespacedSecret({
        name: "s",
        namespace: "ns",
        body: { ...read, data: { b: "Yg==" } },
      });
      expect(Number(replaced.metadata?.resourceVersion)).to.be.greaterThan(rv1);
      expect(replaced.metadata?.uid).to.equal(created.metadata?.uid);

      await core.deleteNamespacedSecret({ name: "s", namespace: "ns" });
      expect(api.store.get({ apiPath: CORE_V1, resource: "secrets", namespace: "ns" }, "s")).to.equal(
        undefined,
      );
    });

    it("answers a missing object with a 404 NotFound Status", async () => {
      const status = statusOf(await failure(core.readNamespacedSecret({ name: "nope", namespace: "ns" })));
      expect(status).to.include({ code: 404, reason: "NotFound", message: 'secrets "nope" not found' });
    });

    it("answers a second create with a 409 AlreadyExists Status", async () => {
      const body = { metadata: { name: "s" } };
      await core.createNamespacedSecret({ namespace: "ns", body });
      const status = statusOf(await failure(core.createNamespacedSecret({ namespace: "ns", body })));
      expect(status).to.include({ code: 409, reason: "AlreadyExists" });
    });

    it("refuses a replace with a stale resourceVersion with 409 Conflict", async () => {
      const s = await core.createNamespacedSecret({ namespace: "ns", body: { metadata: { name: "s" } } });
      await core.replaceNamespacedSecret({ name: "s", namespace: "ns", body: s });
      const status = statusOf(
        await failure(core.replaceNamespacedSecret({ name: "s", namespace: "ns", body: s })),
      );
      expect(status).to.include({ code: 409, reason: "Conflict" });
    });

    it("applies JSON patch, merge patch and strategic merge patch by content type", async () => {
      await core.createNamespacedPod({ namespace: "ns", body: pod("p", "ns") });
      await core.patchNamespacedPod(
        {
          name: "p",
          namespace: "ns",
          body: [{ op: "add", path: "/metadata/annotations", value: { a: "1" } }],
        },
        setHeaderOptions("Content-Type", PatchStrategy.JsonPatch),
      );
      await core.patchNamespacedPod(
        { name: "p", namespace: "ns", body: { metadata: { annotations: { b: "2" } } } },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      );
      const after = await core.patchNamespacedPod(
        { name: "p", namespace: "ns", body: { metadata: { annotations: { a: null } } } },
        setHeaderOptions("Content-Type", PatchStrategy.StrategicMergePatch),
      );
      expect(after.metadata?.annotations).to.deep.equal({ b: "2" });
      expect(api.requestsTo("PATCH", "/api/v1/namespaces/ns/pods/p").map((r) => r.contentType)).to.deep.equal(
        [
          "application/json-patch+json",
          "application/merge-patch+json",
          "application/strategic-merge-patch+json",
        ],
      );
    });

    it("rejects a JSON patch whose test operation fails with 422 Invalid and changes nothing", async () => {
      await core.createNamespacedPod({ namespace: "ns", body: pod("p", "ns") });
      const e = await failure(
        core.patchNamespacedPod(
          {
            name: "p",
            namespace: "ns",
            body: [
              { op: "test", path: "/spec/nodeName", value: "other" },
              { op: "replace", path: "/spec/nodeName", value: "x" },
            ],
          },
          setHeaderOptions("Content-Type", PatchStrategy.JsonPatch),
        ),
      );
      expect(statusOf(e)).to.include({ code: 422, reason: "Invalid" });
      expect((api.store.get(pods("ns"), "p")?.spec as { nodeName: string }).nodeName).to.equal("node-a");
    });

    it("serves cluster-scoped resources of API groups", async () => {
      const admission = api.kubeConfig().makeApiClient(AdmissionregistrationV1Api);
      await admission.createMutatingWebhookConfiguration({
        body: { metadata: { name: "mwc" }, webhooks: [] },
      });
      const got = await admission.readMutatingWebhookConfiguration({ name: "mwc" });
      expect(got.kind).to.equal("MutatingWebhookConfiguration");
      expect(got.apiVersion).to.equal("admissionregistration.k8s.io/v1");
      expect(
        api.store.get(
          { apiPath: ADMISSIONREGISTRATION_V1, resource: "mutatingwebhookconfigurations" },
          "mwc",
        ),
      ).to.not.equal(undefined);
    });

    it("lists with the list resourceVersion, label and field selectors, and limit/continue", async () => {
      for (const [name, node, app] of [
        ["a", "node-a", "x"],
        ["b", "node-b", "x"],
        ["c", "node-a", "y"],
        ["d", "node-a", "x"],
      ] as const)
        await core.createNamespacedPod({ namespace: "ns", body: pod(name, "ns", node, { app }) });
      await core.createNamespacedPod({ namespace: "other", body: pod("e", "other") });

      const all = await core.listPodForAllNamespaces({});
      expect(all.items.map((p) => p.metadata?.name)).to.deep.equal(["a", "b", "c", "d", "e"]);
      expect(all.metadata?.resourceVersion).to.equal(String(api.store.resourceVersion));

      const onNode = await core.listNamespacedPod({
        namespace: "ns",
        fieldSelector: "spec.nodeName=node-a",
        labelSelector: "app in (x)",
      });
      expect(onNode.items.map((p) => p.metadata?.name)).to.deep.equal(["a", "d"]);

      const page1 = await core.listNamespacedPod({ namespace: "ns", limit: 3 });
      expect(page1.items.map((p) => p.metadata?.name)).to.deep.equal(["a", "b", "c"]);
      const page2 = await core.listNamespacedPod({
        namespace: "ns",
        limit: 3,
        _continue: page1.metadata?._continue,
      });
      expect(page2.items.map((p) => p.metadata?.name)).to.deep.equal(["d"]);
      expect(page2.metadata?._continue).to.equal(undefined);
    });

    it("writes only .status through the status subresource", async () => {
      await core.createNamespacedPod({ namespace: "ns", body: pod("p", "ns") });
      const after = await core.patchNamespacedPodStatus(
        {
          name: "p",
          namespace: "ns",
          body: { metadata: { labels: { ignored: "x" } }, status: { phase: "Running" } },
        },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      );
      expect(after.status?.phase).to.equal("Running");
      expect(after.metadata?.labels).to.deep.equal({});
    });

    it("creates Events", async () => {
      const ev = await core.createNamespacedEvent({
        namespace: "ns",
        body: {
          metadata: { generateName: "p." },
          involvedObject: { kind: "Pod", name: "p", namespace: "ns" },
          reason: "Mounted",
          message: "mounted data",
          type: "Normal",
        },
      });
      expect(ev.metadata?.name).to.match(/^p\.[a-z0-9]{5}$/);
      expect(api.store.list({ apiPath: CORE_V1, resource: "events", namespace: "ns" })).to.have.length(1);
    });
  });

  describe("watch", () => {
    it("after a list, delivers ADDED, MODIFIED and DELETED from the list's resourceVersion", async () => {
      await core.createNamespacedPod({ namespace: "ns", body: pod("before", "ns") });
      const list = await core.listNamespacedPod({ namespace: "ns" });
      // A change between the list and the watch must not be lost: it is replayed from history.
      await core.createNamespacedPod({ namespace: "ns", body: pod("p", "ns") });

      const w = await startWatch(api, "/api/v1/namespaces/ns/pods", {
        resourceVersion: list.metadata!.resourceVersion!,
      });
      await api.waitForWatches(1);
      await core.patchNamespacedPod(
        { name: "p", namespace: "ns", body: { metadata: { labels: { x: "1" } } } },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      );
      await core.deleteNamespacedPod({ name: "p", namespace: "ns" });
      await core.createNamespacedPod({ namespace: "elsewhere", body: pod("q", "elsewhere") });
      await w.until(3);
      w.stop();

      expect(w.seen.map((e) => [e.type, e.name])).to.deep.equal([
        ["ADDED", "p"],
        ["MODIFIED", "p"],
        ["DELETED", "p"],
      ]);
      const rvs = w.seen.map((e) => Number(e.rv));
      expect(rvs).to.deep.equal([...rvs].sort((a, b) => a - b));
      expect(w.seen[1]!.object.metadata?.labels).to.deep.equal({ x: "1" });
    });

    it("without a resourceVersion, starts with synthetic ADDED events for the current objects", async () => {
      await core.createNamespacedPod({ namespace: "ns", body: pod("a", "ns", "node-a") });
      await core.createNamespacedPod({ namespace: "ns", body: pod("b", "ns", "node-b") });
      const w = await startWatch(api, "/api/v1/pods", { fieldSelector: "spec.nodeName=node-a" });
      await w.until(1);
      await core.createNamespacedPod({ namespace: "other", body: pod("c", "other", "node-a") });
      await w.until(2);
      w.stop();
      expect(w.seen.map((e) => [e.type, e.name])).to.deep.equal([
        ["ADDED", "a"],
        ["ADDED", "c"],
      ]);
    });

    it("sends an ERROR event with a 410 Expired Status for a compacted resourceVersion", async () => {
      await core.createNamespacedPod({ namespace: "ns", body: pod("a", "ns") });
      const old = String(api.store.resourceVersion);
      await core.createNamespacedPod({ namespace: "ns", body: pod("b", "ns") });
      api.store.compact();
      const w = await startWatch(api, "/api/v1/namespaces/ns/pods", { resourceVersion: old });
      await w.until(1);
      expect(w.seen[0]!.type).to.equal("ERROR");
      expect(w.seen[0]!.object).to.include({ kind: "Status", code: 410, reason: "Expired" });
      expect(await w.done).to.equal(null);
    });

    it("reassembles events split across chunks", async () => {
      api.splitWatchEvents = true;
      const w = await startWatch(api, "/api/v1/namespaces/ns/pods", {});
      await api.waitForWatches(1);
      await core.createNamespacedPod({ namespace: "ns", body: pod("a", "ns") });
      await core.createNamespacedPod({ namespace: "ns", body: pod("b", "ns") });
      await w.until(2);
      w.stop();
      expect(w.seen.map((e) => e.name)).to.deep.equal(["a", "b"]);
    });

    it("ends the stream after timeoutSeconds", async () => {
      const w = await startWatch(api, "/api/v1/namespaces/ns/pods", { timeoutSeconds: "1" });
      await api.waitForWatches(1);
      expect(await w.done).to.equal(null);
      expect(api.openWatches).to.equal(0);
    });

    it("sends BOOKMARK events only to watches that allow them", async () => {
      const withBookmarks = await startWatch(api, "/api/v1/namespaces/ns/pods", {
        allowWatchBookmarks: "true",
      });
      const without = await startWatch(api, "/api/v1/namespaces/ns/pods", {});
      await api.waitForWatches(2);
      await core.createNamespacedPod({ namespace: "ns", body: pod("a", "ns") });
      api.sendBookmarks();
      await withBookmarks.until(2);
      await without.until(1);
      await new Promise((r) => setTimeout(r, 50));
      withBookmarks.stop();
      without.stop();
      expect(withBookmarks.seen.map((e) => e.type)).to.deep.equal(["ADDED", "BOOKMARK"]);
      expect(withBookmarks.seen[1]!.rv).to.equal(String(api.store.resourceVersion));
      expect(without.seen.map((e) => e.type)).to.deep.equal(["ADDED"]);
    });

    it("ends the stream when the server closes watches, and the client sees a clean end", async () => {
      const w = await startWatch(api, "/api/v1/namespaces/ns/pods", {});
      await api.waitForWatches(1);
      api.closeWatches();
      expect(await w.done).to.equal(null);
      expect(api.openWatches).to.equal(0);
    });
  });

  describe("reviews", () => {
    it("answers TokenReview from the configured tokens, honouring audiences", async () => {
      api.tokenReviews = { "t-1": { username: "alice", groups: ["dev"], audiences: ["dv"] } };
      const authn = api.kubeConfig().makeApiClient(AuthenticationV1Api);
      const ok = await authn.createTokenReview({ body: { spec: { token: "t-1", audiences: ["dv"] } } });
      expect(ok.status).to.deep.include({ authenticated: true, audiences: ["dv"] });
      expect(ok.status?.user).to.deep.include({ username: "alice", groups: ["dev"] });
      const wrongAudience = await authn.createTokenReview({
        body: { spec: { token: "t-1", audiences: ["x"] } },
      });
      expect(wrongAudience.status?.authenticated).to.equal(false);
      const unknown = await authn.createTokenReview({ body: { spec: { token: "nope" } } });
      expect(unknown.status?.authenticated).to.equal(false);
    });

    it("answers SubjectAccessReview with the authorizer's decision", async () => {
      api.authorizer = (spec) => spec.user === "alice" && spec.resourceAttributes?.verb === "get";
      const authz = api.kubeConfig().makeApiClient(AuthorizationV1Api);
      const review = (verb: string) =>
        authz.createSubjectAccessReview({
          body: { spec: { user: "alice", resourceAttributes: { namespace: "ns", verb, resource: "pods" } } },
        });
      expect((await review("get")).status?.allowed).to.equal(true);
      expect((await review("patch")).status?.allowed).to.equal(false);
    });
  });

  describe("test hooks", () => {
    it("refuses a client without the bearer token with 401", async () => {
      const stranger = api.kubeConfig({ token: "wrong" }).makeApiClient(CoreV1Api);
      const e = await failure(stranger.readNamespacedSecret({ name: "s", namespace: "ns" }));
      expect((e as ApiException<unknown>).code).to.equal(401);
    });

    it("injects a failure for the matching request only, the given number of times", async () => {
      api.inject({ method: "GET", path: /\/secrets\/s$/, status: 503, message: "etcd is sad" });
      const first = statusOf(await failure(core.readNamespacedSecret({ name: "s", namespace: "ns" })));
      expect(first).to.include({ code: 503, reason: "ServiceUnavailable", message: "etcd is sad" });
      const second = statusOf(await failure(core.readNamespacedSecret({ name: "s", namespace: "ns" })));
      expect(second.code).to.equal(404);
    });

    it("runs a before hook ahead of the request, e.g. to win a race", async () => {
      api.inject({
        method: "POST",
        path: "/api/v1/namespaces/ns/secrets",
        before: () => {
          api.store.create(
            { apiPath: CORE_V1, resource: "secrets", namespace: "ns" },
            { metadata: { name: "s" } },
          );
        },
      });
      const e = await failure(
        core.createNamespacedSecret({ namespace: "ns", body: { metadata: { name: "s" } } }),
      );
      expect(statusOf(e).reason).to.equal("AlreadyExists");
    });

    it("logs requests with method, path, query, content type, parsed body and response status", async () => {
      await core.createNamespacedSecret({
        namespace: "ns",
        body: { metadata: { name: "s" } },
        dryRun: "All",
      });
      const [rec] = api.requestsTo("POST", "/api/v1/namespaces/ns/secrets");
      expect(rec).to.deep.include({ contentType: "application/json", status: 201, query: { dryRun: "All" } });
      expect((rec!.body as KubeObject).metadata?.name).to.equal("s");
      expect(api.store.get({ apiPath: CORE_V1, resource: "secrets", namespace: "ns" }, "s")).to.equal(
        undefined,
      );
    });
  });
});
