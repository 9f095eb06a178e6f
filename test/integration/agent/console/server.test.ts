import { expect } from "chai";
import { rmSync } from "node:fs";
import {
  AuthenticatedUserAuthorizer,
  StaticTokenAuthenticator,
  parseTokenAuthFile,
} from "../../../../agent/console/auth.js";
import type {
  ErrorBody,
  ListResult,
  MountResult,
  PodSummary,
  Reply,
  UnmountResult,
} from "../../../../shared/protocol.js";
import { ConsoleClient, UpgradeRefused } from "../../../support/console-client.js";
import { ConsoleStack, NODE_NAME } from "../../../support/console-stack.js";
import { httpsRequest } from "../../../support/https-client.js";
import { makeTestPki, type TestPki } from "../../../support/tls.js";
import { seriesValue } from "../../../../shared/metrics.js";

const TOKENS = 'alice-token,alice,1,"dev"\nbob-token,bob,2\n';

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function errorOf(reply: Reply): ErrorBody {
  expect(reply.ok, JSON.stringify(reply)).to.equal(false);
  return (reply as { error: ErrorBody }).error;
}

async function refused(p: Promise<unknown>): Promise<UpgradeRefused> {
  try {
    await p;
  } catch (e) {
    if (e instanceof UpgradeRefused) return e;
    throw e;
  }
  throw new Error("the upgrade was accepted");
}

describe("agent console (local mode, fake mount engine)", function () {
  let pki: TestPki;
  let stack: ConsoleStack;
  const clients: ConsoleClient[] = [];
  const connect = async (token = "alice-token"): Promise<ConsoleClient> => {
    const c = await ConsoleClient.as(stack.port, stack.ca, token);
    clients.push(c);
    return c;
  };

  before(() => {
    pki = makeTestPki();
  });
  after(() => rmSync(pki.dir, { recursive: true, force: true }));

  beforeEach(async () => {
    stack = new ConsoleStack({
      pki,
      authenticator: new StaticTokenAuthenticator(parseTokenAuthFile(TOKENS).tokens),
      authorizer: new AuthenticatedUserAuthorizer(),
      limits: { authTimeoutMs: 500, maxBufferedBytes: 256 * 1024, slowReaderGraceMs: 200 },
    });
    stack.writePod("trainer.json", stack.mk("team-a", "trainer", "a=bucket-a"));
    stack.writePod("other.json", stack.mk("team-b", "other"));
    stack.writePod("plain.json", {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { namespace: "team-a", name: "plain" },
      spec: { containers: [{ name: "c", image: "busybox" }] },
    });
    await stack.start();
    await until("a mounted", () => stack.settledMounts(1));
  });

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
    await stack.close();
  });

  describe("authentication", () => {
    it("refuses a malformed or empty Authorization header with 401 before the upgrade", async () => {
      for (const authorization of ["Bearer", "Bearer ", "Basic YWxpY2U6cHc="]) {
        const e = await refused(ConsoleClient.connect(stack.port, stack.ca, { authorization }));
        expect(e.status, authorization).to.equal(401);
      }
      expect(stack.console!.connections).to.equal(0);
    });

    it("refuses an unknown bearer token with 401 before the upgrade", async () => {
      const e = await refused(ConsoleClient.connect(stack.port, stack.ca, { token: "nope" }));
      expect(e.status).to.equal(401);
      expect(e.body).to.match(/token was refused/);
    });

    it("without a token, answers requests with Unauthenticated and closes after the auth timeout", async () => {
      const c = await ConsoleClient.connect(stack.port, stack.ca);
      clients.push(c);
      expect(errorOf(await c.request({ op: "list" })).code).to.equal("Unauthenticated");
      const closed = await c.closed;
      expect(closed.code).to.equal(1008);
      expect(closed.reason).to.match(/authentication timeout/);
    });

    it("accepts a first-frame auth and then serves requests", async () => {
      const c = await ConsoleClient.connect(stack.port, stack.ca);
      clients.push(c);
      expect(await c.ok({ op: "auth", token: "bob-token" })).to.deep.equal({ user: "bob" });
      const list = await c.ok<ListResult>({ op: "list" });
      expect(list.pods.map((p) => `${p.namespace}/${p.pod}`)).to.deep.equal([
        "team-a/trainer",
        "team-b/other",
      ]);
    });

    it("refuses a bad token in the auth frame and closes with 1008", async () => {
      const c = await ConsoleClient.connect(stack.port, stack.ca);
      clients.push(c);
      expect(errorOf(await c.request({ op: "auth", token: "nope" })).code).to.equal("Unauthenticated");
      expect((await c.closed).code).to.equal(1008);
    });

    it("answers 404 outside /console", async () => {
      const e = await refused(
        ConsoleClient.connect(stack.port, stack.ca, { token: "alice-token", path: "/x" }),
      );
      expect(e.status).to.equal(404);
    });
  });

  describe("list and status", () => {
    it("lists this node's injected pods with their mounts and states", async () => {
      const c = await connect();
      const list = await c.ok<ListResult>({ op: "list" });
      expect(list.node).to.equal(NODE_NAME);
      const trainer = list.pods.find((p) => p.pod === "trainer")!;
      expect(trainer).to.deep.include({ namespace: "team-a", node: NODE_NAME, mountPath: "/datasets" });
      expect(trainer.mounts).to.have.length(1);
      expect(trainer.mounts[0]).to.deep.include({
        name: "a",
        state: "mounted",
        bucket: "bucket-a",
        path: "/datasets/a",
      });
      expect(
        (await c.ok<ListResult>({ op: "list", namespace: "team-b" })).pods.map((p) => p.pod),
      ).to.deep.equal(["other"]);
    });

    it("gives one pod's status, NotFound naming the pods directory for a pod with no file, NotFound for a pod without injection", async () => {
      const c = await connect();
      const s = await c.ok<PodSummary>({ op: "status", namespace: "team-a", pod: "trainer" });
      expect(s.mounts.map((m) => m.state)).to.deep.equal(["mounted"]);
      // Local mode: no cluster and no other node to send anyone to.
      for (const op of ["status", "mount"] as const) {
        const ghost = errorOf(
          await c.request(
            op === "status"
              ? { op, namespace: "team-a", pod: "x" }
              : { op, namespace: "team-a", pod: "x", bucket: "bucket-a" },
          ),
        );
        expect(ghost.code, op).to.equal("NotFound");
        expect(ghost.message, op).to.match(new RegExp(`^no pod team-a/x in ${stack.podsDir}[;:]`));
        expect(ghost.message, op).not.to.match(/kubectl|WrongNode|node-1/);
      }
      expect(errorOf(await c.request({ op: "status", namespace: "team-a", pod: "plain" })).code).to.equal(
        "NotFound",
      );
    });
  });

  describe("mount and unmount", () => {
    it("mount edits only the annotation, streams progress, and resolves mounted; a watcher sees it", async () => {
      const watcher = await connect("bob-token");
      await watcher.ok({ op: "watch", namespace: "team-a" });
      const c = await connect();
      const before = JSON.parse(stack.podText("trainer.json")) as Record<string, unknown>;
      const reply = await c.request<MountResult>({
        op: "mount",
        namespace: "team-a",
        pod: "trainer",
        bucket: "bucket-b",
        prefix: "2024/x",
        name: "data",
        readOnly: true,
      });
      expect(reply.ok, JSON.stringify(reply)).to.equal(true);
      const result = (reply as { result: MountResult }).result;
      expect(result.mount).to.deep.include({
        name: "data",
        state: "mounted",
        bucket: "bucket-b",
        prefix: "2024/x",
        readOnly: true,
        path: "/datasets/data",
      });
      expect(c.progressOf(reply.id!).map((p) => p.progress.state)).to.include("mounting");
      expect(stack.buckets("trainer.json")).to.equal("a=bucket-a,data=bucket-b/2024/x:ro");
      // Nothing but the annotation changed.
      const after = JSON.parse(stack.podText("trainer.json")) as {
        metadata: { annotations: Record<string, string> };
      };
      delete after.metadata.annotations["dynamic-volumes/buckets"];
      delete (before as { metadata: { annotations: Record<string, string> } }).metadata.annotations[
        "dynamic-volumes/buckets"
      ];
      expect(after).to.deep.equal(before);
      expect([...stack.engine.mounted.keys()].some((k) => k.endsWith("/data"))).to.equal(true);
      await watcher.waitFor((f) => "event" in f && f.name === "data" && f.state === "mounted");
      expect(watcher.events().every((e) => e.namespace === "team-a" && e.pod === "trainer")).to.equal(true);
    });

    it("mounting what is already mounted resolves at once without rewriting the file", async () => {
      const c = await connect();
      const text = stack.podText("trainer.json");
      const r = await c.ok<MountResult>({
        op: "mount",
        namespace: "team-a",
        pod: "trainer",
        bucket: "bucket-a",
        name: "a",
      });
      expect(r.mount.state).to.equal("mounted");
      expect(stack.podText("trainer.json")).to.equal(text);
    });

    it("refuses a name that exists with a different spec with a Conflict showing the entry, and leaves the file", async () => {
      const c = await connect();
      const text = stack.podText("trainer.json");
      for (const replace of [undefined, false]) {
        const e = errorOf(
          await c.request({
            op: "mount",
            namespace: "team-a",
            pod: "trainer",
            bucket: "bucket-c",
            name: "a",
            ...(replace !== undefined ? { replace } : {}),
          }),
        );
        expect(e.code).to.equal("Conflict");
        expect(e.message).to.include('pod team-a/trainer already has a mount named "a": a=bucket-a.');
        expect(e.message).to.include("dvctl umount team-a/trainer a");
      }
      expect(stack.podText("trainer.json")).to.equal(text);
      expect([...stack.engine.mounted.values()].map((m) => m.req.bucket)).to.deep.equal(["bucket-a"]);
      // Another name for the same bucket is no conflict.
      const extra = await c.ok<MountResult>({
        op: "mount",
        namespace: "team-a",
        pod: "trainer",
        bucket: "bucket-a",
        name: "extra",
      });
      expect(extra.mount).to.deep.include({ name: "extra", state: "mounted" });
      expect(stack.buckets("trainer.json")).to.equal("a=bucket-a,extra=bucket-a");
      const bad = errorOf(
        await c.request({
          op: "mount",
          namespace: "team-a",
          pod: "trainer",
          bucket: "bucket-a",
          replace: "yes" as unknown as boolean,
        }),
      );
      expect(bad.code).to.equal("BadRequest");
      expect(bad.message).to.match(/"replace" must be true or false/);
    });

    it("replaces an entry whose name exists with a different spec when the request says replace", async () => {
      const c = await connect();
      const r = await c.ok<MountResult>({
        op: "mount",
        namespace: "team-a",
        pod: "trainer",
        bucket: "bucket-c",
        name: "a",
        replace: true,
      });
      expect(r.mount).to.deep.include({ state: "mounted", bucket: "bucket-c" });
      expect(stack.buckets("trainer.json")).to.equal("a=bucket-c");
      expect([...stack.engine.mounted.values()].map((m) => m.req.bucket)).to.deep.equal(["bucket-c"]);
    });

    it("unmount removes the entry and resolves once the reconciler unmounted it", async () => {
      // A slow unmount: the reply must still wait for it, not for the status entry to change.
      stack.engine.unmountDelayMs = 300;
      const c = await connect();
      const r = await c.ok<UnmountResult>({ op: "unmount", namespace: "team-a", pod: "trainer", name: "a" });
      expect(r).to.deep.equal({ namespace: "team-a", pod: "trainer", name: "a", state: "removed" });
      expect(stack.buckets("trainer.json")).to.equal(undefined);
      expect(stack.engine.mounted.size).to.equal(0);
      expect(
        errorOf(await c.request({ op: "unmount", namespace: "team-a", pod: "trainer", name: "a" })).code,
      ).to.equal("NotFound");
    });

    it("a mount that fails resolves failed with the client's error, and the entry stays", async () => {
      stack.engine.failures.set("bucket-bad", 1);
      const c = await connect();
      const r = await c.ok<MountResult>({
        op: "mount",
        namespace: "team-b",
        pod: "other",
        bucket: "bucket-bad",
      });
      expect(r.mount.state).to.equal("failed");
      expect(r.mount.error).to.match(/does not exist/);
      expect(stack.buckets("other.json")).to.equal("bucket-bad");
    });

    it("a failed mount is told once, in the reply, with how to remove the entry", async () => {
      stack.engine.failures.set("bucket-bad", 1);
      const c = await connect();
      const reply = await c.request<MountResult>({
        op: "mount",
        namespace: "team-b",
        pod: "other",
        bucket: "bucket-bad",
      });
      expect(reply.ok, JSON.stringify(reply)).to.equal(true);
      const r = (reply as { result: MountResult }).result;
      expect(r.mount.state).to.equal("failed");
      const error = r.mount.error!;
      expect(error.match(/does not exist/g)).to.have.length(1);
      expect(error).to.match(/^s3fs exited: bucket bucket-bad does not exist\n/);
      expect(error).to.include("remove it with: dvctl umount team-b/other bucket-bad");
      // No progress frame repeats the failure that the reply carries.
      const progress = c.progressOf(reply.id!);
      expect(progress.filter((p) => p.progress.error !== undefined)).to.deep.equal([]);
      expect(progress.map((p) => p.progress.state)).not.to.include("failed");
      // Asking again answers the current state at once, with the same single message.
      const again = await c.ok<MountResult>({
        op: "mount",
        namespace: "team-b",
        pod: "other",
        bucket: "bucket-bad",
      });
      if (again.mount.state === "failed") {
        expect(again.mount.error!.match(/does not exist/g)).to.have.length(1);
        expect(again.mount.error!.match(/dvctl umount/g)).to.have.length(1);
      }
    });

    it("a mount that takes too long times out and keeps the annotation edit", async () => {
      stack.engine.mountDelayMs = 3000;
      const c = await connect();
      const e = errorOf(
        await c.request({
          op: "mount",
          namespace: "team-b",
          pod: "other",
          bucket: "bucket-slow",
          timeoutSeconds: 1,
        }),
      );
      expect(e.code).to.equal("Timeout");
      expect(stack.buckets("other.json")).to.equal("bucket-slow");
    });

    it("concurrent mounts on one pod from two clients both end up in the annotation", async () => {
      const [c1, c2] = await Promise.all([connect(), connect("bob-token")]);
      const [r1, r2] = await Promise.all([
        c1.ok<MountResult>({ op: "mount", namespace: "team-b", pod: "other", bucket: "bucket-one" }),
        c2.ok<MountResult>({ op: "mount", namespace: "team-b", pod: "other", bucket: "bucket-two" }),
      ]);
      expect([r1.mount.state, r2.mount.state]).to.deep.equal(["mounted", "mounted"]);
      expect(stack.buckets("other.json")!.split(",").sort()).to.deep.equal(["bucket-one", "bucket-two"]);
    });
  });

  describe("bad frames", () => {
    it("answers each malformed frame with an error and keeps the connection", async () => {
      const c = await connect();
      const text = stack.podText("trainer.json");
      c.sendRaw("{not json");
      const nonJson = await c.waitFor((f) => "ok" in f && f.id === null);
      expect((nonJson as { error: ErrorBody }).error).to.deep.include({ code: "BadRequest" });
      c.sendRaw(Buffer.from([1, 2, 3]), true);
      const binary = await c.waitFor((f) => "ok" in f && f.id === null);
      expect((binary as { error: ErrorBody }).error.message).to.match(/binary frames/);
      c.sendRaw(JSON.stringify({ id: "u", op: "format-disk" }));
      expect(await c.waitFor((f) => "ok" in f && f.id === "u")).to.deep.include({ ok: false });
      const hostile: Array<[Record<string, unknown>, RegExp]> = [
        [{ op: "mount", namespace: "team-a", pod: "trainer" }, /"bucket" is required/],
        [{ op: "mount", namespace: "team-a", pod: "trainer", bucket: "../x" }, /not a valid bucket name/],
        [
          { op: "mount", namespace: "team-a", pod: "trainer", bucket: "bucket-a", name: "-o allow_root" },
          /DNS-1123/,
        ],
        [{ op: "mount", namespace: "team-a", pod: "trainer", bucket: "bucket-a", prefix: "../x" }, /"\.\."/],
        [
          { op: "mount", namespace: "team-a", pod: "trainer", bucket: "bucket-a", name: "n".repeat(10_000) },
          /longer than 63/,
        ],
        [{ op: "unmount", namespace: "team-a", pod: "trainer", name: "../x" }, /DNS-1123/],
        [{ op: "status", namespace: "../x", pod: "trainer" }, /namespace/],
      ];
      for (const [req, message] of hostile) {
        const e = errorOf(await c.request(req as never));
        expect(e.code, JSON.stringify(req).slice(0, 80)).to.equal("BadRequest");
        expect(e.message).to.match(message);
        expect(e.message.length).to.be.below(300);
      }
      expect(stack.podText("trainer.json")).to.equal(text);
      expect((await c.ok<ListResult>({ op: "list" })).pods).to.have.length(2);
    });

    it("closes an oversized frame's connection with 1009 and keeps serving others", async () => {
      const c = await connect();
      c.sendRaw(JSON.stringify({ id: 1, op: "list", pad: "x".repeat(1024 * 1024) }));
      expect((await c.closed).code).to.equal(1009);
      const d = await connect();
      expect((await d.ok<ListResult>({ op: "list" })).pods).to.have.length(2);
    });
  });

  describe("limits", () => {
    it("answers a flood with RateLimited, keeps the connection, closes it under persistent abuse, and stays healthy", async () => {
      const c = await connect();
      const started = performance.now();
      for (let i = 0; i < 120; i++) c.sendRaw(JSON.stringify({ id: i, op: "list" }));
      await until("all replies", () => c.frames.filter((f) => "ok" in f).length === 120);
      const seconds = (performance.now() - started) / 1000;
      const replies = c.frames.filter((f): f is Reply => "ok" in f);
      // The bucket lets 40 through at once and 20 more each second; the rest are refused by it.
      const limited = replies.filter(
        (r) => !r.ok && r.error.code === "RateLimited" && /per second/.test(r.error.message),
      );
      expect(limited.length).to.be.at.least(120 - Math.ceil(40 + 20 * seconds + 1));
      expect(limited.every((r) => typeof r.id === "number")).to.equal(true);
      expect(c.ws.readyState).to.equal(c.ws.OPEN);
      for (let i = 0; i < 300; i++) c.sendRaw(JSON.stringify({ id: i, op: "list" }));
      expect((await c.closed).code).to.equal(1008);
      const d = await connect();
      expect((await d.ok<ListResult>({ op: "list" })).pods).to.have.length(2);
      const health = await httpsRequest({ port: stack.port, path: "/healthz", ca: stack.ca });
      expect(health.status).to.equal(200);
    });

    it("lets a reading watcher take a burst larger than the buffer bound", async () => {
      const w = await connect();
      await w.ok({ op: "watch", namespace: "team-b" });
      const error = "e".repeat(2048);
      // About 400 KiB in one tick: more than the 256 KiB bound, less than twice that.
      for (let i = 0; i < 200; i++)
        stack.reconciler.events.emit("state", { pod: "team-b/other", name: "x", state: "failed", error });
      await until("all events", () => w.events().length === 200);
      await new Promise((r) => setTimeout(r, 300));
      expect(stack.console!.connections).to.equal(1);
    });

    it("drops a watcher that does not read instead of buffering without bound", async () => {
      const slow = await connect();
      await slow.ok({ op: "watch" });
      await until("server connection", () => stack.console!.connections === 1);
      slow.ws.pause();
      const error = "e".repeat(2048);
      let emitted = 0;
      const dropped = async (): Promise<boolean> =>
        (await seriesValue(stack.metrics.consoleRejections, { reason: "slow_reader" })) === 1;
      for (let round = 0; round < 400 && !(await dropped()); round++) {
        for (let i = 0; i < 50; i++, emitted++)
          stack.reconciler.events.emit("state", { pod: "team-a/trainer", name: "a", state: "failed", error });
        await new Promise((r) => setTimeout(r, 5));
      }
      expect(await dropped()).to.equal(true);
      // Kernel buffers plus twice the 256 KiB bound, give or take: far from everything emitted.
      expect(emitted * 2100).to.be.below(64 * 1024 * 1024);
      await until("connection gone", () => stack.console!.connections === 0, 3000);
      slow.ws.resume();
      expect([1013, 1006]).to.include((await slow.closed).code);
    });
  });

  describe("HTTP endpoints", () => {
    it("serves /healthz, /readyz and /metrics with console counters", async () => {
      const c = await connect();
      await c.ok({ op: "list" });
      expect((await httpsRequest({ port: stack.port, path: "/healthz", ca: stack.ca })).status).to.equal(200);
      expect((await httpsRequest({ port: stack.port, path: "/readyz", ca: stack.ca })).status).to.equal(200);
      const m = await httpsRequest({ port: stack.port, path: "/metrics", ca: stack.ca });
      expect(m.text).to.include("dynamic_volumes_console_connections 1");
      expect(m.text).to.match(/dynamic_volumes_console_requests_total\{op="list",result="ok"\} 1/);
      expect((await httpsRequest({ port: stack.port, path: "/nope", ca: stack.ca })).status).to.equal(404);
    });
  });
});
