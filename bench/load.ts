/**
 * A closed-loop HTTPS load generator: `connections` request loops, each sending its next request as
 * soon as the previous reply has been read, over one keep-alive agent with as many sockets. Every
 * reply is checked; latency runs from the request being issued to the last byte of the reply.
 */
import { Agent, request } from "node:https";
import type { TLSSocket } from "node:tls";

export interface Target {
  readonly port: number;
  readonly path: string;
  /** PEM of the only CA the client trusts. */
  readonly ca: string;
  /** Concurrent request loops, and the agent's socket count. */
  readonly connections: number;
}

/** One request body and the uid the reply must echo. */
export interface Exchange {
  readonly body: Buffer;
  readonly uid: string;
}

/** Returns a description of what is wrong with a reply, or undefined when it is right. */
export type ReplyCheck = (status: number, text: string, uid: string) => string | undefined;

export interface LoadResult {
  /** Replies received (good or bad). */
  readonly requests: number;
  readonly errors: number;
  /** The first few error descriptions, for the failure message. */
  readonly errorSamples: readonly string[];
  readonly elapsedMs: number;
  /** Latencies of the good replies in milliseconds, sorted ascending. */
  readonly latenciesMs: Float64Array;
  /** Load generator CPU (user + system) over the run, in ms. */
  readonly clientCpuMs: number;
  /** TLS version of the connections, e.g. "TLSv1.3". */
  readonly tlsProtocol: string;
}

const REQUEST_TIMEOUT_MS = 10_000;
const MAX_ERROR_SAMPLES = 5;
/** The loops give up after this many bad replies: the run is broken, and a dead server fails fast. */
const MAX_ERRORS = 100;

/** A keep-alive agent for one target; reuse it across warm-up and measurement, then destroy it. */
export function keepAliveAgent(target: Target): Agent {
  return new Agent({ keepAlive: true, maxSockets: target.connections, ca: target.ca });
}

function exchangeOnce(
  agent: Agent,
  target: Target,
  body: Buffer,
): Promise<{ status: number; text: string; socket: TLSSocket }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port: target.port,
        path: target.path,
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": body.length },
      },
      (res) => {
        // Read now: once the reply ends, the agent takes the socket back and `res.socket` is null.
        const socket = res.socket as TLSSocket;
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            text: Buffer.concat(chunks).toString(),
            socket,
          }),
        );
        res.on("error", reject);
      },
    );
    req.setTimeout(REQUEST_TIMEOUT_MS, () =>
      req.destroy(new Error(`no reply within ${REQUEST_TIMEOUT_MS} ms`)),
    );
    req.on("error", reject);
    req.end(body);
  });
}

/**
 * Runs the loops for `durationMs` (requests in flight at the deadline are finished and counted), or
 * until {@link MAX_ERRORS} replies were bad.
 */
export async function runLoad(
  agent: Agent,
  target: Target,
  durationMs: number,
  next: () => Exchange,
  check: ReplyCheck,
): Promise<LoadResult> {
  const latencies: number[] = [];
  const errorSamples: string[] = [];
  let requests = 0;
  let errors = 0;
  let tlsProtocol = "none";
  const fail = (what: string): void => {
    errors++;
    if (errorSamples.length < MAX_ERROR_SAMPLES) errorSamples.push(what);
  };

  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const deadline = t0 + durationMs;
  const loop = async (): Promise<void> => {
    while (performance.now() < deadline && errors < MAX_ERRORS) {
      const { body, uid } = next();
      const started = performance.now();
      try {
        const { status, text, socket } = await exchangeOnce(agent, target, body);
        const ms = performance.now() - started;
        requests++;
        if (tlsProtocol === "none") tlsProtocol = socket.getProtocol() ?? "unknown";
        const problem = check(status, text, uid);
        if (problem === undefined) latencies.push(ms);
        else fail(problem);
      } catch (e) {
        requests++;
        fail((e as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: target.connections }, loop));
  const elapsedMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);

  const sorted = Float64Array.from(latencies).sort();
  return {
    requests,
    errors,
    errorSamples,
    elapsedMs,
    latenciesMs: sorted,
    clientCpuMs: (cpu.user + cpu.system) / 1000,
    tlsProtocol,
  };
}

/** Nearest-rank percentile (`p` in 0..100) of ascending values; NaN when there are none. */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/** Replies per second over the whole run. */
export function throughput(r: LoadResult): number {
  return (r.requests - r.errors) / (r.elapsedMs / 1000);
}
