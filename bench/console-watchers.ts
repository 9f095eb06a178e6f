/**
 * Child process of the console benchmark (spawned by `bench/console-fanout.ts`, never run by hand):
 * holds watcher connections to the console and baseline servers, so that the clients neither share
 * the server's event loop nor the parent's file descriptor limit.
 *
 *     node --import tsx bench/console-watchers.ts
 *
 * Driven over IPC ({@link WatcherCommand} in, {@link WatcherReply} out). A console watcher connects
 * with the bench's bearer token and sends `{"id":1,"op":"watch"}` (every namespace, as `dvctl watch`
 * does); a baseline watcher only connects (with the same header). Every event frame is parsed and its
 * arrival stamped with `performance.timeOrigin + performance.now()`, a clock that the parent process
 * shares to well under a millisecond.
 */
import { WebSocket } from "ws";
import { CONSOLE_PATH } from "../shared/protocol.js";
import { BENCH_TOKEN, BROADCAST_PREFIX, WATCH_ID, eventKey } from "./console-fixture.js";

export type WatcherSubject = "baseline" | "console";

export type WatcherCommand =
  | {
      readonly type: "open";
      readonly seq: number;
      readonly subject: WatcherSubject;
      readonly port: number;
      readonly ca: string;
      /** Connections to add to this subject's. */
      readonly count: number;
    }
  | {
      readonly type: "await";
      readonly seq: number;
      readonly subject: WatcherSubject;
      readonly key: string;
      readonly timeoutMs: number;
    }
  | { readonly type: "sample"; readonly seq: number }
  | { readonly type: "close"; readonly seq: number };

export type WatcherReply =
  | { readonly type: "ready" }
  | { readonly type: "opened"; readonly seq: number; readonly total: number }
  | {
      readonly type: "awaited";
      readonly seq: number;
      /** Arrival times (epoch ms, fractional) of the event at each watcher that got it. */
      readonly times: number[];
      /** Watchers that had not got it at the time-out (closed ones included). */
      readonly missing: number;
      /** Watchers whose connection closed since they were opened. */
      readonly closed: number;
    }
  | { readonly type: "sample"; readonly seq: number; readonly cpuMs: number }
  | { readonly type: "closed"; readonly seq: number }
  | { readonly type: "error"; readonly seq: number; readonly message: string };

const OPEN_CONCURRENCY = 64;
const OPEN_TIMEOUT_MS = 30_000;

const now = (): number => performance.timeOrigin + performance.now();

class Watchers {
  readonly conns: WebSocket[] = [];
  closed = 0;
  private readonly arrivals = new Map<string, number[]>();
  private readonly waiters = new Map<string, () => void>();

  constructor(readonly subject: WatcherSubject) {}

  private onEvent(text: string): void {
    const at = now();
    const e = JSON.parse(text) as { name?: unknown; state?: unknown };
    const key = eventKey(String(e.name), String(e.state));
    let times = this.arrivals.get(key);
    if (times === undefined) this.arrivals.set(key, (times = []));
    times.push(at);
    if (times.length >= this.conns.length) this.waiters.get(key)?.();
  }

  /** Opens one connection; for the console, also starts its watch and waits for the snapshot. */
  private openOne(port: number, ca: string): Promise<WebSocket> {
    const ws = new WebSocket(`wss://127.0.0.1:${port}${CONSOLE_PATH}`, {
      ca,
      headers: { authorization: `Bearer ${BENCH_TOKEN}` },
      perMessageDeflate: false,
    });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error(`a ${this.subject} watcher did not open within ${OPEN_TIMEOUT_MS} ms`));
      }, OPEN_TIMEOUT_MS);
      const fail = (e: Error): void => {
        clearTimeout(timer);
        ws.terminate();
        reject(e);
      };
      const ready = (): void => {
        clearTimeout(timer);
        ws.off("error", fail);
        ws.on("error", () => undefined);
        ws.once("close", () => this.closed++);
        resolve(ws);
      };
      ws.once("unexpected-response", (_req, res) =>
        fail(new Error(`the ${this.subject} server refused a watcher with HTTP ${res.statusCode}`)),
      );
      ws.once("error", fail);
      ws.on("message", (data, isBinary) => {
        if (isBinary) return;
        const text = (data as Buffer).toString("utf8");
        if (text.startsWith(BROADCAST_PREFIX)) this.onEvent(text);
        else if (this.subject === "console") {
          const r = JSON.parse(text) as { id?: unknown; ok?: unknown; error?: { message?: string } };
          if (r.id !== WATCH_ID) return;
          if (r.ok === true) ready();
          else fail(new Error(`the console refused a watch: ${r.error?.message ?? text.slice(0, 200)}`));
        }
      });
      ws.once("open", () => {
        if (this.subject === "console") ws.send(JSON.stringify({ id: WATCH_ID, op: "watch" }));
        else ready();
      });
    });
  }

  async open(port: number, ca: string, count: number): Promise<void> {
    let left = count;
    const worker = async (): Promise<void> => {
      while (left > 0) {
        left--;
        this.conns.push(await this.openOne(port, ca));
      }
    };
    await Promise.all(Array.from({ length: Math.min(OPEN_CONCURRENCY, count) }, worker));
  }

  /** Resolves once every watcher has the event `key`, or at the time-out; forgets the key. */
  async awaitKey(key: string, timeoutMs: number): Promise<{ times: number[]; missing: number }> {
    if ((this.arrivals.get(key)?.length ?? 0) < this.conns.length)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, timeoutMs);
        function done(): void {
          clearTimeout(timer);
          resolve();
        }
        this.waiters.set(key, done);
      });
    this.waiters.delete(key);
    const times = this.arrivals.get(key) ?? [];
    this.arrivals.delete(key);
    return { times, missing: Math.max(0, this.conns.length - times.length) };
  }

  close(): void {
    for (const ws of this.conns) ws.terminate();
  }
}

const sets = new Map<WatcherSubject, Watchers>();
const setOf = (s: WatcherSubject): Watchers => {
  let w = sets.get(s);
  if (w === undefined) sets.set(s, (w = new Watchers(s)));
  return w;
};

function send(m: WatcherReply): void {
  process.send?.(m);
}

async function handle(m: WatcherCommand): Promise<WatcherReply> {
  switch (m.type) {
    case "open": {
      const w = setOf(m.subject);
      await w.open(m.port, m.ca, m.count);
      return { type: "opened", seq: m.seq, total: w.conns.length };
    }
    case "await": {
      const w = setOf(m.subject);
      const { times, missing } = await w.awaitKey(m.key, m.timeoutMs);
      return { type: "awaited", seq: m.seq, times, missing, closed: w.closed };
    }
    case "sample": {
      const cpu = process.cpuUsage();
      return { type: "sample", seq: m.seq, cpuMs: (cpu.user + cpu.system) / 1000 };
    }
    case "close":
      for (const w of sets.values()) w.close();
      return { type: "closed", seq: m.seq };
  }
}

if (process.send === undefined) {
  process.stderr.write("console-watchers.ts runs as a child with an IPC channel\n");
  process.exit(2);
}
process.on("disconnect", () => process.exit(0));
process.on("SIGINT", () => process.exit(130));
process.on("message", (m: WatcherCommand) => {
  handle(m).then(send, (e: unknown) =>
    send({ type: "error", seq: m.seq, message: e instanceof Error ? e.message : String(e) }),
  );
});
send({ type: "ready" });
