/**
 * The `pods/<name>/portforward` subresource of the fake API server, speaking what the kubelet speaks
 * behind the API server's proxy (`pkg/kubelet/cri/streaming/portforward/websocket.go`):
 *
 * - a websocket upgrade with `?ports=N` (one port here) and subprotocol `v4.channel.k8s.io`;
 * - channel 0 carries data both ways, channel 1 the kubelet's errors; each binary message starts
 *   with its channel byte, and the first message on each channel is the port, 2 bytes little-endian;
 * - one TCP connection to the pod per websocket; when it cannot be made, the error channel says
 *   `error forwarding port N to pod ...` and the stream closes.
 *
 * Only the client side (`@kubernetes/client-node`'s `PortForward`) is real in tests that use this.
 */
import type { IncomingMessage } from "node:http";
import { connect } from "node:net";
import type { Duplex } from "node:stream";
import { WebSocketServer } from "ws";
import type { Injection, RecordedRequest } from "./kube-api-server.js";
import { reasonFor } from "./kube-resources.js";

/** Where a pod's port is reachable for the fake kubelet; undefined: the pod does not listen there. */
export type PortForwardResolver = (
  namespace: string,
  pod: string,
  port: number,
) => { host: string; port: number } | undefined;

const PROTOCOL = "v4.channel.k8s.io";
const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: false,
  handleProtocols: (offered) => (offered.has(PROTOCOL) ? PROTOCOL : false),
});

/** What {@link answerUpgrade} needs of the fake API server. */
export interface UpgradeContext {
  readonly token: string;
  readonly resolver: PortForwardResolver | undefined;
  record(rec: RecordedRequest): void;
  takeInjection(rec: RecordedRequest): Injection | undefined;
  podExists(namespace: string, name: string): boolean;
}

/**
 * Answers a websocket upgrade as the API server would: 401 without the token, injected failures
 * (`status`, `destroy`), 404 for anything but the portforward of an existing pod, else the stream.
 */
export function answerUpgrade(ctx: UpgradeContext, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  socket.on("error", () => socket.destroy());
  const url = new URL(req.url ?? "/", "https://fake");
  const rec: RecordedRequest = {
    method: req.method ?? "GET",
    path: url.pathname,
    query: Object.fromEntries(url.searchParams),
    headers: req.headers,
    contentType: undefined,
    body: undefined,
  };
  ctx.record(rec);
  const refuse = (status: number, reason: string): void => {
    rec.status = status;
    refuseUpgrade(socket, status, reason);
  };
  if (req.headers.authorization !== `Bearer ${ctx.token}`) return refuse(401, "Unauthorized");
  const rule = ctx.takeInjection(rec);
  if (rule?.destroy) return void socket.destroy();
  if (rule?.status !== undefined) return refuse(rule.status, rule.reason ?? reasonFor(rule.status));
  const target = portForwardTarget(url.pathname);
  if (target === undefined || ctx.resolver === undefined || !ctx.podExists(target.namespace, target.pod))
    return refuse(404, "NotFound");
  rec.status = 101;
  servePortForward(req, socket, head, target, ctx.resolver);
}

/** `/api/v1/namespaces/<ns>/pods/<pod>/portforward` → its namespace and pod, else undefined. */
export function portForwardTarget(path: string): { namespace: string; pod: string } | undefined {
  const m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/portforward$/.exec(path);
  return m ? { namespace: decodeURIComponent(m[1]!), pod: decodeURIComponent(m[2]!) } : undefined;
}

/** Refuses an upgrade with an HTTP status, as the API server does before proxying. */
export function refuseUpgrade(socket: Duplex, status: number, reason: string): void {
  const body = JSON.stringify({ kind: "Status", apiVersion: "v1", status: "Failure", reason, code: status });
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

/** Serves one port-forward stream for `namespace/pod` (already authorized and found). */
export function servePortForward(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  target: { namespace: string; pod: string },
  resolve: PortForwardResolver,
): void {
  const ports = new URL(req.url ?? "/", "https://fake").searchParams.getAll("ports");
  const port = Number(ports[0]);
  if (ports.length !== 1 || !Number.isInteger(port) || port < 1 || port > 65535)
    return refuseUpgrade(socket, 400, "BadRequest");
  wss.handleUpgrade(req, socket, head, (ws) => {
    const prefix = Buffer.alloc(2);
    prefix.writeUInt16LE(port);
    const send = (channel: number, data: Buffer): void => {
      if (ws.readyState === ws.OPEN) ws.send(Buffer.concat([Buffer.from([channel]), data]));
    };
    send(0, prefix);
    send(1, prefix);
    const fail = (why: string): void => {
      send(1, Buffer.from(`error forwarding port ${port} to pod ${target.pod}, uid : ${why}`));
      ws.close();
    };
    const to = resolve(target.namespace, target.pod, port);
    if (to === undefined) return fail(`dial tcp 127.0.0.1:${port}: connect: connection refused`);
    const tcp = connect(to.port, to.host);
    tcp.on("data", (d: Buffer) => send(0, d));
    tcp.on("error", (e) => fail(e.message));
    tcp.on("end", () => ws.close());
    ws.on("message", (data: Buffer, isBinary) => {
      if (isBinary && data[0] === 0 && data.length > 1) tcp.write(data.subarray(1));
    });
    ws.on("close", () => tcp.destroy());
    ws.on("error", () => tcp.destroy());
  });
}
