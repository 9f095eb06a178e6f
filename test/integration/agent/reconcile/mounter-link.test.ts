/**
 * The agent's side of the mounter socket, against a real MounterServer with a fake service: the
 * link waits for the mounter and reconnects by itself, says Unavailable meanwhile, turns paths into
 * pod ids and components (never sending a path or a command), and hands on the mounter's events.
 */
import { expect } from "chai";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { MountRequest } from "../../../../agent/mount/mounters/types.js";
import type { MounterOp } from "../../../../agent/mounter/protocol.js";
import { MounterServer } from "../../../../agent/mounter/server.js";
import { listClients, MounterLink } from "../../../../agent/reconcile/mounter-link.js";
import type { MountSpec } from "../../../../agent/reconcile/plan.js";
import { AppError } from "../../../../shared/errors.js";
import { createLogger } from "../../../../shared/logger.js";
import { appFailure, waitFor } from "../../../support/processes.js";

const log = createLogger({ name: "test", level: process.env.TEST_LOG_LEVEL ?? "silent" });
const POD = "0123456789abcdef0123456789abcdef";
const SECRET = "link-test-secret-value";

/** Records every request; answers from `answer` by op, or with what `behave` does. */
class FakeService {
  readonly calls: MounterOp[] = [];
  readonly events: string[] = [];
  behave: ((req: MounterOp, onStarted: () => void) => Promise<unknown>) | undefined;
  answer: Partial<Record<MounterOp["op"], unknown>> = {};

  async handle(req: MounterOp, onStarted: () => void): Promise<unknown> {
    this.calls.push(req);
    if (this.behave !== undefined) return this.behave(req, onStarted);
    return this.answer[req.op] ?? {};
  }

  /** The requests, without their sequence numbers. */
  get ops(): Array<Record<string, unknown>> {
    return this.calls.map((c) => {
      const { seq: _seq, ...rest } = c as MounterOp & { seq?: number };
      return rest;
    });
  }
}

describe("MounterLink (a real mounter socket, a fake service)", function () {
  this.timeout(30_000);

  let dir: string;
  let root: string;
  let socketPath: string;
  let service: FakeService;
  let server: MounterServer | undefined;
  let link: MounterLink | undefined;
  const mounted: string[] = [];
  let reconnects: number;
  let exits: string[];

  const entry = (name: string): string => join(root, "pods", POD, name);

  const startServer = async (): Promise<MounterServer> => {
    server = await MounterServer.start({ socketPath, agentUid: 65532, agentGid: 65532, service, log });
    return server;
  };

  const stopServer = async (): Promise<void> => {
    const s = server;
    server = undefined;
    await s?.close();
  };

  const newLink = (): MounterLink => {
    link = new MounterLink({
      root,
      socketPath,
      log,
      reconnectBaseMs: 10,
      reconnectMaxMs: 40,
      tableMaxAgeMs: 0,
      onReconnect: () => reconnects++,
      onClientExit: (mp) => exits.push(mp),
    });
    link.start();
    return link;
  };

  const request = (mountPoint: string): MountRequest => ({
    bucket: "my-bucket",
    prefix: "a/b",
    readOnly: true,
    mountPoint,
    endpoint: "http://127.0.0.1:9000",
    region: "eu-west-1",
    credentials: { accessKeyID: "AKIALINK", secretAccessKey: SECRET },
    options: { "stat-cache-ttl": "1m", "no-checksum": true },
    stateDir: "/somewhere/the/mounter/never/hears/of",
  });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "dv-mounter-link-"));
    root = join(dir, "root");
    mkdirSync(join(root, "pods", POD, "data"), { recursive: true });
    socketPath = join(root, "run", "mounter.sock");
    service = new FakeService();
    reconnects = 0;
    exits = [];
  });

  afterEach(async () => {
    link?.stop();
    link = undefined;
    await stopServer();
    for (const mp of mounted.splice(0)) execFileSync("umount", ["-l", mp]);
    rmSync(dir, { recursive: true, force: true });
  });

  describe("reaching the mounter", () => {
    it("[error] with no mounter listening: Unavailable, saying the mounter is not reachable", async () => {
      const l = newLink();
      expect(l.connected).to.equal(false);
      const e = await appFailure(l.mount(request(entry("data")), "geesefs"));
      expect(e.code).to.equal("Unavailable");
      expect(e.message).to.match(/the node's mounter is not reachable/);
      expect(e.message).to.include(socketPath);
      expect(e.message).to.not.include(SECRET);
      for (const p of [
        l.ids(),
        l.read(POD, "data"),
        l.unmount(entry("data")),
        l.rmdir(join(root, "pods", POD)),
      ])
        expect((await appFailure(p)).code).to.equal("Unavailable");
      expect(l.connected).to.equal(false);
    });

    it("[ok] once the mounter starts, the link connects by itself", async () => {
      const l = newLink();
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(l.connected).to.equal(false);
      await startServer();
      await waitFor("the link to connect", async () => l.connected, 5000, 10);
      // Connecting the first time is no reconnect.
      expect(reconnects).to.equal(0);
      expect(await l.ids()).to.equal(undefined);
      service.answer.ids = { ids: [POD] };
      expect(await l.ids()).to.deep.equal([POD]);
    });

    it("[ok] ready() resolves once the mounter is up", async () => {
      const l = newLink();
      const ready = l.ready().catch(() => "rejected");
      // The first attempt fails: ready() says so, and the link keeps trying.
      expect(await ready).to.equal("rejected");
      await startServer();
      await waitFor("the link to connect", async () => l.connected, 5000, 10);
      await l.ready();
    });

    it("[ok] a restarted mounter: the link reconnects, and onReconnect is called once per reconnect", async () => {
      await startServer();
      const l = newLink();
      await waitFor("the first connection", async () => l.connected, 5000, 10);
      expect(reconnects).to.equal(0);
      for (let round = 1; round <= 3; round++) {
        await stopServer();
        await waitFor("the link to notice", async () => !l.connected, 5000, 10);
        const e = await appFailure(l.ids());
        expect(e.code).to.equal("Unavailable");
        // Several failed attempts while the mounter is away.
        await new Promise((resolve) => setTimeout(resolve, 100));
        expect(reconnects).to.equal(round - 1);
        await startServer();
        await waitFor("the link to reconnect", async () => l.connected, 5000, 10);
        expect(reconnects).to.equal(round);
      }
      // And it stays at one per reconnect.
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(reconnects).to.equal(3);
      service.answer.ids = { ids: [] };
      expect(await l.ids()).to.deep.equal([]);
    });

    it("[error] a request in flight when the mounter goes away fails with Unavailable", async () => {
      await startServer();
      const l = newLink();
      await l.ready();
      service.behave = () => new Promise(() => undefined);
      const pending = l.mount(request(entry("data")), "s3fs");
      await waitFor("the request to arrive", async () => service.calls.length === 1, 5000, 10);
      await stopServer();
      const e = await appFailure(pending);
      expect(e.code).to.equal("Unavailable");
      expect(e.message).to.match(/not reachable/);
    });

    it("[ok] after stop() the link no longer reconnects", async () => {
      await startServer();
      const l = newLink();
      await l.ready();
      l.stop();
      await waitFor("the link to close", async () => !l.connected, 5000, 10);
      await new Promise((resolve) => setTimeout(resolve, 150));
      expect(l.connected).to.equal(false);
      expect(reconnects).to.equal(0);
    });
  });

  describe("requests", () => {
    let l: MounterLink;
    beforeEach(async () => {
      await startServer();
      l = newLink();
      await l.ready();
    });

    it("[ok] a mount carries the pod id and entry name, the data, and never a path or an argv", async () => {
      service.answer.mount = { pid: 123, readyMs: 45, fsType: "fuse.geesefs" };
      const r = await l.mount({ ...request(entry("data")), uid: 1000, gid: 2000 }, "geesefs");
      expect(r).to.deep.equal({ pid: 123, readyMs: 45, fsType: "fuse.geesefs" });
      expect(service.ops).to.deep.equal([
        {
          op: "mount",
          podId: POD,
          name: "data",
          mounter: "geesefs",
          bucket: "my-bucket",
          prefix: "a/b",
          readOnly: true,
          endpoint: "http://127.0.0.1:9000",
          region: "eu-west-1",
          accessKeyID: "AKIALINK",
          secretAccessKey: SECRET,
          options: { "stat-cache-ttl": "1m", "no-checksum": true },
          uid: 1000,
          gid: 2000,
        },
      ]);
      const sent = JSON.stringify(service.calls);
      for (const word of ["mountPoint", "stateDir", "argv", "path", "/somewhere", root])
        expect(sent).to.not.include(word);
      // No uid or gid given, none sent.
      await l.mount(request(entry("data")), "rclone");
      expect(service.ops[1]).to.not.have.any.keys("uid", "gid", "listBeforePlacing");
      expect(service.ops[1]).to.include({ mounter: "rclone" });
      await l.mount({ ...request(entry("data")), listBeforePlacing: true }, "rclone");
      expect(service.ops[2]).to.include({ listBeforePlacing: true });
    });

    it("[ok] onStarted is called before mount resolves", async () => {
      const order: string[] = [];
      service.behave = async (_req, onStarted) => {
        onStarted();
        await new Promise((resolve) => setTimeout(resolve, 50));
        order.push("service done");
        return { pid: 1 };
      };
      await l.mount(request(entry("data")), "geesefs", () => order.push("started"));
      order.push("resolved");
      expect(order).to.deep.equal(["started", "service done", "resolved"]);
    });

    it("[error] the mounter's refusal comes back as its AppError", async () => {
      service.behave = async () => {
        throw new AppError("MountFailed", "geesefs exited with status 1");
      };
      const e = await appFailure(l.mount(request(entry("data")), "geesefs"));
      expect(e.code).to.equal("MountFailed");
      expect(e.message).to.equal("geesefs exited with status 1");
      service.behave = async () => {
        throw new Error(`internal detail ${SECRET}`);
      };
      const e2 = await appFailure(l.unmount(entry("data")));
      expect(e2.code).to.equal("Internal");
      expect(e2.message).to.not.include(SECRET);
    });

    it("[error] a mount point that is not <root>/pods/<id>/<name> is refused before anything is sent", async () => {
      for (const mp of [
        "/etc",
        join(root, "agent", "x"),
        join(root, "pods"),
        join(root, "pods", POD),
        join(root, "pods", POD, "data", "deeper"),
        `${root}/pods/${POD}/../../../etc`,
        `${root}/pods/../pods-evil/${POD}/data`,
      ]) {
        const e = await appFailure(l.mount(request(mp), "geesefs"));
        expect(e.code, mp).to.equal("Internal");
      }
      expect(service.calls).to.deep.equal([]);
    });

    it("[error] a bad entry name the link lets through is refused by the mounter, not served", async () => {
      const e = await appFailure(l.mount(request(entry("Not_A_Label")), "geesefs"));
      expect(e.code).to.equal("BadRequest");
      expect(service.calls).to.deep.equal([]);
    });

    it("[ok] unmount and rmdir send the pod id and the components below it", async () => {
      await l.unmount(entry("data"));
      await l.unmount(`${entry("data")}/sub/dir`);
      await l.rmdir(join(root, "pods", POD));
      await l.rmdir(entry("data"));
      expect(service.ops).to.deep.equal([
        { op: "unmount", podId: POD, path: ["data"] },
        { op: "unmount", podId: POD, path: ["data", "sub", "dir"] },
        { op: "rmdir", podId: POD, path: [] },
        { op: "rmdir", podId: POD, path: ["data"] },
      ]);
    });

    it("[error] rmdir deeper than one component, or outside the pods, is refused locally", async () => {
      for (const p of [`${entry("data")}/sub`, "/etc", join(root, "pods"), `${root}/pods/../run`])
        expect((await appFailure(l.rmdir(p))).code, p).to.equal("Internal");
      for (const p of ["/etc", join(root, "pods"), `${root}/pods/../run`])
        expect((await appFailure(l.unmount(p))).code, p).to.equal("Internal");
      expect(service.calls).to.deep.equal([]);
    });

    it("[ok] the records map to readRecord, writeRecord, forget, forgetPod and ids", async () => {
      const spec: MountSpec = {
        name: "data",
        bucket: "b",
        prefix: "",
        readOnly: false,
        mounter: "geesefs",
        secretName: "s3",
        options: {},
      };
      expect(await l.read(POD, "data")).to.equal(undefined);
      service.answer.readRecord = { record: spec };
      expect(await l.read(POD, "data")).to.deep.equal(spec);
      await l.write(POD, "data", spec);
      const kept = { path: "/cache", bytes: 1 };
      service.answer.forget = { kept };
      expect(await l.remove(POD, "data")).to.deep.equal(kept);
      service.answer.forgetPod = { kept: [kept] };
      expect(await l.removePod(POD)).to.deep.equal([kept]);
      service.answer.ids = { ids: [POD] };
      expect(await l.ids()).to.deep.equal([POD]);
      expect(service.ops).to.deep.equal([
        { op: "readRecord", podId: POD, name: "data" },
        { op: "readRecord", podId: POD, name: "data" },
        { op: "writeRecord", podId: POD, name: "data", record: spec },
        { op: "forget", podId: POD, name: "data" },
        { op: "forgetPod", podId: POD },
        { op: "ids" },
      ]);
    });

    it("[ok] listClients asks for the list", async () => {
      service.answer.list = { clients: [{ mountPoint: entry("data"), pid: 99 }] };
      expect(await listClients(socketPath)).to.deep.equal(new Map([[entry("data"), 99]]));
    });
  });

  describe("the mounter's events", () => {
    it("[ok] a clientExited broadcast calls onClientExit with the mount point", async () => {
      const s = await startServer();
      const l = newLink();
      await l.ready();
      s.broadcast({ event: "clientExited", mountPoint: entry("data") });
      await waitFor("onClientExit", async () => exits.length > 0, 5000, 10);
      expect(exits).to.deep.equal([entry("data")]);
      s.broadcast({ event: "clientExited", mountPoint: entry("other") });
      await waitFor("the second event", async () => exits.length > 1, 5000, 10);
      expect(exits).to.deep.equal([entry("data"), entry("other")]);
    });

    it("[ok] after clientExited a probe of that mount says stale, until it is mounted again", async () => {
      const mp = entry("data");
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "dv-link-test", mp]);
      mounted.push(mp);
      expect(readFileSync("/proc/self/mountinfo", "utf8")).to.include(mp);
      const s = await startServer();
      const l = newLink();
      await l.ready();
      expect(await l.probe(mp)).to.equal("ok");
      s.broadcast({ event: "clientExited", mountPoint: mp });
      await waitFor("onClientExit", async () => exits.length > 0, 5000, 10);
      expect(await l.probe(mp)).to.equal("stale");
      // Another mount point's client is unaffected.
      expect(await l.probe(entry("absent"))).to.equal("absent");
      await l.mount(request(mp), "geesefs");
      expect(await l.probe(mp)).to.equal("ok");
    });
  });
});
