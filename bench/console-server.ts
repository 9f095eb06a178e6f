/**
 * Child process of the console benchmark (spawned by `bench/console.ts`, never run by hand):
 *
 *     node --import tsx bench/console-server.ts console <certFile> <keyFile> <workDir> <maxConnections>
 *     node --import tsx bench/console-server.ts baseline <certFile> <keyFile> <statusReplyBytes>
 *
 * Both serve wss on `startHttpsServer` (127.0.0.1, ephemeral port) with the same `ws` settings as the
 * console (no compression, 1 MiB frames):
 * - `console`: the real `ConsoleServer` wired as `agent/main.ts` wires it in local mode (static
 *   tokens, every authenticated user allowed), over a real `LocalPodSource` in `workDir` and a real
 *   `Reconciler` with production timings, on the fake mount engine of the tests. Logger at "warn"
 *   into a sink that discards. The rate limit is lifted (the closed loop would hit it at once) and
 *   the connection cap raised to `maxConnections`.
 * - `baseline`: a bare `ws` server. A frame that starts with `{"event"` is relayed to every other
 *   client (a broadcast: one string, sent to each); any other frame is answered with a constant reply
 *   of `statusReplyBytes` bytes.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import type { IncomingMessage } from "node:http";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { WebSocket, WebSocketServer, type RawData } from "ws";
import {
  AuthenticatedUserAuthorizer,
  StaticTokenAuthenticator,
  parseTokenAuthFile,
} from "../agent/console/auth.js";
import { ConsoleServer, DEFAULT_CONSOLE_LIMITS } from "../agent/console/server.js";
import { createAgentHttpHandler, createAgentMetrics } from "../agent/console/http.js";
import { DEFAULT_RECONCILER_CONFIG, Reconciler } from "../agent/reconcile/reconciler.js";
import { LocalPodSource } from "../agent/sources/local.js";
import { injectedPod } from "../scripts/lib/pods.js";
import { startHttpsServer } from "../shared/https-server.js";
import { createLogger, type Logger } from "../shared/logger.js";
import { CONSOLE_PATH } from "../shared/protocol.js";
import { FakeEngine } from "../test/support/fake-engine.js";
import {
  BENCH_NAMESPACE,
  BENCH_TOKEN,
  STATUS_POD,
  WATCHED_POD,
  BROADCAST_PREFIX,
  constantReply,
} from "./console-fixture.js";
import { runChild, serveParent } from "./server-child.js";

const SIGNING_KEY = Buffer.from("console-bench-signing-key-012345");
const NODE_NAME = "bench-node";

interface Running {
  readonly port: number;
  close(): Promise<void>;
}

async function startConsole(
  certFile: string,
  keyFile: string,
  workDir: string,
  maxConnections: number,
  log: Logger,
): Promise<Running> {
  const podsDir = join(workDir, "pods");
  const secretsDir = join(workDir, "secrets");
  const root = join(workDir, "root");
  mkdirSync(podsDir, { recursive: true });
  mkdirSync(join(secretsDir, BENCH_NAMESPACE), { recursive: true });
  writeFileSync(
    join(secretsDir, BENCH_NAMESPACE, "dynamic-volumes-credentials.json"),
    JSON.stringify({
      stringData: {
        endpoint: "http://127.0.0.1:9",
        region: "us-east-1",
        accessKeyID: "AK",
        secretAccessKey: "SK",
      },
    }),
  );
  const pod = (name: string, buckets?: string): string =>
    JSON.stringify(
      injectedPod(
        { namespace: BENCH_NAMESPACE, name, ...(buckets !== undefined ? { buckets } : {}) },
        { root, signingKey: SIGNING_KEY },
      ),
      null,
      2,
    );
  writeFileSync(join(podsDir, `${STATUS_POD}.json`), pod(STATUS_POD, "a=bucket-a"));
  writeFileSync(join(podsDir, `${WATCHED_POD}.json`), pod(WATCHED_POD));

  const engine = new FakeEngine();
  const source = new LocalPodSource({ podsDir, secretsDir, log });
  const reconciler = new Reconciler(
    source,
    engine,
    { ...DEFAULT_RECONCILER_CONFIG, root, signingKey: SIGNING_KEY, defaultMounter: "s3fs" },
    log,
  );
  await reconciler.start();
  for (const deadline = Date.now() + 10_000; engine.mounted.size < 1;) {
    if (Date.now() > deadline) throw new Error("the status pod's bucket was not mounted within 10 s");
    await new Promise((r) => setTimeout(r, 10));
  }

  const metrics = createAgentMetrics();
  const https = await startHttpsServer({
    handler: createAgentHttpHandler({ registry: metrics.registry, isReady: () => true }),
    tls: { certFile, keyFile },
    host: "127.0.0.1",
    port: 0,
    log,
  });
  const consoleServer = new ConsoleServer({
    server: https.server,
    reconciler,
    source,
    nodeName: NODE_NAME,
    authenticator: new StaticTokenAuthenticator(parseTokenAuthFile(`${BENCH_TOKEN},bench,1`).tokens),
    authorizer: new AuthenticatedUserAuthorizer(),
    metrics,
    log,
    // Every load client connects from 127.0.0.1: the per-address caps that stop one address
    // flooding the console would otherwise meter the benchmark's own bursts.
    limits: {
      maxConnections,
      maxUnauthenticated: maxConnections,
      maxUnauthenticatedPerAddress: maxConnections,
      maxHandshakesPerAddress: maxConnections,
      requestsPerSecond: 1e9,
      burst: 1e9,
    },
  });
  return {
    port: https.port,
    close: async () => {
      await consoleServer.close();
      await https.close(500);
      await reconciler.stop();
    },
  };
}

async function startBaseline(
  certFile: string,
  keyFile: string,
  replyBytes: number,
  log: Logger,
): Promise<Running> {
  const reply = constantReply(replyBytes);
  const https = await startHttpsServer({
    handler: (_req, res) => {
      res.writeHead(404).end();
    },
    tls: { certFile, keyFile },
    host: "127.0.0.1",
    port: 0,
    log,
  });
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: DEFAULT_CONSOLE_LIMITS.maxPayloadBytes,
    perMessageDeflate: false,
    clientTracking: false,
  });
  const clients = new Set<WebSocket>();
  const broadcastPrefix = Buffer.from(BROADCAST_PREFIX);
  const onMessage = (from: WebSocket, data: RawData): void => {
    const buf = data as Buffer;
    if (buf.subarray(0, broadcastPrefix.length).equals(broadcastPrefix)) {
      const text = buf.toString("utf8");
      for (const c of clients) if (c !== from && c.readyState === WebSocket.OPEN) c.send(text);
    } else from.send(reply);
  };
  https.server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on("error", () => socket.destroy());
    if ((req.url ?? "/").split("?")[0] !== CONSOLE_PATH) {
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      clients.add(ws);
      ws.on("error", () => undefined);
      ws.on("message", (data) => onMessage(ws, data));
      ws.once("close", () => clients.delete(ws));
    });
  });
  return {
    port: https.port,
    close: async () => {
      for (const c of clients) c.terminate();
      await https.close(500);
    },
  };
}

async function main(argv: readonly string[]): Promise<void> {
  const [mode, certFile, keyFile, a, b] = argv;
  if (process.send === undefined) throw new Error("console-server.ts runs as a child with an IPC channel");
  // Discards every line; "warn" keeps per-request info lines from even being formatted.
  const sink = { write: (_line: string): void => undefined };
  const log = createLogger({ name: `bench-${mode}`, level: "warn" }, sink);
  let running: Running;
  if (mode === "console" && certFile && keyFile && a && b)
    running = await startConsole(certFile, keyFile, a, Number(b), log);
  else if (mode === "baseline" && certFile && keyFile && a)
    running = await startBaseline(certFile, keyFile, Number(a), log);
  else
    throw new Error(
      "usage: console-server.ts console <cert> <key> <workDir> <maxConnections> | baseline <cert> <key> <replyBytes>",
    );

  // Ctrl-C reaches the whole process group; the parent does the cleaning up.
  process.on("SIGINT", () => process.exit(130));
  serveParent(running.port, () => running.close());
}

runChild("bench console server", () => main(process.argv.slice(2)));
