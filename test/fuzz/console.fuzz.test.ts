/**
 * Hostile frames against the real websocket console: a `ConsoleStack` (local pod source, fake mount
 * engine, real reconciler, wss with a generated PKI and static tokens) fed generated frames —
 * random JSON, wrong types, unknown ops, hostile names (`../x`, `-o allow_root`, 10 kB), binary and
 * invalid UTF-8 frames, oversized frames, floods — unauthenticated, after a refused token, and
 * authenticated (bearer header and first-frame `auth`).
 *
 * Checked: the console keeps answering a valid `status` after every batch; every frame gets a reply
 * of the documented shape (an error carries a documented code and never echoes a long value) unless
 * the server closed the connection with a documented code (1007 bad UTF-8, 1008 policy, 1009 too
 * big, 1013 slow reader); nothing unauthenticated changes a pod file; and every change to a pod's
 * `dynamic-volumes/buckets` annotation comes from a `mount`/`unmount` the console accepted.
 */
import { expect } from "chai";
import fc from "fast-check";
import { rmSync } from "node:fs";
import {
  AuthenticatedUserAuthorizer,
  StaticTokenAuthenticator,
  parseTokenAuthFile,
} from "../../agent/console/auth.js";
import { formatBucketEntry, parseBuckets } from "../../shared/buckets.js";
import { ANNOTATIONS } from "../../shared/names.js";
import { mountEntryOf } from "../../shared/protocol.js";
import { ConsoleStack } from "../support/console-stack.js";
import { makeTestPki, type TestPki } from "../support/tls.js";
import { announce, fuzzRuns, fuzzSeed, fuzzTimeoutMs } from "./fuzz-config.js";
import { PODS, TOKEN, TOKENS, batchOf, type Frame } from "./console-frames.js";
import { FuzzConn, tryParse, type Outcome } from "./console-fuzz-client.js";

const SEED = fuzzSeed(1_000_003);
/** Frames per phase; 10 000 in all at DV_FUZZ_RUNS=1, floods not counted. */
const COUNTS = {
  unauthenticated: fuzzRuns(2500),
  invalidToken: fuzzRuns(2500),
  authenticated: fuzzRuns(5000),
};
const FLOOD_FRAMES = 3000;
const BATCH = 100;
const CONNECTIONS = 8;
/** Close codes the console documents (console.ts, console-connection.ts). */
const DOCUMENTED_CLOSE = [1007, 1008, 1009, 1013];

// --- the test --------------------------------------------------------------------------------------

describe("fuzz: the websocket console", function () {
  this.timeout(fuzzTimeoutMs(60_000));

  let pki: TestPki;
  let stack: ConsoleStack;
  let control: FuzzConn;
  let ids = 0;
  const nextId = (): string => `q${++ids}`;
  const outcomes: Outcome[] = [];
  const totals = {
    frames: 0,
    replies: 0,
    ok: 0,
    events: 0,
    refusedUpgrades: 0,
    editsAccepted: 0,
    entriesChanged: 0,
    closes: {} as Record<string, number>,
    errors: {} as Record<string, number>,
  };

  before(async () => {
    pki = makeTestPki();
    stack = new ConsoleStack({
      pki,
      authenticator: new StaticTokenAuthenticator(parseTokenAuthFile(TOKENS).tokens),
      authorizer: new AuthenticatedUserAuthorizer(),
      // Room for fuzzing at speed; the flood phase still crosses these.
      limits: { requestsPerSecond: 5000, burst: 400, maxRateLimited: 100 },
    });
    for (const p of PODS) {
      if (p.injected) stack.writePod(p.file, stack.mk(p.ns, p.name, p.buckets));
      else
        stack.writePod(p.file, {
          apiVersion: "v1",
          kind: "Pod",
          metadata: { namespace: p.ns, name: p.name },
          spec: { containers: [{ name: "c", image: "busybox" }] },
        });
    }
    await stack.start();
    const deadline = Date.now() + 10_000;
    while (stack.engine.mounted.size < 3 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    const c = await FuzzConn.open(stack.port, stack.ca, `Bearer ${TOKEN}`, nextId, []);
    if (!(c instanceof FuzzConn)) throw new Error(`control connection refused: ${c.refused}`);
    control = c;
  });

  after(async () => {
    await control?.close();
    await stack?.close();
    rmSync(pki.dir, { recursive: true, force: true });
  });

  const podTexts = (): string[] => PODS.map((p) => stack.podText(p.file));
  const annotations = (): Map<string, string | undefined> =>
    new Map(
      PODS.map((p) => {
        const pod = JSON.parse(stack.podText(p.file)) as {
          metadata?: { annotations?: Record<string, string> };
        };
        return [`${p.ns}/${p.name}`, pod.metadata?.annotations?.[ANNOTATIONS.buckets]];
      }),
    );

  /** The console answers a valid `status` (the crash check after every batch), one check at a time. */
  let checks = Promise.resolve();
  function healthy(where: string): Promise<void> {
    const run = checks.then(() => checkStatus(where));
    checks = run.catch(() => undefined);
    return run;
  }
  async function checkStatus(where: string): Promise<void> {
    const id = nextId();
    const before = control.replies;
    control.send({
      data: JSON.stringify({ id, op: "status", namespace: "team-a", pod: "trainer" }),
      binary: false,
      note: "status",
    });
    const settled = await control.settle(5000);
    expect(settled && control.replies === before + 1, `status answered after ${where}`).to.equal(true);
    expect(control.violations, where).to.deep.equal([]);
    expect(control.closed, `control connection closed after ${where}`).to.equal(undefined);
  }

  /**
   * Sends `count` generated frames over `CONNECTIONS` connections opened by `connect`, in batches,
   * and checks every connection's accounting. Returns the violations.
   */
  async function phase(
    name: string,
    count: number,
    seed: number,
    connect: () => Promise<FuzzConn | undefined>,
    compose: (frames: Frame[], b: number) => Frame[] = (frames) => frames,
  ): Promise<string[]> {
    const violations: string[] = [];
    const batches = Math.ceil(count / BATCH);
    let nextBatch = 0;
    const worker = async (): Promise<void> => {
      let conn: FuzzConn | undefined;
      while (nextBatch < batches) {
        const b = nextBatch++;
        if (conn === undefined || !conn.open) {
          if (conn !== undefined) account(conn, violations, name);
          conn = await connect();
          if (conn === undefined) continue;
        }
        const n = Math.min(BATCH, count - b * BATCH);
        for (const f of compose(batchOf(seed + b, n), b)) {
          if (!conn.open) break;
          conn.send(f);
          totals.frames++;
        }
        if (!(await conn.settle(10_000)))
          violations.push(
            `${name} batch ${b}: ${conn.sent - conn.replies} of ${conn.sent} frames got no reply and the connection is open (${[...conn.notes].join(", ")})`,
          );
        await healthy(`${name} batch ${b}`);
      }
      if (conn !== undefined) {
        await conn.close();
        account(conn, violations, name);
      }
    };
    await Promise.all(Array.from({ length: CONNECTIONS }, worker));
    return violations;
  }

  function account(conn: FuzzConn, violations: string[], name: string): void {
    violations.push(...conn.violations.map((v) => `${name}: ${v}`));
    totals.replies += conn.replies;
    totals.ok += conn.okReplies;
    totals.events += conn.events;
    for (const [code, n] of Object.entries(conn.codes)) totals.errors[code] = (totals.errors[code] ?? 0) + n;
    const c = conn.closed;
    if (c !== undefined && !conn.closing) {
      totals.closes[c.code] = (totals.closes[c.code] ?? 0) + 1;
      if (!DOCUMENTED_CLOSE.includes(c.code))
        violations.push(`${name}: the server closed with undocumented code ${c.code} (${c.reason})`);
      if (c.code === 1009 && !conn.notes.has("oversized"))
        violations.push(`${name}: 1009 without an oversized frame`);
      if (c.code === 1007 && !conn.notes.has("invalid UTF-8"))
        violations.push(`${name}: 1007 without invalid UTF-8`);
    }
    // Without a documented close, every frame has its reply.
    if (c === undefined || conn.closing)
      if (conn.replies !== conn.sent)
        violations.push(`${name}: ${conn.sent} frames sent, ${conn.replies} replies`);
  }

  it("survives unauthenticated frames: error replies only, no pod file changes", async () => {
    const before = podTexts();
    const violations = await phase("unauthenticated", COUNTS.unauthenticated, SEED, async () => {
      const c = await FuzzConn.open(stack.port, stack.ca, undefined, nextId, outcomes);
      return c instanceof FuzzConn ? c : undefined;
    });
    expect(violations).to.deep.equal([]);
    expect(totals.ok, "ok replies without authentication").to.equal(0);
    expect(totals.events, "watch events without authentication").to.equal(0);
    expect(podTexts(), "pod files after the unauthenticated phase").to.deep.equal(before);
  });

  it("survives frames after a refused token: error replies only, no pod file changes", async () => {
    const before = podTexts();
    const badTokens = fc.sample(
      fc.oneof(
        fc.constantFrom(
          "nope",
          `${TOKEN}x`,
          TOKEN.toUpperCase(),
          `${TOKEN.slice(0, -1)}`,
          "y".repeat(10 * 1024),
        ),
        fc.string({ minLength: 1, maxLength: 64 }).filter((t) => t.trim() !== "" && t !== TOKEN),
      ),
      { seed: SEED + 1, numRuns: 64 },
    );
    // Upgrades with a refused bearer header never reach the console: 401.
    for (const t of badTokens.slice(0, 16)) {
      const header = `Bearer ${t.replace(/[^\x21-\x7e]/g, "x")}`;
      const c = await FuzzConn.open(stack.port, stack.ca, header, nextId, outcomes);
      expect(c, header).to.deep.equal({ refused: 401 });
      totals.refusedUpgrades++;
    }
    const before2 = totals.ok;
    const violations = await phase(
      "invalid token",
      COUNTS.invalidToken,
      SEED + 2,
      async () => {
        const c = await FuzzConn.open(stack.port, stack.ca, undefined, nextId, outcomes);
        return c instanceof FuzzConn ? c : undefined;
      },
      // Somewhere in every batch, an auth with a refused token; what follows it is never served.
      (frames, b) => {
        const at = (b * 7919) % frames.length;
        const token = badTokens[b % badTokens.length]!;
        const auth: Frame = {
          data: JSON.stringify({ id: "auth", op: "auth", token }),
          binary: false,
          note: "bad auth",
        };
        return [...frames.slice(0, at), auth, ...frames.slice(at)];
      },
    );
    expect(violations).to.deep.equal([]);
    expect(totals.ok - before2, "ok replies after a refused token").to.equal(0);
    expect(podTexts(), "pod files after the invalid-token phase").to.deep.equal(before);
  });

  it("survives authenticated frames: every annotation change comes from an accepted mount or unmount", async () => {
    const initial = annotations();
    outcomes.length = 0;
    let n = 0;
    const violations = await phase("authenticated", COUNTS.authenticated, SEED + 3, async () => {
      // Half over the bearer header, half over a first-frame auth.
      const header = n++ % 2 === 0;
      const c = await FuzzConn.open(
        stack.port,
        stack.ca,
        header ? `Bearer ${TOKEN}` : undefined,
        nextId,
        outcomes,
      );
      if (!(c instanceof FuzzConn)) throw new Error(`upgrade refused: ${c.refused}`);
      if (!header) {
        c.send({
          data: JSON.stringify({ id: "auth", op: "auth", token: TOKEN }),
          binary: false,
          note: "auth",
        });
        totals.frames++;
        await c.settle(5000);
        expect(c.okReplies, "first-frame auth").to.equal(1);
      }
      return c;
    });
    expect(violations).to.deep.equal([]);
    // Let in-flight edits land, then compare with what the console accepted.
    await new Promise((r) => setTimeout(r, 300));
    const final = annotations();
    const accepted = outcomes.filter(
      (o) => o.reply === undefined || o.reply.ok || o.reply.code === "Timeout",
    );
    const mounts = new Set<string>();
    const names = new Set<string>();
    for (const o of accepted) {
      const req = tryParse(JSON.stringify(o.request));
      if (req?.op === "mount") {
        mounts.add(`${req.namespace}/${req.pod}|${formatBucketEntry(mountEntryOf(req))}`);
        names.add(`${req.namespace}/${req.pod}|${mountEntryOf(req).name}`);
      } else if (req?.op === "unmount") names.add(`${req.namespace}/${req.pod}|${req.name}`);
    }
    const parts = (v: string | undefined): string[] =>
      (v ?? "")
        .split(",")
        .map((p) => p.trim())
        .filter((p) => p.replace(/\s+/g, "") !== "");
    const changes: string[] = [];
    for (const [pod, value] of final) {
      const was = parts(initial.get(pod));
      const now = parts(value);
      for (const p of now)
        if (!was.includes(p) && !mounts.has(`${pod}|${p}`))
          changes.push(`${pod}: entry "${p}" appeared without an accepted mount`);
      for (const p of was)
        if (!now.includes(p)) {
          const name = parseBuckets(p).entries[0]?.name ?? parseBuckets(p).errors[0]?.name;
          if (name === undefined || !names.has(`${pod}|${name}`))
            changes.push(`${pod}: entry "${p}" vanished without an accepted edit`);
        }
    }
    totals.editsAccepted = accepted.filter(
      (o) => o.request.op === "mount" || o.request.op === "unmount",
    ).length;
    for (const [pod, value] of final) {
      const was = new Set(parts(initial.get(pod)));
      totals.entriesChanged += parts(value).filter((p) => !was.has(p)).length;
    }
    expect(changes).to.deep.equal([]);
    expect(PODS.filter((p) => !p.injected).map((p) => final.get(`${p.ns}/${p.name}`))).to.deep.equal([
      undefined,
    ]);
  });

  it("survives floods: rate-limited replies, then a 1008 close, and keeps serving others", async () => {
    for (const header of [`Bearer ${TOKEN}`, undefined]) {
      const c = await FuzzConn.open(stack.port, stack.ca, header, nextId, []);
      if (!(c instanceof FuzzConn)) throw new Error("upgrade refused");
      let limited = 0;
      c.ws.on("message", (d: Buffer) => {
        if (d.toString("utf8").includes('"RateLimited"')) limited++;
      });
      for (let i = 0; i < FLOOD_FRAMES && c.open; i++) c.ws.send(`{"id":${i},"op":"list"}`);
      const deadline = Date.now() + 10_000;
      while (c.closed === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(c.closed?.code, `flood ${header ?? "unauthenticated"}`).to.equal(1008);
      expect(limited).to.be.greaterThan(0);
      expect(c.violations).to.deep.equal([]);
      await healthy("a flood");
    }
  });

  after(() => {
    announce("console", SEED, {
      ...COUNTS,
      frames: totals.frames,
      replies: totals.replies,
      ok: totals.ok,
      events: totals.events,
      refusedUpgrades: totals.refusedUpgrades,
      floodFrames: 2 * FLOOD_FRAMES,
      editsAccepted: totals.editsAccepted,
      entriesChanged: totals.entriesChanged,
      closes: JSON.stringify(totals.closes),
      errors: JSON.stringify(totals.errors),
    });
  });

  it("leaves no connection behind", async () => {
    const deadline = Date.now() + 5000;
    while (stack.console!.connections > 1 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    expect(stack.console!.connections, "only the control connection").to.equal(1);
  });
});
