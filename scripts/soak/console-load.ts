/**
 * Console clients against the agent's wss console (static token auth): sessions that list, ask for
 * status, mount and unmount (edits of the pods' annotations that race with the flipper) and watch,
 * half of them ending abruptly; and bad inputs, each of which must be refused cleanly while the
 * agent keeps serving.
 */
import { WebSocket } from "ws";
import { formatBucketEntry } from "../../shared/buckets.js";
import { CONSOLE_PATH, parseServerFrame, type ServerFrame } from "../../shared/protocol.js";
import { CONSOLE_NAMES, randomEntry } from "./catalog.js";
import type { Prng } from "./prng.js";
import type { Tracker } from "./tracker.js";
import type { SoakPod, World } from "./world.js";

type Reply = Extract<ServerFrame, { ok: boolean }>;
type Outcome = Reply | "closed" | "timeout";

/** A minimal client: numbered requests, replies matched by id, progress and events ignored. */
class Conn {
  private nextId = 1;
  private readonly waiting = new Map<string | number, (r: Outcome) => void>();
  private readonly nullReplies: Array<(r: Outcome) => void> = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  isClosed = false;

  private constructor(readonly ws: WebSocket) {
    ws.on("message", (data, isBinary) => {
      if (isBinary) return;
      let f: ServerFrame;
      try {
        f = parseServerFrame((data as Buffer).toString("utf8"));
      } catch {
        return;
      }
      if (!("ok" in f)) return;
      const fn = f.id === null ? this.nullReplies.shift() : this.waiting.get(f.id);
      if (f.id !== null) this.waiting.delete(f.id);
      fn?.(f);
    });
    ws.on("error", () => undefined);
    this.closed = new Promise((resolve) =>
      ws.once("close", (code, reason) => {
        this.isClosed = true;
        for (const fn of [...this.waiting.values(), ...this.nullReplies]) fn("closed");
        this.waiting.clear();
        this.nullReplies.length = 0;
        resolve({ code, reason: reason.toString() });
      }),
    );
  }

  /** Opens the console; resolves with the HTTP status when the upgrade is refused. */
  static open(port: number, ca: string, authorization: string | undefined): Promise<Conn | number> {
    const headers: Record<string, string> = authorization === undefined ? {} : { authorization };
    const ws = new WebSocket(`wss://127.0.0.1:${port}${CONSOLE_PATH}`, {
      ca,
      headers,
      handshakeTimeout: 10_000,
    });
    return new Promise((resolve, reject) => {
      ws.once("unexpected-response", (_req, res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
        ws.terminate();
      });
      ws.once("error", reject);
      ws.once("open", () => {
        ws.off("error", reject);
        resolve(new Conn(ws));
      });
    });
  }

  /** Sends a request (object: numbered; string or Buffer: as is, answered with id null). */
  request(req: Record<string, unknown> | string | Buffer, timeoutMs: number): Promise<Outcome> {
    if (this.isClosed) return Promise.resolve("closed");
    return new Promise((resolve) => {
      const timer = setTimeout(() => done("timeout"), timeoutMs);
      const done = (r: Outcome): void => {
        clearTimeout(timer);
        resolve(r);
      };
      if (typeof req === "string" || Buffer.isBuffer(req)) {
        this.nullReplies.push(done);
        this.ws.send(req, { binary: Buffer.isBuffer(req) });
        return;
      }
      const id = typeof req.id === "string" || typeof req.id === "number" ? req.id : this.nextId++;
      this.waiting.set(id, done);
      this.ws.send(JSON.stringify({ ...req, id }));
    });
  }

  terminate(): void {
    this.ws.terminate();
  }

  async close(): Promise<void> {
    if (this.isClosed) return;
    this.ws.close();
    const t = setTimeout(() => this.ws.terminate(), 1000);
    await this.closed;
    clearTimeout(t);
  }
}

function describe(o: Outcome | number): string {
  if (typeof o === "number") return `HTTP ${o}`;
  if (typeof o === "string") return o;
  return o.ok ? "ok" : `error ${o.error.code}`;
}

export class ConsoleLoad {
  private readonly rng: Prng;
  private readonly badRng: Prng;
  private sessionAgent: number | undefined;

  constructor(
    private readonly w: World,
    private readonly tracker: Tracker,
  ) {
    this.rng = w.rng("console");
    this.badRng = w.rng("console-bad");
  }

  /** Sessions of well-behaved clients, and, in a loop of their own, bad inputs. */
  run(): Promise<unknown> {
    const every = this.w.opts.profile.consoleEvery;
    // Bad inputs in shuffled rounds, so that every kind is tried as often as the others.
    let round: BadInput[] = [];
    return Promise.all([
      this.w.loop(
        "console",
        this.w.loadEnd,
        () => this.rng.uniform(every[0], every[1]) * 1000,
        async () => {
          if (this.w.agentPid() === undefined) return; // down for a planned kill: nothing to talk to
          await this.session();
        },
      ),
      this.w.loop(
        "console-bad-inputs",
        this.w.loadEnd,
        () => this.badRng.uniform(every[0], every[1]) * 1000,
        async () => {
          if (this.w.agentPid() === undefined) return;
          if (round.length === 0) round = this.badRng.shuffle(BAD_INPUTS);
          await this.badInput(round.pop()!);
        },
      ),
    ]);
  }

  private open(token = this.w.console.token): Promise<Conn | number> {
    return Conn.open(this.w.console.port, this.w.console.caPem, `Bearer ${token}`);
  }

  /** A well-behaved (if impatient) client. */
  private async session(): Promise<void> {
    const agent = this.w.agentPid();
    const c = await this.open().catch((e: unknown) => {
      if (this.w.agentPid() !== agent) return undefined; // killed meanwhile: nothing to say
      throw e;
    });
    if (c === undefined) return;
    if (typeof c === "number") throw new Error(`the valid token was refused with HTTP ${c}`);
    this.w.ledger.count("console.sessions");
    this.sessionAgent = this.w.agentPid();
    const abrupt = this.rng.chance(0.5);
    try {
      this.count("list", await c.request({ op: "list" }, 10_000));
      const pod = this.pickPod();
      if (pod === undefined) return;
      this.count(
        "status",
        await c.request({ op: "status", namespace: pod.namespace, pod: pod.name }, 10_000),
      );
      const what = this.rng.pick(["mount", "mount", "unmount", "watch"] as const);
      if (what === "watch") {
        this.count("watch", await c.request({ op: "watch", namespace: pod.namespace }, 10_000));
        await this.w.sleep(this.rng.uniform(200, 2000));
        return;
      }
      const entry = randomEntry(this.rng, this.rng.pick(CONSOLE_NAMES));
      const req =
        what === "mount"
          ? {
              op: "mount",
              namespace: pod.namespace,
              pod: pod.name,
              bucket: entry.bucket,
              ...(entry.prefix !== "" ? { prefix: entry.prefix } : {}),
              name: entry.name,
              readOnly: entry.readOnly,
              timeoutSeconds: 30,
            }
          : { op: "unmount", namespace: pod.namespace, pod: pod.name, name: entry.name, timeoutSeconds: 30 };
      // The edit counts as in flight until answered (or a moment after hanging up), so that the
      // pod is not deleted under it: an edit landing after the delete would write the file again.
      pod.inflight++;
      this.tracker.intendEdit(pod, what === "mount" ? formatBucketEntry(entry) : undefined);
      try {
        if (abrupt) {
          void c.request(req, 40_000);
          await this.w.sleep(this.rng.uniform(0, 400));
          c.terminate();
          this.w.ledger.count("console.abruptDisconnects");
          await new Promise((r) => setTimeout(r, 1500));
        } else {
          this.count(what, await c.request(req, 40_000));
        }
      } finally {
        pod.inflight--;
      }
    } finally {
      if (abrupt) c.terminate();
      else await c.close();
    }
  }

  private pickPod(): SoakPod | undefined {
    const live = this.w.pickable();
    return live.length === 0 ? undefined : this.rng.pick(live);
  }

  private count(op: string, r: Outcome): void {
    this.w.ledger.count(`console.requests`);
    this.w.ledger.count(`console.${op}.${describe(r)}`);
    this.w.ledger.checked("console");
    // A request on an open connection is always answered (mount/unmount: within timeoutSeconds).
    if (r === "timeout" && this.w.agentPid() === this.sessionAgent)
      this.w.ledger.violate("console", `${op} got no reply on an open connection`);
  }

  /** One bad input; it must be refused without an internal error, and the agent must keep serving. */
  private async badInput(kind: BadInput): Promise<void> {
    const agentBefore = this.w.agentPid();
    const verdict = await this.tryBad(kind).catch((e: unknown) => `client error: ${(e as Error).message}`);
    this.w.ledger.count("bad.console");
    this.w.ledger.count(`bad.console.${kind}`);
    this.w.ledger.checked("console");
    if (verdict !== undefined && this.w.agentPid() === agentBefore)
      this.w.ledger.violate("console", `bad input ${kind}: ${verdict}`);
    // Still serving? (Unless a planned kill took it down meanwhile.)
    const c = await this.open().catch(() => undefined);
    if (c === undefined || typeof c === "number") {
      if (this.w.agentPid() === agentBefore && agentBefore !== undefined)
        this.w.ledger.violate("console", `after bad input ${kind} the console refuses a valid client`);
      return;
    }
    const r = await c.request({ op: "list" }, 10_000);
    if ((r === "timeout" || r === "closed") && this.w.agentPid() === agentBefore)
      this.w.ledger.violate("console", `after bad input ${kind} a list got ${describe(r)}`);
    await c.close();
  }

  /** Undefined when the agent refused the input as it should; else what went wrong. */
  private async tryBad(kind: BadInput): Promise<string | undefined> {
    const refusedAt = (o: Conn | number): string | undefined =>
      typeof o === "number" ? (o === 401 ? undefined : `upgrade answered HTTP ${o}, want 401`) : "accepted";
    if (kind === "wrong-token") {
      const o = await this.open(`not-${this.w.console.token}`);
      if (typeof o !== "number") o.terminate();
      return refusedAt(o);
    }
    if (kind === "malformed-header") {
      const o = await Conn.open(this.w.console.port, this.w.console.caPem, "Basic Zm9vOmJhcg==");
      if (typeof o !== "number") o.terminate();
      return refusedAt(o);
    }
    if (kind === "no-token" || kind === "wrong-token-frame") {
      const o = await Conn.open(this.w.console.port, this.w.console.caPem, undefined);
      if (typeof o === "number") return `upgrade without a token answered HTTP ${o}; want an auth frame`;
      const r =
        kind === "no-token"
          ? await o.request({ op: "list" }, 10_000)
          : await o.request({ op: "auth", token: "wrong" }, 10_000);
      o.terminate();
      return refused(r);
    }
    const c = await this.open();
    if (typeof c === "number") throw new Error(`the valid token was refused with HTTP ${c}`);
    try {
      const pod = this.pickPod();
      const ns = pod?.namespace ?? "team-a";
      const name = pod?.name ?? "s1";
      switch (kind) {
        case "not-json":
          return refused(await c.request('{"id": 1, "op": "list"', 10_000));
        case "array":
          return refused(await c.request("[1, 2, 3]", 10_000));
        case "binary":
          return refused(await c.request(Buffer.from('{"id":1,"op":"list"}'), 10_000));
        case "unknown-op":
          return refused(await c.request({ op: "rm", namespace: ns, pod: name }, 10_000));
        case "long-id":
          return refused(await c.request(JSON.stringify({ id: "x".repeat(100), op: "list" }), 10_000));
        case "bad-bucket":
          return refused(
            await c.request({ op: "mount", namespace: ns, pod: name, bucket: "../etc" }, 10_000),
          );
        case "bad-prefix":
          return refused(
            await c.request(
              { op: "mount", namespace: ns, pod: name, bucket: "alpha", prefix: "-o/allow_root", name: "c1" },
              10_000,
            ),
          );
        case "bad-name":
          return refused(
            await c.request(
              { op: "mount", namespace: ns, pod: name, bucket: "alpha", name: "Bad_Name" },
              10_000,
            ),
          );
        case "extra-field":
          return refused(
            await c.request(
              { op: "mount", namespace: ns, pod: name, bucket: "alpha", name: "c1", options: "allow_root" },
              10_000,
            ),
          );
        case "unknown-pod":
          return refused(await c.request({ op: "status", namespace: ns, pod: "no-such-pod-xyz" }, 10_000));
        case "deleted-pod": {
          const gone = this.w.deleted[this.w.deleted.length - 1];
          return refused(
            await c.request(
              { op: "mount", namespace: "team-a", pod: gone?.name ?? "s0", bucket: "alpha", name: "c1" },
              10_000,
            ),
          );
        }
        case "huge-frame": {
          const r = await c.request(`{"id":1,"op":"list","pad":"${"x".repeat(1_100_000)}"}`, 10_000);
          return r === "closed" ? undefined : `a 1.1 MB frame got ${describe(r)}; want the connection closed`;
        }
        case "flood": {
          const replies = await Promise.all(
            Array.from({ length: 120 }, () => c.request({ op: "list" }, 15_000)),
          );
          const limited = replies.filter(
            (r) => typeof r !== "string" && !r.ok && r.error.code === "RateLimited",
          );
          const closed = replies.filter((r) => r === "closed");
          if (limited.length === 0 && closed.length === 0) return "120 requests at once: none rate-limited";
          const internal = replies.find((r) => typeof r !== "string" && !r.ok && r.error.code === "Internal");
          return internal === undefined ? undefined : "flood: an internal error";
        }
      }
    } finally {
      c.terminate();
    }
  }
}

/** Undefined when `r` is a refusal (an error reply that is not internal, or the server closing). */
function refused(r: Outcome): string | undefined {
  if (r === "closed") return undefined;
  if (r === "timeout") return "no reply within 10 s";
  if (r.ok) return "accepted (ok: true)";
  if (r.error.code === "Internal") return `internal error: ${r.error.message}`;
  return undefined;
}

const BAD_INPUTS = [
  "wrong-token",
  "malformed-header",
  "no-token",
  "wrong-token-frame",
  "not-json",
  "array",
  "binary",
  "unknown-op",
  "long-id",
  "bad-bucket",
  "bad-prefix",
  "bad-name",
  "extra-field",
  "unknown-pod",
  "deleted-pod",
  "huge-frame",
  "flood",
] as const;
type BadInput = (typeof BAD_INPUTS)[number];
