/** A minimal HTTPS client for tests that trusts only the given CA, as the API server does with caBundle. */
import { request, type Agent } from "node:https";

export interface HttpsReply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  /** Whether the request went over a kept-alive connection opened earlier. */
  reusedSocket: boolean;
  /** SHA-256 fingerprint of the server's certificate. */
  fingerprint: string;
}

export interface HttpsRequestOptions {
  port: number;
  path: string;
  ca: string;
  method?: string;
  body?: string | Buffer;
  contentType?: string;
  servername?: string;
  agent?: Agent;
}

export function httpsRequest(o: HttpsRequestOptions): Promise<HttpsReply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port: o.port,
        path: o.path,
        method: o.method ?? (o.body !== undefined ? "POST" : "GET"),
        ca: o.ca,
        servername: o.servername ?? "localhost",
        // A fresh connection unless the caller brings an agent: Node's global agent keeps sockets alive.
        agent: o.agent ?? false,
        headers: o.body !== undefined ? { "content-type": o.contentType ?? "application/json" } : {},
      },
      (res) => {
        const sock = res.socket as unknown as {
          getPeerCertificate?: () => { fingerprint256?: string };
        } | null;
        const fingerprint = sock?.getPeerCertificate?.().fingerprint256 ?? "";
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text: Buffer.concat(chunks).toString("utf8"),
            fingerprint,
            reusedSocket: req.reusedSocket,
          });
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(o.body);
  });
}
