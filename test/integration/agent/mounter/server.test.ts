/**
 * The mounter's unix socket, real, with a fake service behind it: who may connect (the kernel
 * decides, from the socket's and its directory's owner and mode), what reaches the service (only
 * requests that passed the wire check), and the socket's place on disk. Runs as root: the server
 * chowns the socket to the agent, and peers of other uids are started with setpriv.
 */
import { expect } from "chai";
import { execFile, type ChildProcess } from "node:child_process";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MounterServer } from "../../../../agent/mounter/server.js";
import type { MounterOp } from "../../../../agent/mounter/protocol.js";
import { MAX_LINE_BYTES } from "../../../../agent/mounter/protocol.js";
import { AppError, ConfigError } from "../../../../shared/errors.js";
import { createLogger } from "../../../../shared/logger.js";
import { appFailure } from "../../../support/processes.js";

const log = createLogger({ name: "test", level: process.env.TEST_LOG_LEVEL ?? "silent" });
const AGENT = 65532;
const OTHER = 12345;
const POD = "0123456789abcdef0123456789abcdef";

const MOUNT = {
  op: "mount",
  podId: POD,
  name: "data",
  mounter: "geesefs",
  bucket: "my-bucket",
  prefix: "",
  readOnly: false,
  endpoint: "http://127.0.0.1:9000",
  region: "us-east-1",
  accessKeyID: "AKIAEXAMPLE",
  secretAccessKey: "not-a-real-secret",
  options: {},
};

/** Records every request; answers from `results` by op, or with what `behave` does. */
class FakeService {
  readonly calls: MounterOp[] = [];
  behave: ((req: MounterOp, onStarted: () => void) => Promise<unknown>) | undefined;

  async handle(req: MounterOp, onStarted: () => void): Promise<unknown> {
    this.calls.push(req);
    if (this.behave !== undefined) return this.behave(req, onStarted);
    if (req.op === "ping") return { pid: 4242 };
    return { op: req.op };
  }
}

type Message = Record<string, unknown>;

/** A raw connection to the socket: writes bytes, collects every line the server sends. */
class Peer {
  readonly messages: Message[] = [];
  private buffered = "";
  private waiters: Array<() => void> = [];
  readonly closed: Promise<void>;

  private constructor(readonly socket: Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.buffered += chunk.toString("utf8");
      let nl: number;
      while ((nl = this.buffered.indexOf("\n")) !== -1) {
        this.messages.push(JSON.parse(this.buffered.slice(0, nl)) as Message);
        this.buffered = this.buffered.slice(nl + 1);
      }
      for (const w of this.waiters) w();
    });
    socket.on("error", () => undefined);
    this.closed = new Promise((resolve) => socket.once("close", () => resolve()));
  }

  static open(path: string): Promise<Peer> {
    return new Promise((resolve, reject) => {
      const s = connect(path);
      s.once("error", reject);
      s.once("connect", () => {
        s.off("error", reject);
        const p = new Peer(s);
        peers.add(p);
        resolve(p);
      });
    });
  }

  send(v: unknown): void {
    this.socket.write(typeof v === "string" ? v : `${JSON.stringify(v)}\n`);
  }

  /** The first message that `match`es, waiting for it. */
  async next(match: (m: Message) => boolean, ms = 5000): Promise<Message> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.messages.find(match);
      if (found !== undefined) return found;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no matching message in ${ms} ms; got ${JSON.stringify(this.messages)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
      this.waiters = [];
    }
  }

  reply(seq: number): Promise<Message> {
    return this.next((m) => m.seq === seq && "ok" in m);
  }

  async request(v: Message & { seq: number }): Promise<Message> {
    this.send(v);
    return this.reply(v.seq);
  }
}

const peers = new Set<Peer>();
const children = new Set<ChildProcess>();

/** Connects as `uid`/`gid` (no supplementary groups), pings, and says what happened. */
function connectAs(
  uid: number,
  gid: number,
  socketPath: string,
): Promise<{ connected: boolean; error?: string; reply?: Message }> {
  const script = `
    const s = require("node:net").connect(process.argv[1]);
    const done = (v) => { process.stdout.write(JSON.stringify(v)); s.destroy(); };
    s.on("error", (e) => done({ connected: false, error: e.code }));
    s.on("connect", () => s.write(JSON.stringify({ seq: 1, op: "ping" }) + "\\n"));
    let buf = "";
    s.on("data", (d) => {
      buf += d;
      if (buf.includes("\\n")) done({ connected: true, reply: JSON.parse(buf.split("\\n")[0]) });
    });
    s.on("end", () => done({ connected: true }));
  `;
  return new Promise((resolve, reject) => {
    const child = execFile(
      "setpriv",
      [`--reuid=${uid}`, `--regid=${gid}`, "--clear-groups", process.execPath, "-e", script, socketPath],
      { timeout: 15_000 },
      (err, stdout, stderr) => {
        children.delete(child);
        if (stdout.trim() === "") reject(new Error(`the peer said nothing: ${err?.message ?? ""} ${stderr}`));
        else resolve(JSON.parse(stdout) as { connected: boolean; error?: string; reply?: Message });
      },
    );
    children.add(child);
  });
}

describe("MounterServer (a real unix socket, a fake service)", function () {
  this.timeout(30_000);

  let dir: string;
  let socketPath: string;
  let service: FakeService;
  const servers = new Set<MounterServer>();

  const start = async (path = socketPath): Promise<MounterServer> => {
    const s = await MounterServer.start({ socketPath: path, agentUid: AGENT, agentGid: AGENT, service, log });
    servers.add(s);
    return s;
  };

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "dv-mounter-server-"));
    // mkdtemp makes 0700; peers of other uids must reach <dir>/run to be judged there.
    chmodSync(dir, 0o755);
    socketPath = join(dir, "run", "mounter.sock");
    service = new FakeService();
  });

  afterEach(async () => {
    for (const c of children) c.kill("SIGKILL");
    children.clear();
    for (const p of peers) p.socket.destroy();
    peers.clear();
    for (const s of servers) await s.close();
    servers.clear();
    rmSync(dir, { recursive: true, force: true });
  });

  describe("who may connect", () => {
    it("[ok] the socket is 0660 agent:agent in a directory 0750 root:agent", async () => {
      await start();
      const sock = lstatSync(socketPath);
      expect(sock.isSocket()).to.equal(true);
      expect(sock.mode & 0o7777).to.equal(0o660);
      expect([sock.uid, sock.gid]).to.deep.equal([AGENT, AGENT]);
      const d = lstatSync(join(dir, "run"));
      expect(d.isDirectory()).to.equal(true);
      expect(d.mode & 0o7777).to.equal(0o750);
      expect([d.uid, d.gid]).to.deep.equal([0, AGENT]);
    });

    it("[ok] an existing socket directory with loose modes is tightened", async () => {
      mkdirSync(join(dir, "run"), { mode: 0o777 });
      chmodSync(join(dir, "run"), 0o777);
      await start();
      const d = statSync(join(dir, "run"));
      expect(d.mode & 0o7777).to.equal(0o750);
      expect(d.gid).to.equal(AGENT);
    });

    it("[ok] the umask is the process's own again after start", async () => {
      const before = process.umask();
      await start();
      expect(process.umask()).to.equal(before);
    });

    it("[ok] root connects and pings", async () => {
      await start();
      const p = await Peer.open(socketPath);
      expect(await p.request({ seq: 1, op: "ping" })).to.deep.equal({
        seq: 1,
        ok: true,
        result: { pid: 4242 },
      });
      expect(service.calls).to.deep.equal([{ seq: 1, op: "ping" }]);
    });

    it("[ok] a peer running as the agent's uid and gid is accepted", async () => {
      await start();
      const r = await connectAs(AGENT, AGENT, socketPath);
      expect(r, JSON.stringify(r)).to.deep.equal({
        connected: true,
        reply: { seq: 1, ok: true, result: { pid: 4242 } },
      });
      expect(service.calls).to.deep.equal([{ seq: 1, op: "ping" }]);
    });

    it("[error] a peer running as another uid is refused (EACCES) and the service never called", async () => {
      await start();
      const r = await connectAs(OTHER, OTHER, socketPath);
      expect(r).to.deep.equal({ connected: false, error: "EACCES" });
      expect(service.calls).to.deep.equal([]);
      // The same peer script does get through as the agent: the refusal is the uid's.
      expect((await connectAs(AGENT, AGENT, socketPath)).connected).to.equal(true);
    });

    it("[error] a peer of another uid is refused even with the directory opened up (the socket's own mode)", async () => {
      await start();
      chmodSync(join(dir, "run"), 0o755);
      const r = await connectAs(OTHER, OTHER, socketPath);
      expect(r).to.deep.equal({ connected: false, error: "EACCES" });
      expect(service.calls).to.deep.equal([]);
    });
  });

  describe("what reaches the service", () => {
    let p: Peer;
    beforeEach(async () => {
      await start();
      p = await Peer.open(socketPath);
    });

    const refused = async (req: Message & { seq: number }, message: RegExp): Promise<void> => {
      const r = await p.request(req);
      expect(r.ok, JSON.stringify(r)).to.equal(false);
      const error = r.error as { code: string; message: string };
      expect(error.code).to.equal("BadRequest");
      expect(error.message).to.match(message);
    };

    it("[error] a bad podId, a path that climbs out of the pod, an extra field: refused, service not called", async () => {
      await refused({ seq: 1, ...MOUNT, podId: "../../etc" }, /is not a pod id/);
      await refused(
        { seq: 2, op: "unmount", podId: POD, path: [".."] },
        /path component ".." is not a single/,
      );
      await refused(
        { seq: 3, op: "unmount", podId: POD, path: ["data", "..", ".."] },
        /path component "\.\."/,
      );
      await refused({ seq: 4, op: "rmdir", podId: POD, path: ["../.."] }, /path component/);
      await refused({ seq: 5, ...MOUNT, mountPoint: "/etc" }, /mount takes no field "mountPoint"/);
      await refused({ seq: 6, ...MOUNT, argv: ["/bin/sh"] }, /mount takes no field "argv"/);
      await refused({ seq: 7, ...MOUNT, name: "../x" }, /^name/);
      expect(service.calls).to.deep.equal([]);
      // The connection still serves.
      expect(await p.request({ seq: 8, op: "ping" })).to.include({ ok: true });
      expect(service.calls.map((c) => c.op)).to.deep.equal(["ping"]);
    });

    it("[ok] a well-formed mount reaches the service with exactly its parsed fields", async () => {
      const r = await p.request({ seq: 9, ...MOUNT });
      expect(r).to.deep.equal({ seq: 9, ok: true, result: { op: "mount" } });
      expect(service.calls).to.deep.equal([{ seq: 9, ...MOUNT }]);
    });

    it("[error] a line that is not JSON gets seq -1; one with a readable seq gets that seq", async () => {
      p.send("this is not json\n");
      const r = await p.reply(-1);
      expect(r.error).to.deep.equal({ code: "BadRequest", message: "request is not JSON" });
      await refused({ seq: 11, op: "exec" }, /op "exec" is not one of/);
      expect(service.calls).to.deep.equal([]);
    });

    it("[error] deeply nested JSON is refused before the parse; the connection still serves", async () => {
      p.send(`${"[".repeat(10_000)}${"]".repeat(10_000)}\n`);
      const r = await p.reply(-1);
      expect(r.error).to.deep.include({ code: "BadRequest" });
      expect((r.error as { message: string }).message).to.match(/nests deeper than 8 levels/);
      // A request that only opens brackets, never closing them: not JSON, yet answered as too deep.
      p.send(`{"seq":12,"op":"writeRecord","record":${"{".repeat(5000)}\n`);
      const r2 = await p.next((m) => m.ok === false && m !== r);
      expect((r2.error as { message: string }).message).to.match(/nests deeper/);
      expect(await p.request({ seq: 13, op: "ping" })).to.include({ ok: true });
      expect(service.calls.map((c) => c.op)).to.deep.equal(["ping"]);
    });

    it("[error] a line over 64 KiB gets PayloadTooLarge and the connection is closed; new ones are served", async () => {
      p.send("a".repeat(MAX_LINE_BYTES + 10));
      const r = await p.reply(-1);
      expect(r.error).to.deep.include({ code: "PayloadTooLarge" });
      await p.closed;
      const q = await Peer.open(socketPath);
      expect(await q.request({ seq: 1, op: "ping" })).to.include({ ok: true });
      expect(service.calls.map((c) => c.op)).to.deep.equal(["ping"]);
    });

    it("[error] nothing after an oversized line on that connection reaches the service", async () => {
      // The long line, its end and a mount, written at once: the server reads them in several chunks.
      p.send(`${"a".repeat(MAX_LINE_BYTES + 10)}\n${JSON.stringify({ seq: 2, ...MOUNT })}\n`);
      const r = await p.reply(-1);
      expect(r.error).to.deep.include({ code: "PayloadTooLarge" });
      await p.closed;
      // Give a late chunk the time to be (wrongly) handled.
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(service.calls).to.deep.equal([]);
      expect(p.messages.filter((m) => m.seq === 2)).to.deep.equal([]);
    });

    it("[error] nothing that arrives after the refusal of a long line is served", async () => {
      // A full line's worth, then one byte more in a later chunk: refused with no newline seen.
      p.send("a".repeat(MAX_LINE_BYTES));
      await new Promise((resolve) => setTimeout(resolve, 100));
      // The moment the refusal arrives, and before the end of the connection is seen, more comes.
      p.socket.once("data", () => p.send(`\n${JSON.stringify({ seq: 2, ...MOUNT })}\n`));
      p.send("a");
      const r = await p.reply(-1);
      expect(r.error).to.deep.include({ code: "PayloadTooLarge" });
      await p.closed;
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(service.calls).to.deep.equal([]);
    });

    it("[error] a line over 64 KiB ending in a newline is refused too", async () => {
      p.send(`${JSON.stringify({ seq: 3, op: "ping" })}${" ".repeat(MAX_LINE_BYTES)}\n`);
      const r = await p.reply(-1);
      expect(r.error).to.deep.include({ code: "PayloadTooLarge" });
      await p.closed;
      expect(service.calls).to.deep.equal([]);
    });

    it("[ok] `started` is forwarded before the result", async () => {
      let release!: () => void;
      service.behave = async (_req, onStarted) => {
        onStarted();
        await new Promise<void>((resolve) => (release = resolve));
        return { pid: 77 };
      };
      p.send({ seq: 21, ...MOUNT });
      expect(await p.next((m) => m.seq === 21)).to.deep.equal({ seq: 21, started: true });
      expect(p.messages.filter((m) => "ok" in m)).to.deep.equal([]);
      release();
      expect(await p.reply(21)).to.deep.equal({ seq: 21, ok: true, result: { pid: 77 } });
      expect(p.messages.filter((m) => m.seq === 21)).to.deep.equal([
        { seq: 21, started: true },
        { seq: 21, ok: true, result: { pid: 77 } },
      ]);
    });

    it("[ok] requests in flight together are answered by seq, in the order they finish", async () => {
      const releases = new Map<number, () => void>();
      service.behave = (req) =>
        new Promise((resolve) =>
          releases.set((req as { seq?: number }).seq ?? -1, () => resolve({ op: req.op })),
        );
      p.send(`${JSON.stringify({ seq: 1, op: "ids" })}\n${JSON.stringify({ seq: 2, op: "list" })}\n`);
      while (releases.size < 2) await new Promise((resolve) => setTimeout(resolve, 10));
      releases.get(2)!();
      expect(await p.reply(2)).to.deep.equal({ seq: 2, ok: true, result: { op: "list" } });
      releases.get(1)!();
      expect(await p.reply(1)).to.deep.equal({ seq: 1, ok: true, result: { op: "ids" } });
    });

    it("[error] a service failure: an AppError's code and message; anything else Internal, no detail", async () => {
      service.behave = async (req) => {
        if (req.op === "forgetPod") throw new AppError("Conflict", "busy");
        throw new Error("EACCES: open /root/.aws/credentials");
      };
      expect(await p.request({ seq: 1, op: "forgetPod", podId: POD })).to.deep.equal({
        seq: 1,
        ok: false,
        error: { code: "Conflict", message: "busy" },
      });
      const r = await p.request({ seq: 2, op: "ids" });
      expect(r.error).to.deep.equal({
        code: "Internal",
        message: "internal error in the mounter; its log has the details",
      });
    });

    it("[ok] broadcast reaches every connected client", async () => {
      const q = await Peer.open(socketPath);
      const r = await Peer.open(socketPath);
      // A round trip on each: the server has registered them all.
      for (const [i, x] of [p, q, r].entries()) await x.request({ seq: i, op: "ping" });
      const server = [...servers][0]!;
      server.broadcast({ event: "clientExited", mountPoint: `/x/pods/${POD}/data` });
      for (const x of [p, q, r])
        expect(await x.next((m) => m.event === "clientExited")).to.deep.equal({
          event: "clientExited",
          mountPoint: `/x/pods/${POD}/data`,
        });
      // A closed one is skipped, the others still hear.
      q.socket.destroy();
      await q.closed;
      server.broadcast({ event: "clientExited", mountPoint: "/y" });
      for (const x of [p, r]) await x.next((m) => m.mountPoint === "/y");
    });

    it("[ok] close ends every connection", async () => {
      const server = [...servers][0]!;
      servers.delete(server);
      await server.close();
      await p.closed;
      expect(existsSync(socketPath)).to.equal(false);
    });
  });

  describe("the socket's place", () => {
    it("[ok] a stale socket left by an earlier server is replaced", async () => {
      mkdirSync(join(dir, "run"), { mode: 0o750 });
      // A server that exits without closing leaves its socket file behind.
      await new Promise<void>((resolve, reject) => {
        const child = execFile(
          process.execPath,
          [
            "-e",
            'require("node:net").createServer().listen(process.argv[1], () => process.exit(0))',
            socketPath,
          ],
          (err) => {
            children.delete(child);
            if (err !== null) reject(new Error(err.message));
            else resolve();
          },
        );
        children.add(child);
      });
      expect(lstatSync(socketPath).isSocket()).to.equal(true);
      await start();
      const sock = lstatSync(socketPath);
      expect(sock.mode & 0o7777).to.equal(0o660);
      expect(sock.uid).to.equal(AGENT);
      const p = await Peer.open(socketPath);
      expect(await p.request({ seq: 1, op: "ping" })).to.include({ ok: true });
    });

    it("[error] a regular file in the socket's place: ConfigError, the file untouched", async () => {
      mkdirSync(join(dir, "run"), { mode: 0o750 });
      writeFileSync(socketPath, "keep me", { mode: 0o600 });
      const e = await appFailure(start());
      expect(e).to.be.instanceOf(ConfigError);
      expect(e.message).to.match(/exists and is not a socket/);
      const st = lstatSync(socketPath);
      expect(st.isFile()).to.equal(true);
      expect(readFileSync(socketPath, "utf8")).to.equal("keep me");
      expect(st.mode & 0o7777).to.equal(0o600);
      expect([st.uid, st.gid]).to.deep.equal([0, 0]);
    });

    it("[error] a symlink in the socket's place: ConfigError, the link and its target untouched", async () => {
      mkdirSync(join(dir, "run"), { mode: 0o750 });
      const target = join(dir, "shadow");
      writeFileSync(target, "root only", { mode: 0o600 });
      symlinkSync(target, socketPath);
      const e = await appFailure(start());
      expect(e).to.be.instanceOf(ConfigError);
      expect(e.message).to.match(/exists and is not a socket/);
      expect(lstatSync(socketPath).isSymbolicLink()).to.equal(true);
      expect(readlinkSync(socketPath)).to.equal(target);
      const st = statSync(target);
      expect(readFileSync(target, "utf8")).to.equal("root only");
      expect(st.mode & 0o7777).to.equal(0o600);
      expect([st.uid, st.gid]).to.deep.equal([0, 0]);
    });

    it("[error] a dangling symlink in the socket's place: ConfigError, nothing made at its target", async () => {
      mkdirSync(join(dir, "run"), { mode: 0o750 });
      const target = join(dir, "nowhere");
      symlinkSync(target, socketPath);
      const e = await appFailure(start());
      expect(e).to.be.instanceOf(ConfigError);
      expect(existsSync(target)).to.equal(false);
      expect(lstatSync(socketPath).isSymbolicLink()).to.equal(true);
    });

    it("[error] a socket directory that is a symlink: ConfigError, its target untouched", async () => {
      const real = join(dir, "elsewhere");
      mkdirSync(real, { mode: 0o700 });
      symlinkSync(real, join(dir, "run"));
      const e = await appFailure(start());
      expect(e).to.be.instanceOf(ConfigError);
      expect(e.message).to.match(/is not a directory/);
      const st = statSync(real);
      expect(st.mode & 0o7777).to.equal(0o700);
      expect(st.gid).to.equal(0);
      expect(existsSync(join(real, "mounter.sock"))).to.equal(false);
    });
  });
});
