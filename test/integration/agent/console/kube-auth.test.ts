import { AuthenticationV1Api, AuthorizationV1Api } from "@kubernetes/client-node";
import { expect } from "chai";
import { rmSync } from "node:fs";
import { SubjectAccessReviewAuthorizer, TokenReviewAuthenticator } from "../../../../agent/console/auth.js";
import { createLogger } from "../../../../shared/logger.js";
import type { ErrorBody, ListResult, MountResult, PodSummary, Reply } from "../../../../shared/protocol.js";
import { ConsoleClient, UpgradeRefused } from "../../../support/console-client.js";
import { ConsoleStack } from "../../../support/console-stack.js";
import { FakeKubeApiServer, type SubjectAccessReviewSpec } from "../../../support/kube-api-server.js";
import { makeTestPki, type TestPki } from "../../../support/tls.js";

const AUDIENCE = "dynamic-volumes-agent";
const log = createLogger({ name: "test", level: "silent" });

/** Who may do what on pods, by namespace: the fake API server's RBAC. */
const RBAC: Record<string, Record<string, readonly string[]>> = {
  alice: { "team-a": ["get", "patch"], "team-b": ["get"] },
  carol: { "team-b": ["get"] },
  dave: { "team-a": ["get", "patch"], "team-b": ["get", "patch"] },
};

function authorizer(spec: SubjectAccessReviewSpec): boolean {
  const ra = spec.resourceAttributes;
  if (ra?.resource !== "pods" || (ra.group ?? "") !== "" || ra.namespace === undefined) return false;
  return RBAC[spec.user ?? ""]?.[ra.namespace]?.includes(ra.verb ?? "") ?? false;
}

function errorOf(reply: Reply): ErrorBody {
  expect(reply.ok, JSON.stringify(reply)).to.equal(false);
  return (reply as { error: ErrorBody }).error;
}

async function refusedWith(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (e) {
    if (e instanceof UpgradeRefused) return e.status;
    throw e;
  }
  throw new Error("the upgrade was accepted");
}

describe("agent console with TokenReview and SubjectAccessReview (fake API server)", function () {
  let pki: TestPki;
  let api: FakeKubeApiServer;
  let stack: ConsoleStack;
  const clients: ConsoleClient[] = [];
  const connect = async (token: string): Promise<ConsoleClient> => {
    const c = await ConsoleClient.as(stack.port, stack.ca, token);
    clients.push(c);
    return c;
  };

  before(async () => {
    pki = makeTestPki();
    api = await FakeKubeApiServer.start({
      tokenReviews: {
        "alice-token": { username: "alice", uid: "u-alice", groups: ["dev"], audiences: [AUDIENCE] },
        "bob-token": { username: "bob", groups: ["dev"], audiences: [AUDIENCE] },
        "carol-token": { username: "carol", audiences: [AUDIENCE] },
        "dave-token": { username: "dave", audiences: [AUDIENCE] },
        "other-audience-token": { username: "alice", audiences: ["kubernetes"] },
        "anonymous-token": { username: "system:anonymous", groups: ["system:unauthenticated"] },
      },
      authorizer,
    });
  });

  after(async () => {
    await api.close();
    rmSync(pki.dir, { recursive: true, force: true });
  });

  beforeEach(async () => {
    const kc = api.kubeConfig();
    stack = new ConsoleStack({
      pki,
      authenticator: new TokenReviewAuthenticator(kc.makeApiClient(AuthenticationV1Api), {
        audiences: [AUDIENCE],
        log,
      }),
      authorizer: new SubjectAccessReviewAuthorizer(kc.makeApiClient(AuthorizationV1Api)),
    });
    stack.writePod("a.json", stack.mk("team-a", "trainer", "a=bucket-a"));
    stack.writePod("b.json", stack.mk("team-b", "worker", "b=bucket-b"));
    await stack.start();
    const deadline = Date.now() + 5000;
    while (stack.engine.mounted.size < 2 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    api.requests.length = 0;
  });

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
    await stack.close();
  });

  it("refuses anonymous users, unknown tokens and tokens for another audience at the upgrade", async () => {
    for (const token of ["anonymous-token", "nope", "other-audience-token"])
      expect(await refusedWith(ConsoleClient.as(stack.port, stack.ca, token)), token).to.equal(401);
    const reviews = api.requestsTo("POST", /tokenreviews$/);
    expect(reviews).to.have.length(3);
    expect((reviews[0]!.body as { spec: { audiences: string[] } }).spec.audiences).to.deep.equal([AUDIENCE]);
  });

  it("refuses an anonymous token sent in the auth frame", async () => {
    const c = await ConsoleClient.connect(stack.port, stack.ca);
    clients.push(c);
    expect(errorOf(await c.request({ op: "auth", token: "anonymous-token" })).code).to.equal(
      "Unauthenticated",
    );
    expect((await c.closed).code).to.equal(1008);
  });

  it("gives Forbidden to a valid token without permission and leaves the annotation untouched", async () => {
    const c = await connect("bob-token");
    const text = stack.podText("a.json");
    const e = errorOf(
      await c.request({ op: "mount", namespace: "team-a", pod: "trainer", bucket: "bucket-x" }),
    );
    expect(e.code).to.equal("Forbidden");
    expect(e.message).to.match(/user "bob" may not patch pods in namespace "team-a"/);
    expect(
      errorOf(await c.request({ op: "unmount", namespace: "team-a", pod: "trainer", name: "a" })).code,
    ).to.equal("Forbidden");
    expect(errorOf(await c.request({ op: "status", namespace: "team-a", pod: "trainer" })).code).to.equal(
      "Forbidden",
    );
    expect(stack.podText("a.json")).to.equal(text);
    expect((await c.ok<ListResult>({ op: "list" })).pods).to.deep.equal([]);
  });

  it("allows patch in one namespace but not in another where the user may only read", async () => {
    const c = await connect("alice-token");
    const r = await c.ok<MountResult>({
      op: "mount",
      namespace: "team-a",
      pod: "trainer",
      bucket: "bucket-x",
    });
    expect(r.mount.state).to.equal("mounted");
    const textB = stack.podText("b.json");
    const e = errorOf(
      await c.request({ op: "mount", namespace: "team-b", pod: "worker", bucket: "bucket-x" }),
    );
    expect(e.code).to.equal("Forbidden");
    expect(stack.podText("b.json")).to.equal(textB);
    expect(
      (await c.ok<PodSummary>({ op: "status", namespace: "team-b", pod: "worker" })).mounts,
    ).to.have.length(1);
    const sar = api
      .requestsTo("POST", /subjectaccessreviews$/)
      .map((q) => (q.body as { spec: SubjectAccessReviewSpec }).spec);
    expect(sar).to.deep.include({
      user: "alice",
      uid: "u-alice",
      groups: ["dev"],
      resourceAttributes: { namespace: "team-a", verb: "patch", group: "", resource: "pods" },
    });
  });

  it("lists only the namespaces the caller may read, and refuses a list of another", async () => {
    const c = await connect("carol-token");
    const list = await c.ok<ListResult>({ op: "list" });
    expect(list.pods.map((p) => `${p.namespace}/${p.pod}`)).to.deep.equal(["team-b/worker"]);
    expect(errorOf(await c.request({ op: "list", namespace: "team-a" })).code).to.equal("Forbidden");
    const both = await (await connect("alice-token")).ok<ListResult>({ op: "list" });
    expect(both.pods.map((p) => p.namespace)).to.deep.equal(["team-a", "team-b"]);
  });

  it("a watch of every namespace pushes only the events of readable namespaces", async () => {
    const watcher = await connect("carol-token");
    const snapshot = await watcher.ok<ListResult>({ op: "watch" });
    expect(snapshot.pods.map((p) => p.namespace)).to.deep.equal(["team-b"]);
    const admin = await connect("dave-token");
    await admin.ok({ op: "mount", namespace: "team-a", pod: "trainer", bucket: "bucket-x" });
    await admin.ok({ op: "mount", namespace: "team-b", pod: "worker", bucket: "bucket-y" });
    await watcher.waitFor((f) => "event" in f && f.name === "bucket-y" && f.state === "mounted");
    expect(watcher.events().map((e) => e.namespace)).to.not.include("team-a");
  });

  it("caches answers briefly instead of asking the API server for every request", async () => {
    const c = await connect("alice-token");
    for (let i = 0; i < 5; i++) await c.ok({ op: "status", namespace: "team-a", pod: "trainer" });
    expect(api.requestsTo("POST", /tokenreviews$/)).to.have.length(1);
    expect(api.requestsTo("POST", /subjectaccessreviews$/)).to.have.length(1);
  });

  it("answers Unavailable when the API server cannot be asked, and serves again afterwards", async () => {
    const c = await connect("dave-token");
    api.inject({ method: "POST", path: /subjectaccessreviews$/, status: 503, message: "etcd is sad" });
    const e = errorOf(await c.request({ op: "status", namespace: "team-b", pod: "worker" }));
    expect(e.code).to.equal("Unavailable");
    expect(e.message).to.match(/SubjectAccessReview \(HTTP 503\)/);
    expect((await c.ok<PodSummary>({ op: "status", namespace: "team-b", pod: "worker" })).pod).to.equal(
      "worker",
    );
  });
});
