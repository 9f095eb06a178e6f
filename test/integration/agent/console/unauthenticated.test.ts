/**
 * Connections that never authenticate, against the real console (wss with a generated PKI, static
 * tokens): a thousand websockets held open from one address, a thousand raw TCP sockets that never
 * start TLS, the per-address and total caps, and the deadline. Linux routes all of 127/8 to the
 * loopback interface, so each peer binds its own 127.x address with `localAddress`.
 */
import { expect } from "chai";
import { rmSync } from "node:fs";
import { connect as tcpConnect, type Socket } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { WebSocket } from "ws";
import {
  AuthenticatedUserAuthorizer,
  StaticTokenAuthenticator,
  parseTokenAuthFile,
} from "../../../../agent/console/auth.js";
import type { ConsoleLimits } from "../../../../agent/console/server.js";
import { CONSOLE_PATH } from "../../../../shared/protocol.js";
import { ConsoleStack } from "../../../support/console-stack.js";
import { makeTestPki, type TestPki } from "../../../support/tls.js";
import { seriesValue } from "../../../../shared/metrics.js";

const USERS = 15;
const TOKENS = Array.from({ length: USERS }, (_, i) => `user-${i}-token,user-${i},${i}\n`).join("");
const userAddress = (i: number): string => `127.0.1.${i + 1}`;

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

type Attempt =
  | { readonly kind: "open"; readonly ws: WebSocket }
  | { readonly kind: "refused"; readonly status: number; readonly body: string; readonly retryAfter?: string }
  | { readonly kind: "failed"; readonly error: string };

/** Every socket a test opens, so that `afterEach` can end what a failed assertion left behind. */
const opened = new Set<WebSocket | Socket>();

/** Opens a console websocket from `from`, with a bearer header when `token` is given; never rejects. */
function openConsole(port: number, ca: string, from: string, token?: string): Promise<Attempt> {
  const ws = new WebSocket(`wss://127.0.0.1:${port}${CONSOLE_PATH}`, {
    ca,
    localAddress: from,
    handshakeTimeout: 15_000,
    ...(token !== undefined ? { headers: { authorization: `Bearer ${token}` } } : {}),
  });
  opened.add(ws);
  ws.once("close", () => opened.delete(ws));
  return new Promise((resolve) => {
    ws.once("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => {
        const retryAfter = res.headers["retry-after"];
        resolve({
          kind: "refused",
          status: res.statusCode ?? 0,
          body: body.trim(),
          ...(retryAfter !== undefined ? { retryAfter } : {}),
        });
        ws.terminate();
      });
    });
    ws.on("error", (e) => resolve({ kind: "failed", error: e.message }));
    ws.once("open", () => resolve({ kind: "open", ws }));
  });
}

/** Sends one request and resolves with its reply (or rejects when the connection closes first). */
function request(ws: WebSocket, req: Record<string, unknown>, ms = 10_000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no reply to ${JSON.stringify(req)} in ${ms} ms`)), ms);
    const onMessage = (data: Buffer): void => {
      const frame = JSON.parse(data.toString("utf8")) as Record<string, unknown>;
      if (frame.id !== req.id || !("ok" in frame)) return;
      cleanup();
      resolve(frame);
    };
    const onClose = (code: number, reason: Buffer): void => {
      cleanup();
      reject(
        new Error(`closed with ${code} ${reason.toString()} before the reply to ${JSON.stringify(req)}`),
      );
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      ws.off("message", onMessage);
      ws.off("close", onClose);
    };
    ws.on("message", onMessage);
    ws.once("close", onClose);
    ws.send(JSON.stringify(req));
  });
}

/**
 * A valid user from its own address: with the token in the `Authorization` header, or (`viaFrame`)
 * in an `auth` frame; then a `list` that must succeed. Resolves with the open socket, or a reason.
 */
async function userSession(
  stack: ConsoleStack,
  i: number,
  viaFrame: boolean,
): Promise<{ ws: WebSocket } | { failure: string }> {
  const token = `user-${i}-token`;
  const a = await openConsole(stack.port, stack.ca, userAddress(i), viaFrame ? undefined : token);
  if (a.kind === "refused") return { failure: `user ${i}: HTTP ${a.status} ${a.body}` };
  if (a.kind === "failed") return { failure: `user ${i}: ${a.error}` };
  try {
    if (viaFrame) {
      const auth = await request(a.ws, { id: "auth", op: "auth", token });
      if (auth.ok !== true) return { failure: `user ${i}: auth frame refused: ${JSON.stringify(auth)}` };
    }
    const list = await request(a.ws, { id: "list", op: "list" });
    if (list.ok !== true) return { failure: `user ${i}: list failed: ${JSON.stringify(list)}` };
  } catch (e) {
    return { failure: `user ${i}: ${(e as Error).message}` };
  }
  return { ws: a.ws };
}

/** Every user at once, half of them with the header and half with an `auth` frame. */
async function allUsers(stack: ConsoleStack): Promise<{ sessions: WebSocket[]; failures: string[] }> {
  const results = await Promise.all(
    Array.from({ length: USERS }, (_, i) => userSession(stack, i, i % 2 === 1)),
  );
  return {
    sessions: results.flatMap((r) => ("ws" in r ? [r.ws] : [])),
    failures: results.flatMap((r) => ("failure" in r ? [r.failure] : [])),
  };
}

/** A raw TCP connection from `from` that sends nothing. Resolves once connected, or with undefined when refused. */
function rawSocket(port: number, from: string): Promise<Socket | undefined> {
  const s = tcpConnect({ port, host: "127.0.0.1", localAddress: from });
  opened.add(s);
  s.once("close", () => opened.delete(s));
  s.on("error", () => undefined);
  return new Promise((resolve) => {
    s.once("connect", () => resolve(s));
    s.once("close", () => resolve(undefined));
  });
}

function closedWithin(s: Socket | WebSocket, ms: number): Promise<boolean> {
  if (s instanceof WebSocket ? s.readyState === WebSocket.CLOSED : s.destroyed) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    s.once("close", () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

async function endAll(): Promise<void> {
  for (const s of [...opened]) {
    if (s instanceof WebSocket) s.terminate();
    else s.destroy();
  }
  await until("every test socket closed", () => opened.size === 0, 10_000);
}

function startStack(pki: TestPki, limits: Partial<ConsoleLimits>): Promise<ConsoleStack> {
  const stack = new ConsoleStack({
    pki,
    authenticator: new StaticTokenAuthenticator(parseTokenAuthFile(TOKENS).tokens),
    authorizer: new AuthenticatedUserAuthorizer(),
    limits,
  });
  stack.writePod("trainer.json", stack.mk("team-a", "trainer"));
  return stack.start().then(() => stack);
}

describe("agent console: connections that do not authenticate", function () {
  // A thousand TLS handshakes, client and server in this one process, take about 7 s on two cores.
  this.timeout(120_000);
  let pki: TestPki;
  let stack: ConsoleStack | undefined;

  before(() => {
    pki = makeTestPki();
  });
  after(() => rmSync(pki.dir, { recursive: true, force: true }));
  afterEach(async () => {
    await endAll();
    await stack?.close();
    stack = undefined;
  });

  describe("a thousand sockets from one address, held open", () => {
    it("websockets without a token: every one of 15 users still gets in and runs a request", async () => {
      // The authenticated cap is one the attacker's sockets alone would fill if they counted in it,
      // and the deadline is out of reach: the attacker's sockets stay as long as the server lets them.
      stack = await startStack(pki, { maxConnections: 1000, authTimeoutMs: 60_000 });
      const attacker = "127.0.0.2";
      const wave = (n: number): Promise<Attempt[]> =>
        Promise.all(Array.from({ length: n }, () => openConsole(stack!.port, stack!.ca, attacker)));
      const first = await wave(1000);
      const held = first.filter((a) => a.kind === "open");
      // The users log in while the attacker keeps opening more.
      const [users, second] = await Promise.all([allUsers(stack), wave(300)]);
      expect(users.failures, "users refused").to.deep.equal([]);
      expect(users.sessions).to.have.length(USERS);

      expect(held.length, "attacker websockets accepted").to.be.within(1, 8);
      const refusals = first.flatMap((a) => (a.kind === "refused" ? [a] : []));
      expect(refusals.length + held.length, "every other attempt refused with an answer").to.equal(1000);
      expect(refusals.every((r) => r.status === 429 && r.retryAfter === "1")).to.equal(true);
      expect(refusals[0]?.body).to.match(/from 127\.0\.0\.2 are authenticating/);
      expect(second.filter((a) => a.kind === "open")).to.have.length(0);
      expect(stack.console!.unauthenticatedConnections).to.equal(held.length);
      // Still served once the flood is over.
      for (const ws of users.sessions)
        expect((await request(ws, { id: "again", op: "list" })).ok).to.equal(true);
      const rejected = stack.metrics.consoleRejections;
      expect(
        await seriesValue(rejected, { reason: "too_many_unauthenticated_per_address" }),
      ).to.be.greaterThan(0);
      expect(await seriesValue(stack.metrics.consoleUnauthenticated, { stage: "auth_frame" })).to.equal(
        held.length,
      );
    });

    it("raw TCP connections that never start TLS: at most the handshake cap stays, users get in, /healthz answers", async () => {
      stack = await startStack(pki, { authTimeoutMs: 60_000 });
      const attacker = "127.0.0.3";
      const sockets = await Promise.all(Array.from({ length: 1000 }, () => rawSocket(stack!.port, attacker)));
      // The server resets what is over the cap right after the accept.
      await until(
        "the excess reset",
        () => [...opened].filter((s) => !(s instanceof WebSocket)).length <= 32,
      );
      const left = sockets.filter((s): s is Socket => s !== undefined && !s.destroyed);
      expect(left.length, "raw sockets the server keeps").to.be.within(1, 32);
      expect(stack.console!.handshaking).to.equal(left.length);

      const users = await allUsers(stack);
      expect(users.failures).to.deep.equal([]);
      const health = await openTls(
        stack.port,
        stack.ca,
        "127.0.0.9",
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
      );
      expect(health).to.match(/^HTTP\/1\.1 200/);
      expect(
        await seriesValue(stack.metrics.consoleRejections, { reason: "too_many_handshakes_per_address" }),
      ).to.be.greaterThan(900);
    });
  });

  describe("caps on connections that are authenticating", () => {
    beforeEach(async () => {
      stack = await startStack(pki, { authTimeoutMs: 60_000 });
    });

    it("refuses a ninth websocket without a token from one address with 429, and frees the slot when one authenticates", async () => {
      const from = "127.0.0.4";
      const eight = await Promise.all(
        Array.from({ length: 8 }, () => openConsole(stack!.port, stack!.ca, from)),
      );
      expect(eight.map((a) => a.kind)).to.deep.equal(Array(8).fill("open"));
      const ninth = await openConsole(stack!.port, stack!.ca, from);
      expect(ninth).to.deep.include({ kind: "refused", status: 429, retryAfter: "1" });
      // Another address is not affected, nor a client of the same address that sends its token at once.
      expect((await openConsole(stack!.port, stack!.ca, "127.0.0.5")).kind).to.equal("open");
      expect((await openConsole(stack!.port, stack!.ca, from, "user-0-token")).kind).to.equal("open");
      // One of the eight authenticates: its slot is free for the next.
      const ws = (eight[0] as { ws: WebSocket }).ws;
      expect((await request(ws, { id: 1, op: "auth", token: "user-1-token" })).ok).to.equal(true);
      expect((await openConsole(stack!.port, stack!.ca, from)).kind).to.equal("open");
      expect(stack!.console!.unauthenticatedConnections).to.equal(8 + 1);
    });

    it("refuses beyond the total with 503, while clients that send their token at the upgrade still get in", async () => {
      const squatters = await Promise.all(
        Array.from({ length: 64 }, (_, i) => openConsole(stack!.port, stack!.ca, `127.0.2.${1 + (i % 8)}`)),
      );
      expect(squatters.every((a) => a.kind === "open")).to.equal(true);
      const next = await openConsole(stack!.port, stack!.ca, "127.0.2.9");
      expect(next).to.deep.include({ kind: "refused", status: 503, retryAfter: "1" });
      expect((next as { body: string }).body).to.match(/too many console connections are authenticating/);
      const withHeader = await userSession(stack!, 0, false);
      expect(withHeader, JSON.stringify(withHeader)).to.have.property("ws");
    });
  });

  describe("the deadline", () => {
    const DEADLINE_MS = 400;
    beforeEach(async () => {
      stack = await startStack(pki, { authTimeoutMs: DEADLINE_MS });
    });

    it("closes a websocket that never authenticates with 1008 and keeps those that did", async () => {
      const idle = await openConsole(stack!.port, stack!.ca, "127.0.0.6");
      const header = await userSession(stack!, 0, false);
      const frame = await userSession(stack!, 1, true);
      if (idle.kind !== "open" || !("ws" in header) || !("ws" in frame)) throw new Error("could not connect");
      const closed = new Promise<[number, string]>((resolve) =>
        idle.ws.once("close", (code, reason) => resolve([code, reason.toString()])),
      );
      expect(await closedWithin(idle.ws, DEADLINE_MS + 2000)).to.equal(true);
      expect(await closed).to.deep.equal([1008, "authentication timeout: send an auth request first"]);
      await new Promise((r) => setTimeout(r, DEADLINE_MS));
      for (const ws of [header.ws, frame.ws])
        expect((await request(ws, { id: 2, op: "list" })).ok).to.equal(true);
      expect(await seriesValue(stack!.metrics.consoleRejections, { reason: "auth_timeout" })).to.equal(1);
      await until("the slot given back", () => stack!.console!.unauthenticatedConnections === 0);
    });

    it("destroys a TCP connection that never starts TLS, and one that never sends a request after it", async () => {
      const raw = await rawSocket(stack!.port, "127.0.0.7");
      const tls = await tlsIdle(stack!.port, stack!.ca, "127.0.0.8");
      expect(raw).to.not.equal(undefined);
      expect(await closedWithin(raw!, DEADLINE_MS + 2000), "raw TCP socket closed").to.equal(true);
      expect(await closedWithin(tls, DEADLINE_MS + 2000), "idle TLS socket closed").to.equal(true);
      expect(await seriesValue(stack!.metrics.consoleRejections, { reason: "handshake_timeout" })).to.equal(
        2,
      );
      expect(stack!.console!.handshaking).to.equal(0);
    });
  });
});

/** A TLS connection from `from` that completes the handshake and sends nothing. */
function tlsIdle(port: number, ca: string, from: string): Promise<Socket> {
  const s = tlsFrom(port, ca, from);
  opened.add(s);
  s.once("close", () => opened.delete(s));
  s.on("error", () => undefined);
  return new Promise((resolve, reject) => {
    s.once("secureConnect", () => resolve(s));
    s.once("close", () => reject(new Error("the TLS connection closed before its handshake")));
  });
}

/** Sends `text` over a fresh TLS connection from `from` and resolves with the first chunk of the answer. */
function openTls(port: number, ca: string, from: string, text: string): Promise<string> {
  const s = tlsFrom(port, ca, from);
  opened.add(s);
  s.once("close", () => opened.delete(s));
  return new Promise((resolve, reject) => {
    s.on("error", reject);
    s.once("secureConnect", () => s.write(text));
    s.once("data", (d: Buffer) => {
      resolve(d.toString("utf8"));
      s.destroy();
    });
  });
}

/** TLS to the stack from the local address `from` (which `tls.connect` takes only through its socket). */
function tlsFrom(port: number, ca: string, from: string): TLSSocket {
  const tcp = tcpConnect({ port, host: "127.0.0.1", localAddress: from });
  tcp.on("error", () => undefined);
  return tlsConnect({ socket: tcp, ca, servername: "localhost" });
}
