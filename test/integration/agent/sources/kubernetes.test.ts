import { expect } from "chai";
import { Event } from "kubernetes-models/v1";
import type { PodEvent, PodRef } from "../../../../agent/sources/pod-source.js";
import {
  EVENT_COMPONENT,
  KubernetesPodSource,
  MAX_EVENT_MESSAGE,
  MAX_WRITE_ATTEMPTS,
} from "../../../../agent/sources/kubernetes.js";
import { createLogger } from "../../../../shared/logger.js";
import { ANNOTATIONS, VOLUME_NAME } from "../../../../shared/names.js";
import { CORE_V1, FakeKubeApiServer, type KubeObject } from "../../../support/kube-api-server.js";
import { appFailure as failure } from "../../../support/processes.js";

const NODE = "node-a";
const pods = (namespace: string) => ({ apiPath: CORE_V1, resource: "pods", namespace });
const secrets = (namespace: string) => ({ apiPath: CORE_V1, resource: "secrets", namespace });
const events = (namespace: string) => ({ apiPath: CORE_V1, resource: "events", namespace });
const isWatch = (r: { query: Readonly<Record<string, string>> }) => r.query.watch === "true";

/** A pod as a Deployment's ReplicaSet creates it and our webhook patches it, scheduled on `nodeName`. */
function podObject(
  name: string,
  namespace: string,
  nodeName = NODE,
  annotations: Record<string, string> = { [ANNOTATIONS.buckets]: "data=datasets" },
): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name,
      generateName: `${name.replace(/-[a-z0-9]+$/, "")}-`,
      namespace,
      labels: { app: "trainer", "pod-template-hash": "7d9c5b" },
      annotations,
      ownerReferences: [
        {
          apiVersion: "apps/v1",
          kind: "ReplicaSet",
          name: "trainer-7d9c5b",
          uid: "rs-uid",
          controller: true,
        },
      ],
    },
    spec: {
      nodeName,
      containers: [
        { name: "app", image: "busybox", volumeMounts: [{ name: VOLUME_NAME, mountPath: "/datasets" }] },
      ],
      volumes: [
        {
          name: VOLUME_NAME,
          hostPath: { path: "/var/lib/dynamic-volumes/pods/ab", type: "DirectoryOrCreate" },
        },
      ],
    },
  };
}

function create(api: FakeKubeApiServer, name: string, namespace = "team", nodeName = NODE): KubeObject {
  return api.store.create(pods(namespace), podObject(name, namespace, nodeName));
}

function refOf(pod: KubeObject): PodRef {
  return { namespace: pod.metadata!.namespace!, name: pod.metadata!.name!, uid: pod.metadata!.uid! };
}

async function until(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("KubernetesPodSource", () => {
  let api: FakeKubeApiServer;
  let source: KubernetesPodSource;
  let seen: PodEvent[];
  let logs: string[];

  const summary = () =>
    seen.map((e) => `${e.type} ${e.pod.metadata?.namespace}/${e.pod.metadata?.name} ${e.pod.metadata?.uid}`);
  const line = (type: string, pod: KubeObject) =>
    `${type} ${pod.metadata?.namespace}/${pod.metadata?.name} ${pod.metadata?.uid}`;
  const start = () => source.start((e) => seen.push(e));
  const listRequests = () => api.requestsTo("GET", "/api/v1/pods").filter((r) => !isWatch(r));

  beforeEach(async () => {
    api = await FakeKubeApiServer.start();
    seen = [];
    logs = [];
    const log = createLogger({ name: "test", level: "debug" }, { write: (s: string) => void logs.push(s) });
    source = new KubernetesPodSource(api.kubeConfig(), {
      nodeName: NODE,
      log,
      restartBackoff: { initialMs: 20, maxMs: 100 },
    });
  });

  afterEach(async () => {
    await source.stop();
    await api.close();
  });

  describe("start", () => {
    it("delivers every pod of this node as upsert before it resolves, and no pod of another node", async () => {
      const a = create(api, "trainer-a", "team");
      create(api, "elsewhere", "team", "node-b");
      const c = create(api, "trainer-c", "other");

      await start();

      expect(summary()).to.have.members([line("upsert", a), line("upsert", c)]);
      expect(seen).to.have.length(2);
      const [list] = listRequests();
      expect(list?.query).to.include({ fieldSelector: `spec.nodeName=${NODE}` });
      expect(source.getPod("team", "trainer-a")?.metadata?.uid).to.equal(a.metadata?.uid);
      expect(source.getPod("team", "elsewhere")).to.equal(undefined);
    });

    it("retries a failing initial list with backoff and resolves once it succeeds", async () => {
      const a = create(api, "trainer-a");
      api.inject({ method: "GET", path: "/api/v1/pods", when: (r) => !isWatch(r), status: 503, times: 2 });

      await start();

      expect(summary()).to.deep.equal([line("upsert", a)]);
      expect(listRequests().map((r) => r.status)).to.deep.equal([503, 503, 200]);
      expect(logs.filter((l) => l.includes("pod watch failed"))).to.have.length(2);
    });

    it("rejects when stopped before any list succeeded, having logged the RBAC it needs", async () => {
      api.inject({
        method: "GET",
        path: "/api/v1/pods",
        status: 403,
        message: "pods is forbidden",
        times: Infinity,
      });
      const started = start();
      await until("the refusal was logged with the RBAC needed", () =>
        logs.some((l) => l.includes("needs list and watch on pods")),
      );
      await source.stop();
      const e = await failure(started);
      expect(e.code).to.equal("Unavailable");
      expect(listRequests().map((r) => r.status)).to.include(403);
    });
    it("opens no watch when stopped while the initial list is in flight", async () => {
      create(api, "trainer-a");
      api.inject({ method: "GET", path: "/api/v1/pods", when: (r) => !isWatch(r), delayMs: 100 });
      const started = start();
      await until("the list was sent", () => listRequests().length === 1);
      await source.stop();
      expect((await failure(started)).code).to.equal("Unavailable");
      await new Promise((r) => setTimeout(r, 200));
      expect(api.requestsTo("GET", "/api/v1/pods").filter(isWatch)).to.have.length(0);
      expect(seen).to.deep.equal([]);
    });

    it("can be started again after stop", async () => {
      const a = create(api, "trainer-a");
      await start();
      await source.stop();
      seen = [];
      await start();
      expect(summary()).to.deep.equal([line("upsert", a)]);
    });
  });

  describe("after start", () => {
    beforeEach(async () => {
      await start();
      await api.waitForWatches(1);
    });

    it("delivers additions, updates and deletions of this node's pods only", async () => {
      const a = create(api, "trainer-a");
      create(api, "elsewhere", "team", "node-b");
      const updated = api.store.patch(pods("team"), "trainer-a", "application/merge-patch+json", {
        metadata: { annotations: { [ANNOTATIONS.buckets]: "data=datasets,more=models" } },
      });
      api.store.delete(pods("team"), "trainer-a");
      await until("three events arrived", () => seen.length >= 3);
      await new Promise((r) => setTimeout(r, 50));

      expect(summary()).to.deep.equal([line("upsert", a), line("upsert", a), line("delete", a)]);
      expect(seen[1]!.pod.metadata?.annotations).to.deep.equal(updated.metadata?.annotations);
      expect(source.getPod("team", "trainer-a")).to.equal(undefined);
    });

    it("reconnects when the API server ends the watch and keeps delivering", async () => {
      api.closeWatches();
      await api.waitForWatches(1);
      const a = create(api, "trainer-a");
      await until("the pod arrived", () => seen.length >= 1);

      expect(summary()).to.deep.equal([line("upsert", a)]);
      const watches = api.requestsTo("GET", "/api/v1/pods").filter(isWatch);
      expect(watches).to.have.length(2);
      expect(watches[1]!.query.resourceVersion).to.match(/^\d+$/);
      expect(watches[1]!.query).to.include({ fieldSelector: `spec.nodeName=${NODE}` });
      expect(listRequests()).to.have.length(1);
    });

    for (const [how, status] of [
      ["an ERROR event in the stream", undefined],
      ["an HTTP 410 answer", 410],
    ] as const)
      it(`relists after 410 Gone as ${how} and delivers a pod deleted while disconnected as delete`, async () => {
        const a = create(api, "trainer-a");
        const b = create(api, "trainer-b");
        await until("both pods arrived", () => seen.length >= 2);
        let c: KubeObject | undefined;
        // While the watch is down: a pod goes, another comes, and etcd compacts the history.
        api.inject({
          method: "GET",
          path: "/api/v1/pods",
          when: isWatch,
          before: () => {
            api.store.delete(pods("team"), "trainer-a");
            c = create(api, "trainer-c");
            api.store.compact();
          },
          ...(status !== undefined ? { status, reason: "Expired", message: "too old resource version" } : {}),
        });
        api.closeWatches();
        await until("the relist was delivered", () => seen.length >= 4);

        expect(summary()).to.deep.equal([
          line("upsert", a),
          line("upsert", b),
          line("delete", a),
          line("upsert", c!),
        ]);
        const relist = listRequests()[1];
        expect(relist, "a second list").to.not.equal(undefined);
        // The relist is a consistent read, not served from the watch cache.
        expect(relist!.query.resourceVersion).to.equal(undefined);
        const expired = api.requestsTo("GET", "/api/v1/pods").filter(isWatch)[1];
        expect(Number(expired?.query.resourceVersion)).to.be.lessThan(api.store.oldestResourceVersion);
        expect(source.getPod("team", "trainer-a")).to.equal(undefined);
        // And it watches again from the relist.
        await api.waitForWatches(1, 5000);
        const d = create(api, "trainer-d");
        await until("the next pod arrived", () => seen.length >= 5);
        expect(summary()[4]).to.equal(line("upsert", d));
      });

    it("resumes from a bookmark after a reconnect instead of relisting", async () => {
      // Changes on other nodes move the resourceVersion on; only a bookmark tells this watch so.
      for (const n of [1, 2, 3]) create(api, `elsewhere-${n}`, "team", "node-b");
      api.sendBookmarks();
      await new Promise((r) => setTimeout(r, 50));
      api.store.compact();
      api.closeWatches();
      await api.waitForWatches(1);

      const watches = api.requestsTo("GET", "/api/v1/pods").filter(isWatch);
      expect(watches[0]!.query.allowWatchBookmarks).to.equal("true");
      expect(watches[1]!.query.resourceVersion).to.equal(String(api.store.resourceVersion));
      expect(listRequests()).to.have.length(1);
      expect(seen).to.deep.equal([]);
    });

    it("delivers a pod recreated under the same name while disconnected as delete, then upsert", async () => {
      const old = create(api, "trainer-a");
      await until("the pod arrived", () => seen.length >= 1);
      let recreated: KubeObject | undefined;
      api.inject({
        method: "GET",
        path: "/api/v1/pods",
        when: isWatch,
        before: () => {
          api.store.delete(pods("team"), "trainer-a");
          recreated = create(api, "trainer-a");
          api.store.compact();
        },
      });
      api.closeWatches();
      await until("the relist was delivered", () => seen.length >= 3);

      expect(recreated!.metadata?.uid).to.not.equal(old.metadata?.uid);
      expect(summary()).to.deep.equal([line("upsert", old), line("delete", old), line("upsert", recreated!)]);
    });

    it("restarts with backoff after the watch fails, and resumes", async () => {
      api.inject({ method: "GET", path: "/api/v1/pods", when: isWatch, status: 500, times: 2 });
      api.closeWatches();
      await until("the watch was refused twice", () =>
        api.requestsTo("GET", "/api/v1/pods").some((r) => isWatch(r) && r.status === 500),
      );
      await api.waitForWatches(1, 5000);
      const a = create(api, "trainer-a");
      await until("the pod arrived", () => seen.length >= 1);

      expect(summary()).to.deep.equal([line("upsert", a)]);
      expect(logs.filter((l) => l.includes("pod watch failed")).length).to.be.at.least(1);
    });

    it("delivers nothing after stop", async () => {
      await source.stop();
      create(api, "trainer-a");
      await new Promise((r) => setTimeout(r, 100));
      expect(seen).to.deep.equal([]);
      expect(api.openWatches).to.equal(0);
    });
  });

  describe("getSecret", () => {
    it("decodes the data of the Secret and logs none of it", async () => {
      api.store.create(secrets("team"), {
        metadata: { name: "dynamic-volumes-credentials" },
        data: {
          accessKeyID: Buffer.from("AKIDEXAMPLE").toString("base64"),
          secretAccessKey: Buffer.from("s3cr3t/ünïcode").toString("base64"),
        },
      });
      expect(await source.getSecret("team", "dynamic-volumes-credentials")).to.deep.equal({
        accessKeyID: "AKIDEXAMPLE",
        secretAccessKey: "s3cr3t/ünïcode",
      });
      expect(logs.join("\n")).to.not.include("s3cr3t");
    });

    it("returns undefined for a Secret that does not exist", async () => {
      expect(await source.getSecret("team", "missing")).to.equal(undefined);
    });

    it("says which RBAC is missing when the read is forbidden", async () => {
      api.inject({ method: "GET", path: "/api/v1/namespaces/team/secrets/creds", status: 403 });
      const e = await failure(source.getSecret("team", "creds"));
      expect(e.code).to.equal("Forbidden");
      expect(e.message).to.include('get on secrets in namespace "team"');
    });

    it("maps a server failure to Unavailable", async () => {
      api.inject({ method: "GET", path: "/api/v1/namespaces/team/secrets/creds", status: 503 });
      expect((await failure(source.getSecret("team", "creds"))).code).to.equal("Unavailable");
    });
  });

  describe("writeStatus", () => {
    const status = JSON.stringify({ data: { state: "mounted", bucket: "datasets" } });
    const path = "/api/v1/namespaces/team/pods/trainer-a";

    it("sets only the status annotation, with a JSON patch that tests the uid", async () => {
      const before = create(api, "trainer-a");
      await source.writeStatus(refOf(before), status);

      const after = api.store.get(pods("team"), "trainer-a")!;
      expect(after.metadata?.annotations).to.deep.equal({
        ...before.metadata?.annotations,
        [ANNOTATIONS.status]: status,
      });
      expect(after.spec).to.deep.equal(before.spec);
      expect(after.metadata?.labels).to.deep.equal(before.metadata?.labels);
      const [patch] = api.requestsTo("PATCH", path);
      expect(patch?.contentType).to.equal("application/json-patch+json");
      expect(patch?.body).to.deep.equal([
        { op: "test", path: "/metadata/uid", value: before.metadata?.uid },
        { op: "add", path: "/metadata/annotations/dynamic-volumes~1status", value: status },
      ]);
    });

    it("adds the annotations map to a pod that has none", async () => {
      const bare = podObject("trainer-a", "team");
      delete bare.metadata?.annotations;
      const before = api.store.create(pods("team"), bare);
      await source.writeStatus(refOf(before), status);
      expect(api.store.get(pods("team"), "trainer-a")?.metadata?.annotations).to.deep.equal({
        [ANNOTATIONS.status]: status,
      });
    });

    it("leaves alone a pod recreated under the same name between its read and its write", async () => {
      const old = create(api, "trainer-a");
      let recreated: KubeObject | undefined;
      api.inject({
        method: "PATCH",
        path,
        before: () => {
          api.store.delete(pods("team"), "trainer-a");
          recreated = create(api, "trainer-a");
        },
      });
      await source.writeStatus(refOf(old), status);

      const now = api.store.get(pods("team"), "trainer-a")!;
      expect(now.metadata?.uid).to.equal(recreated!.metadata?.uid);
      expect(now.metadata?.annotations).to.not.have.property(ANNOTATIONS.status);
      expect(api.requestsTo("PATCH", path).map((r) => r.status)).to.deep.equal([422]);
    });

    it("does not write to a pod with another uid, nor fail for a pod that is gone", async () => {
      const current = create(api, "trainer-a");
      await source.writeStatus({ ...refOf(current), uid: "an-older-instance" }, status);
      await source.writeStatus({ ...refOf(current), name: "gone" }, status);
      expect(api.store.get(pods("team"), "trainer-a")?.metadata?.annotations).to.not.have.property(
        ANNOTATIONS.status,
      );
      expect(api.requestsTo("PATCH", /./)).to.have.length(0);
    });

    it("uses the informer's cache rather than reading the pod", async () => {
      const pod = create(api, "trainer-a");
      await start();
      await source.writeStatus(refOf(pod), status);
      expect(api.requestsTo("GET", path)).to.have.length(0);
      expect(api.store.get(pods("team"), "trainer-a")?.metadata?.annotations?.[ANNOTATIONS.status]).to.equal(
        status,
      );
    });
  });

  describe("recordEvent", () => {
    it("creates a well-formed core/v1 Event on the pod", async () => {
      const pod = create(api, "trainer-a");
      await source.recordEvent(refOf(pod), { type: "Normal", reason: "Mounted", message: "mounted data" });

      const [event] = api.store.list(events("team"));
      expect(event).to.not.equal(undefined);
      new Event(event as ConstructorParameters<typeof Event>[0]).validate();
      expect(event).to.deep.include({
        type: "Normal",
        reason: "Mounted",
        message: "mounted data",
        action: "Mount",
        count: 1,
        reportingComponent: EVENT_COMPONENT,
        reportingInstance: NODE,
        source: { component: EVENT_COMPONENT, host: NODE },
        involvedObject: {
          apiVersion: "v1",
          kind: "Pod",
          namespace: "team",
          name: "trainer-a",
          uid: pod.metadata?.uid,
        },
      });
      expect(event!.metadata?.name).to.match(/^trainer-a\.[a-z0-9]{5}$/);
      // MicroTime: the API server parses exactly six fractional digits.
      expect(event!.eventTime).to.match(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
      expect(event!.firstTimestamp).to.match(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    });

    it("truncates a long message", async () => {
      const pod = create(api, "trainer-a");
      await source.recordEvent(refOf(pod), {
        type: "Warning",
        reason: "MountFailed",
        message: "x".repeat(5000),
      });
      const [event] = api.store.list(events("team"));
      expect((event!.message as string).length).to.equal(MAX_EVENT_MESSAGE);
      expect(event!.message).to.match(/…$/);
    });

    it("throws an AppError naming the RBAC when the API server refuses", async () => {
      const pod = create(api, "trainer-a");
      api.inject({ method: "POST", path: "/api/v1/namespaces/team/events", status: 403 });
      const e = await failure(
        source.recordEvent(refOf(pod), { type: "Normal", reason: "Unmounted", message: "unmounted data" }),
      );
      expect(e.code).to.equal("Forbidden");
      expect(e.message).to.include('create on events in namespace "team"');
    });
  });

  describe("updateBuckets", () => {
    const path = "/api/v1/namespaces/team/pods/trainer-a";
    const append = (entry: string) => (current: string | undefined) =>
      current === undefined || current === "" ? entry : `${current},${entry}`;
    const buckets = () =>
      api.store.get(pods("team"), "trainer-a")?.metadata?.annotations?.[ANNOTATIONS.buckets];

    it("rewrites only the buckets annotation, guarded by the resourceVersion, and returns the pod", async () => {
      const before = create(api, "trainer-a");
      const pod = await source.updateBuckets("team", "trainer-a", append("models"));

      expect(pod.metadata?.annotations?.[ANNOTATIONS.buckets]).to.equal("data=datasets,models");
      const after = api.store.get(pods("team"), "trainer-a")!;
      expect(after.metadata?.annotations).to.deep.equal({ [ANNOTATIONS.buckets]: "data=datasets,models" });
      expect(after.spec).to.deep.equal(before.spec);
      const [patch] = api.requestsTo("PATCH", path);
      expect(patch?.contentType).to.equal("application/json-patch+json");
      expect(patch?.body).to.deep.equal([
        { op: "test", path: "/metadata/resourceVersion", value: before.metadata?.resourceVersion },
        { op: "add", path: "/metadata/annotations/dynamic-volumes~1buckets", value: "data=datasets,models" },
      ]);
    });

    it("lands two concurrent edits", async () => {
      create(api, "trainer-a");
      // Hold the first two reads until both have arrived, so that both edits start from the same pod.
      let release = () => {};
      const bothRead = new Promise<void>((r) => (release = r));
      let reads = 0;
      api.inject({
        method: "GET",
        path,
        times: 2,
        before: async () => {
          if (++reads === 2) release();
          await bothRead;
        },
      });
      await Promise.all([
        source.updateBuckets("team", "trainer-a", append("one=b1")),
        source.updateBuckets("team", "trainer-a", append("two=b2")),
      ]);

      expect(buckets()?.split(",")).to.have.members(["data=datasets", "one=b1", "two=b2"]);
      expect(api.requestsTo("PATCH", path).map((r) => r.status)).to.include(422);
    });

    it("edits again when the pod changed between its read and its write", async () => {
      create(api, "trainer-a");
      api.inject({
        method: "PATCH",
        path,
        before: () => {
          api.store.patch(pods("team"), "trainer-a", "application/merge-patch+json", {
            metadata: { annotations: { [ANNOTATIONS.buckets]: "data=datasets,theirs" } },
          });
        },
      });
      await source.updateBuckets("team", "trainer-a", append("ours"));
      expect(buckets()).to.equal("data=datasets,theirs,ours");
    });

    it("retries after an injected 409 Conflict", async () => {
      create(api, "trainer-a");
      api.inject({ method: "PATCH", path, status: 409, reason: "Conflict" });
      await source.updateBuckets("team", "trainer-a", append("models"));
      expect(buckets()).to.equal("data=datasets,models");
      expect(api.requestsTo("PATCH", path).map((r) => r.status)).to.deep.equal([409, 200]);
    });

    it(`gives up with Conflict after ${MAX_WRITE_ATTEMPTS} attempts`, async () => {
      create(api, "trainer-a");
      api.inject({ method: "PATCH", path, status: 409, reason: "Conflict", times: Infinity });
      const e = await failure(source.updateBuckets("team", "trainer-a", append("models")));
      expect(e.code).to.equal("Conflict");
      expect(api.requestsTo("PATCH", path)).to.have.length(MAX_WRITE_ATTEMPTS);
    });

    it("removes the annotation when the edit leaves it empty", async () => {
      create(api, "trainer-a");
      const pod = await source.updateBuckets("team", "trainer-a", () => "");
      expect(pod.metadata?.annotations ?? {}).to.not.have.property(ANNOTATIONS.buckets);
      expect(api.store.get(pods("team"), "trainer-a")?.metadata?.annotations).to.deep.equal({});
    });

    it("writes nothing when the edit changes nothing", async () => {
      create(api, "trainer-a");
      await source.updateBuckets("team", "trainer-a", (current) => current ?? "");
      expect(api.requestsTo("PATCH", path)).to.have.length(0);
    });

    it("throws NotFound for a pod that does not exist", async () => {
      const e = await failure(source.updateBuckets("team", "nope", append("models")));
      expect(e.code).to.equal("NotFound");
      expect(e.message).to.include("team/nope");
    });

    it("refuses a pod on another node, naming that node", async () => {
      create(api, "trainer-a", "team", "node-b");
      const e = await failure(source.updateBuckets("team", "trainer-a", append("models")));
      expect(e.code).to.equal("NotFound");
      expect(e.message).to.include('"node-b"');
      expect(api.requestsTo("PATCH", path)).to.have.length(0);
    });
  });
});
