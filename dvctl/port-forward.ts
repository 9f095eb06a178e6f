/**
 * A local TCP port that leads to a port of a pod through the Kubernetes API's `portforward`
 * subresource, as `kubectl port-forward` does, with `@kubernetes/client-node`'s `PortForward`
 * (websocket, channel protocol `v4.channel.k8s.io`).
 *
 * - Listens on 127.0.0.1 only, on a free port; one API websocket per accepted connection, because
 *   one portforward stream carries one TCP connection to the pod.
 * - `PortForward` does not end the local socket when the API closes the stream, and reports the
 *   kubelet's errors (nothing listens on the port, the pod is gone) on an error channel: both are
 *   handled here, and the last error is kept so that dvctl can say why the console did not open.
 * - The TLS session to the agent runs inside the stream, end to end: the API server and kubelet see
 *   only ciphertext, and the agent's certificate is verified by dvctl.
 */
import { createServer, type Server, type Socket } from "node:net";
import { Writable } from "node:stream";
import { AppError } from "../shared/errors.js";

/** The part of `PortForward` used here; tests may pass another implementation. */
export interface PortForwarder {
  portForward(
    namespace: string,
    podName: string,
    targetPorts: number[],
    output: NodeJS.WritableStream,
    err: NodeJS.WritableStream | null,
    input: NodeJS.ReadableStream,
    retryCount?: number,
  ): Promise<unknown>;
}

/** What dvctl needs of the websocket `PortForward` returns (a `ws` WebSocket). */
interface StreamSocket {
  on(event: "close", fn: () => void): unknown;
  on(event: "error", fn: (e: Error) => void): unknown;
  close(): void;
  terminate?(): void;
}

export interface PortForwardTarget {
  readonly namespace: string;
  readonly pod: string;
  readonly port: number;
}

/** Maps a failed websocket upgrade to the API (`Unexpected server response: 403`...) to an AppError. */
export function portForwardError(target: PortForwardTarget, e: unknown): AppError {
  const message = (e as { message?: unknown })?.message;
  const text = typeof message === "string" && message !== "" ? message : String(e);
  const status = /\b(\d{3})\b/.exec(text)?.[1];
  const what = `port-forward to pod ${target.namespace}/${target.pod} port ${target.port}`;
  if (status === "401")
    return new AppError("Unauthenticated", `${what}: the API server refused the kubeconfig's credentials`);
  if (status === "403")
    return new AppError(
      "Forbidden",
      `${what}: forbidden; you need "create" on pods/portforward in namespace ${target.namespace}, or give the agent's address with --agent`,
    );
  return new AppError("Unavailable", `${what} failed: ${text}`, { cause: e });
}

export class PortForwardTunnel {
  private readonly open = new Set<{ socket: Socket; stream?: StreamSocket }>();
  private failure: AppError | undefined;

  private constructor(
    private readonly server: Server,
    readonly localPort: number,
  ) {}

  /** Listens on 127.0.0.1:0; every connection there is forwarded to `target`. */
  static async start(
    forwarder: PortForwarder,
    target: PortForwardTarget,
    debug: (line: string) => void = () => undefined,
  ): Promise<PortForwardTunnel> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    const port = (server.address() as { port: number }).port;
    const tunnel = new PortForwardTunnel(server, port);
    server.on("connection", (socket) => tunnel.forward(forwarder, target, socket, debug));
    debug(`port-forward: 127.0.0.1:${port} -> pod ${target.namespace}/${target.pod}:${target.port}`);
    return tunnel;
  }

  /** Why the last forwarded connection failed, if it did. */
  get lastError(): AppError | undefined {
    return this.failure;
  }

  /** Stops listening and closes every forwarded connection. */
  async close(): Promise<void> {
    for (const c of this.open) {
      c.socket.destroy();
      c.stream?.close();
    }
    this.open.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private forward(
    forwarder: PortForwarder,
    target: PortForwardTarget,
    socket: Socket,
    debug: (line: string) => void,
  ): void {
    const entry: { socket: Socket; stream?: StreamSocket } = { socket };
    this.open.add(entry);
    // A reconnect (dvctl console) must not be explained by an earlier connection's failure.
    this.failure = undefined;
    // Writes that race a close must not throw out of the process.
    socket.on("error", () => undefined);
    socket.once("close", () => {
      this.open.delete(entry);
      entry.stream?.close();
    });
    // The kubelet's error channel: "error forwarding port 9443 to pod ...: connection refused".
    const errors = new Writable({
      write: (chunk: Buffer, _enc, done) => {
        const text = chunk.toString("utf8").trim();
        if (text !== "") {
          this.failure = new AppError(
            "Unavailable",
            `port-forward to pod ${target.namespace}/${target.pod} port ${target.port}: ${text}`,
          );
          debug(`port-forward: ${text}`);
          socket.destroy();
        }
        done();
      },
    });
    // The socket stays paused until PortForward reads it, so nothing the client sends early is lost.
    forwarder.portForward(target.namespace, target.pod, [target.port], socket, errors, socket, 0).then(
      (ws) => {
        const stream = (typeof ws === "function" ? (ws as () => unknown)() : ws) as StreamSocket | null;
        if (stream === null || socket.destroyed) {
          stream?.close();
          return;
        }
        entry.stream = stream;
        stream.on("error", (e) => debug(`port-forward: stream error: ${e.message}`));
        // PortForward leaves the local socket open when the stream ends; end it here.
        stream.on("close", () => socket.end());
      },
      (e: unknown) => {
        this.failure = portForwardError(target, e);
        debug(`port-forward: ${this.failure.message}`);
        socket.destroy();
      },
    );
  }
}
