/**
 * A closed-loop wss load generator for the console benchmark: `connections` websockets, each sending
 * its next `status` request as soon as the reply to the previous one has arrived. Runs in the bench
 * process; the servers run in their own child processes. Latency runs from `ws.send` to the reply's
 * `message` event; every reply is parsed and checked.
 */
import { WebSocket, type RawData } from "ws";
import { CONSOLE_PATH } from "../shared/protocol.js";
import { BENCH_TOKEN, STATUS_POD, statusRequest } from "./console-fixture.js";

export interface RoundTripTarget {
  readonly port: number;
  readonly ca: string;
  readonly connections: number;
  /** For the console the reply must echo the id and carry the status pod; the baseline's is constant. */
  readonly checkId: boolean;
}

export interface RoundTripResult {
  /** Replies received (good or bad) in the measured part. */
  readonly requests: number;
  readonly errors: number;
  readonly errorSamples: readonly string[];
  readonly elapsedMs: number;
  /** Latencies of the good measured replies in ms, sorted ascending. */
  readonly latenciesMs: Float64Array;
  /** Load generator CPU (user + system) over the measured part, in ms. */
  readonly clientCpuMs: number;
}

const REPLY_TIMEOUT_MS = 10_000;
const MAX_ERROR_SAMPLES = 5;

/** Opens the connections, with the bench's bearer token (the baseline ignores it). */
export async function openConnections(target: RoundTripTarget): Promise<WebSocket[]> {
  return Promise.all(
    Array.from(
      { length: target.connections },
      () =>
        new Promise<WebSocket>((resolve, reject) => {
          const ws = new WebSocket(`wss://127.0.0.1:${target.port}${CONSOLE_PATH}`, {
            ca: target.ca,
            headers: { authorization: `Bearer ${BENCH_TOKEN}` },
            perMessageDeflate: false,
          });
          ws.once("unexpected-response", (_req, res) =>
            reject(new Error(`the upgrade was refused with HTTP ${res.statusCode}`)),
          );
          ws.once("error", reject);
          ws.once("open", () => {
            ws.off("error", reject);
            ws.on("error", () => undefined);
            resolve(ws);
          });
        }),
    ),
  );
}

function checkReply(text: string, id: number, checkId: boolean): string | undefined {
  let r: { id?: unknown; ok?: unknown; result?: { pod?: unknown }; error?: unknown };
  try {
    r = JSON.parse(text) as typeof r;
  } catch {
    return `the reply is not JSON: ${text.slice(0, 200)}`;
  }
  if (r.ok !== true) return `not ok: ${text.slice(0, 300)}`;
  if (checkId && (r.id !== id || r.result?.pod !== STATUS_POD))
    return `the reply does not answer request ${id}: ${text.slice(0, 300)}`;
  return undefined;
}

/**
 * One closed loop per connection until `durationMs` has passed (when given) or `requests` replies
 * have arrived over all connections.
 */
export async function runRoundTrips(
  conns: readonly WebSocket[],
  target: RoundTripTarget,
  stop: { durationMs: number } | { requests: number },
): Promise<RoundTripResult> {
  const latencies: number[] = [];
  const errorSamples: string[] = [];
  let requests = 0;
  let issued = 0;
  let errors = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const more =
    "durationMs" in stop
      ? (): boolean => performance.now() - t0 < stop.durationMs
      : (): boolean => issued < stop.requests;

  const loop = (ws: WebSocket): Promise<void> =>
    new Promise<void>((resolve) => {
      let id = 0;
      let sentAt = 0;
      const finish = (): void => {
        clearTimeout(timer);
        ws.off("message", onMessage);
        ws.off("close", onClose);
        resolve();
      };
      const fail = (what: string): void => {
        errors++;
        if (errorSamples.length < MAX_ERROR_SAMPLES) errorSamples.push(what);
      };
      const next = (): void => {
        if (!more()) {
          finish();
          return;
        }
        issued++;
        id++;
        sentAt = performance.now();
        ws.send(statusRequest(id));
      };
      const onMessage = (data: RawData): void => {
        const ms = performance.now() - sentAt;
        requests++;
        const problem = checkReply((data as Buffer).toString("utf8"), id, target.checkId);
        if (problem === undefined) latencies.push(ms);
        else fail(problem);
        next();
      };
      const onClose = (code: number): void => {
        fail(`the connection closed with ${code}`);
        finish();
      };
      // One watchdog per loop instead of one timer per request: a stuck reply ends the loop.
      let seen = -1;
      const timer = setInterval(() => {
        if (seen === id) {
          fail(`no reply within ${REPLY_TIMEOUT_MS} ms`);
          finish();
        }
        seen = id;
      }, REPLY_TIMEOUT_MS);
      ws.on("message", onMessage);
      ws.once("close", onClose);
      next();
    });

  await Promise.all(conns.map(loop));
  const elapsedMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return {
    requests,
    errors,
    errorSamples,
    elapsedMs,
    latenciesMs: Float64Array.from(latencies).sort(),
    clientCpuMs: (cpu.user + cpu.system) / 1000,
  };
}

export function closeConnections(conns: readonly WebSocket[]): void {
  for (const ws of conns) ws.terminate();
}
