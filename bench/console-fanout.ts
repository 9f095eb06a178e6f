/**
 * Watch fan-out for the console benchmark: W watchers, spread over child processes
 * (`bench/console-watchers.ts`), wait for one event while a control connection in this process
 * triggers it, and the time until the last watcher has it is measured.
 *
 * - console: the control connection sends `mount` (then `unmount`) of a fresh name on the watched
 *   pod; the console edits the annotation, the reconciler mounts on the fake engine and emits
 *   `mounting` then `mounted` (an unmount: `removed` only; `unmounting` is for a changed spec) to
 *   every watcher. A trigger counts as delivered when every watcher has its final event.
 * - baseline: the control connection sends that final event frame itself and the bare `ws` server
 *   relays it to every other client: one broadcast, no reconciler, no per-watcher work.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { WebSocket, type RawData } from "ws";
import { CONSOLE_PATH } from "../shared/protocol.js";
import {
  BENCH_NAMESPACE,
  BENCH_TOKEN,
  FANOUT_BUCKET,
  WATCHED_POD,
  eventFrame,
  eventKey,
  type FinalState,
} from "./console-fixture.js";
import type { WatcherCommand, WatcherReply, WatcherSubject } from "./console-watchers.js";
import { REPO_ROOT } from "./server-child.js";

const WATCHERS_ENTRY = "bench/console-watchers.ts";
const START_TIMEOUT_MS = 30_000;
/** File descriptors kept free for everything but sockets (tsx, IPC, TLS files, pod files). */
const FD_RESERVE = 256;

/** The soft limit on open files of this process (children inherit it); undefined off Linux. */
export function openFileLimit(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync("/proc/self/limits", "utf8"));
    if (m === null) return undefined;
    return m[1] === "unlimited" ? Number.MAX_SAFE_INTEGER : Number(m[1]);
  } catch {
    return undefined;
  }
}

/** Most connections one process may hold under `limit` open files. */
export function socketsPerProcess(limit: number | undefined): number {
  return Math.max(64, (limit ?? 1024) - FD_RESERVE);
}

type Payload<T> = T extends unknown ? Omit<T, "seq"> : never;

/** One watcher child process, with request/reply over IPC. */
class WatcherChild {
  private seq = 0;
  private readonly pending = new Map<
    number,
    { resolve: (r: WatcherReply) => void; reject: (e: Error) => void }
  >();
  private exited: string | undefined;

  private constructor(readonly child: ChildProcess) {
    child.on("message", (m: WatcherReply) => {
      if (m.type === "ready") return;
      const p = this.pending.get(m.seq);
      if (p === undefined) return;
      this.pending.delete(m.seq);
      if (m.type === "error") p.reject(new Error(`watcher process ${child.pid}: ${m.message}`));
      else p.resolve(m);
    });
    child.once("exit", (code, signal) => {
      this.exited = `exited with ${signal ?? `code ${code}`}`;
      for (const p of this.pending.values())
        p.reject(new Error(`watcher process ${child.pid} ${this.exited}`));
      this.pending.clear();
    });
  }

  static async spawn(defer: (fn: () => void) => void): Promise<WatcherChild> {
    const child = spawn(process.execPath, ["--import", "tsx", WATCHERS_ENTRY], {
      cwd: REPO_ROOT,
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    defer(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${WATCHERS_ENTRY} did not start within ${START_TIMEOUT_MS} ms`)),
        START_TIMEOUT_MS,
      );
      child.once("message", () => {
        clearTimeout(timer);
        resolve();
      });
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${WATCHERS_ENTRY} exited with ${signal ?? `code ${code}`} before it was ready`));
      });
      child.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
    return new WatcherChild(child);
  }

  call<T extends WatcherReply["type"]>(
    cmd: Payload<WatcherCommand>,
  ): Promise<Extract<WatcherReply, { type: T }>> {
    if (this.exited !== undefined)
      return Promise.reject(new Error(`watcher process ${this.child.pid} ${this.exited}`));
    const seq = ++this.seq;
    return new Promise((resolve, reject) => {
      this.pending.set(seq, { resolve: resolve as (r: WatcherReply) => void, reject });
      this.child.send({ ...cmd, seq });
    });
  }

  async stop(): Promise<void> {
    if (this.exited !== undefined) return;
    const gone = new Promise((r) => this.child.once("exit", r));
    await this.call({ type: "close" }).catch(() => undefined);
    this.child.disconnect();
    const t = setTimeout(() => this.child.kill("SIGKILL"), 2_000);
    await gone;
    clearTimeout(t);
  }
}

/** Watchers of both subjects, spread evenly over a few child processes. */
export class WatcherPool {
  private readonly counts = new Map<WatcherSubject, number>();

  private constructor(private readonly children: readonly WatcherChild[]) {}

  static async start(processes: number, defer: (fn: () => void) => void): Promise<WatcherPool> {
    const children = await Promise.all(Array.from({ length: processes }, () => WatcherChild.spawn(defer)));
    return new WatcherPool(children);
  }

  get processes(): number {
    return this.children.length;
  }

  watchers(subject: WatcherSubject): number {
    return this.counts.get(subject) ?? 0;
  }

  /** Opens watchers until `subject` has `total`. */
  async grow(subject: WatcherSubject, port: number, ca: string, total: number): Promise<void> {
    const add = total - this.watchers(subject);
    if (add <= 0) return;
    const n = this.children.length;
    await Promise.all(
      this.children.map(async (c, i) => {
        const count = Math.floor(add / n) + (i < add % n ? 1 : 0);
        if (count > 0) await c.call<"opened">({ type: "open", subject, port, ca, count });
      }),
    );
    this.counts.set(subject, total);
  }

  /** Arrival times of event `key` at every watcher of `subject`, once all have it or at the time-out. */
  async awaitKey(
    subject: WatcherSubject,
    key: string,
    timeoutMs: number,
  ): Promise<{ times: number[]; missing: number; closed: number }> {
    const replies = await Promise.all(
      this.children.map((c) => c.call<"awaited">({ type: "await", subject, key, timeoutMs })),
    );
    return {
      times: replies.flatMap((r) => r.times),
      missing: replies.reduce((n, r) => n + r.missing, 0),
      closed: replies.reduce((n, r) => n + r.closed, 0),
    };
  }

  /** CPU (user + system) of all watcher processes so far, in ms. */
  async cpuMs(): Promise<number> {
    const r = await Promise.all(this.children.map((c) => c.call<"sample">({ type: "sample" })));
    return r.reduce((n, s) => n + s.cpuMs, 0);
  }

  async stop(): Promise<void> {
    await Promise.all(this.children.map((c) => c.stop()));
  }
}

const now = (): number => performance.timeOrigin + performance.now();

/** The connection that triggers events: a console client, or the baseline's broadcaster. */
export class Control {
  private nextId = 1000;
  private readonly waiting = new Map<
    number,
    {
      final: FinalState;
      finalAt?: number;
      resolve: (r: { ok: boolean; text: string; finalAt?: number }) => void;
    }
  >();

  private constructor(
    private readonly ws: WebSocket,
    readonly subject: WatcherSubject,
  ) {
    ws.on("message", (data: RawData) => {
      const text = (data as Buffer).toString("utf8");
      if (subject !== "console") return;
      const f = JSON.parse(text) as { id?: unknown; ok?: unknown; progress?: { state?: unknown } };
      const w = typeof f.id === "number" ? this.waiting.get(f.id) : undefined;
      if (w === undefined) return;
      if (f.progress !== undefined) {
        if (f.progress.state === w.final && w.finalAt === undefined) w.finalAt = now();
        return;
      }
      this.waiting.delete(f.id as number);
      w.resolve({ ok: f.ok === true, text, ...(w.finalAt !== undefined ? { finalAt: w.finalAt } : {}) });
    });
  }

  static open(subject: WatcherSubject, port: number, ca: string): Promise<Control> {
    const ws = new WebSocket(`wss://127.0.0.1:${port}${CONSOLE_PATH}`, {
      ca,
      headers: { authorization: `Bearer ${BENCH_TOKEN}` },
      perMessageDeflate: false,
    });
    return new Promise((resolve, reject) => {
      ws.once("unexpected-response", (_req, res) =>
        reject(new Error(`the ${subject} server refused the control connection with HTTP ${res.statusCode}`)),
      );
      ws.once("error", reject);
      ws.once("open", () => {
        ws.off("error", reject);
        ws.on("error", () => undefined);
        resolve(new Control(ws, subject));
      });
    });
  }

  /**
   * Makes mount `name` of the watched pod reach `final` and returns when it was triggered and, for
   * the console, when the control connection saw the final progress frame (the reconciler's share).
   */
  async trigger(name: string, final: FinalState): Promise<{ t0: number; controlAt?: number }> {
    if (this.subject === "baseline") {
      const t0 = now();
      this.ws.send(eventFrame(name, final));
      return { t0 };
    }
    const id = this.nextId++;
    const req =
      final === "mounted"
        ? { id, op: "mount", namespace: BENCH_NAMESPACE, pod: WATCHED_POD, bucket: FANOUT_BUCKET, name }
        : { id, op: "unmount", namespace: BENCH_NAMESPACE, pod: WATCHED_POD, name };
    const reply = new Promise<{ ok: boolean; text: string; finalAt?: number }>((resolve) =>
      this.waiting.set(id, { final, resolve }),
    );
    const t0 = now();
    this.ws.send(JSON.stringify(req));
    const r = await reply;
    if (!r.ok) throw new Error(`the console refused ${req.op} ${name}: ${r.text.slice(0, 300)}`);
    return { t0, ...(r.finalAt !== undefined ? { controlAt: r.finalAt } : {}) };
  }

  close(): void {
    this.ws.terminate();
  }
}

/** One trigger as the watchers saw it. */
export interface Delivery {
  readonly final: FinalState;
  /** Until the last watcher had the final event, in ms (Infinity when some never got it). */
  readonly allMs: number;
  /** Median watcher, in ms. */
  readonly p50Ms: number;
  /** Console only: until the control connection saw the final progress frame, in ms. */
  readonly controlMs?: number;
  readonly missing: number;
  readonly closed: number;
}

/** Triggers one event on `control` and waits until all of `subject`'s watchers have it. */
export async function deliverOnce(
  pool: WatcherPool,
  control: Control,
  name: string,
  final: FinalState,
  timeoutMs: number,
): Promise<Delivery> {
  const arrivals = pool.awaitKey(control.subject, eventKey(name, final), timeoutMs);
  const { t0, controlAt } = await control.trigger(name, final);
  const { times, missing, closed } = await arrivals;
  const lat = times.map((t) => t - t0).sort((a, b) => a - b);
  return {
    final,
    allMs: missing > 0 ? Number.POSITIVE_INFINITY : (lat[lat.length - 1] ?? Number.NaN),
    p50Ms: lat[Math.max(0, Math.ceil(lat.length / 2) - 1)] ?? Number.NaN,
    ...(controlAt !== undefined ? { controlMs: controlAt - t0 } : {}),
    missing,
    closed,
  };
}
