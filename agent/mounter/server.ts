/**
 * The mounter's unix socket: who may connect is the kernel's decision (the socket is mode 0660,
 * owned by the agent's uid and gid, in a directory only root and the agent's group can enter), and
 * every line that arrives is parsed by {@link parseRequest} before anything runs.
 */
import { chmod, chown, lstat, mkdir, unlink } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { dirname } from "node:path";
import { ConfigError, isAppError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import {
  LineReader,
  parseRequest,
  seqOf,
  wireError,
  type ClientExitedEvent,
  type MounterReply,
} from "./protocol.js";
import type { MounterService } from "./service.js";

export interface MounterServerOptions {
  readonly socketPath: string;
  /** Owner of the socket: the agent's uid and gid. */
  readonly agentUid: number;
  readonly agentGid: number;
  readonly service: Pick<MounterService, "handle">;
  readonly log: Logger;
  /** Connections at once; one agent needs one. Default 16. */
  readonly maxConnections?: number;
}

/**
 * Makes the socket's directory (0750, root and the agent's group) and removes a socket left by an
 * earlier mounter. Anything else in the socket's place, or a directory that is a symbolic link, is
 * refused: the mounter runs as root and must not be steered into chown-ing someone else's file.
 */
async function prepare(o: MounterServerOptions): Promise<void> {
  const dir = dirname(o.socketPath);
  await mkdir(dir, { recursive: true, mode: 0o750 });
  const d = await lstat(dir);
  if (!d.isDirectory()) throw new ConfigError(`${dir}, the socket's directory, is not a directory`);
  if (d.uid !== 0)
    throw new ConfigError(`${dir}, the socket's directory, is owned by uid ${d.uid}, not root`);
  await chown(dir, 0, o.agentGid);
  await chmod(dir, 0o750);
  const existing = await lstat(o.socketPath).catch(() => undefined);
  if (existing !== undefined) {
    if (!existing.isSocket()) throw new ConfigError(`${o.socketPath} exists and is not a socket`);
    await unlink(o.socketPath);
  }
}

export class MounterServer {
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    private readonly o: MounterServerOptions,
  ) {}

  static async start(o: MounterServerOptions): Promise<MounterServer> {
    await prepare(o);
    const server = createServer();
    const self = new MounterServer(server, o);
    server.maxConnections = o.maxConnections ?? 16;
    server.on("connection", (s) => self.serve(s));
    // Created 0600 (umask), then opened to the agent: never a moment when others could connect.
    const umask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(o.socketPath, () => {
          server.off("error", reject);
          resolve();
        });
      });
    } finally {
      process.umask(umask);
    }
    await chown(o.socketPath, o.agentUid, o.agentGid);
    await chmod(o.socketPath, 0o660);
    return self;
  }

  /** Tells every connected agent that the client of `mountPoint` exited. */
  broadcast(event: ClientExitedEvent): void {
    const line = `${JSON.stringify(event)}\n`;
    for (const s of this.sockets) if (s.writable) s.write(line);
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private serve(socket: Socket): void {
    const { log, service } = this.o;
    this.sockets.add(socket);
    const reader = new LineReader();
    const send = (reply: MounterReply): void => {
      if (socket.writable) socket.write(`${JSON.stringify(reply)}\n`);
    };
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("error", (e) => log.debug({ err: e.message }, "mounter connection error"));
    // Set once a line is refused for its length: what the peer sends after that is never read.
    let refused = false;
    socket.on("data", (chunk: Buffer) => {
      if (refused) return;
      let lines: Buffer[];
      try {
        lines = reader.push(chunk);
      } catch (e) {
        refused = true;
        log.warn({ err: (e as Error).message }, "request refused; connection closed");
        send({ seq: -1, ok: false, error: wireError(e) });
        socket.end();
        return;
      }
      for (const line of lines) {
        let req;
        try {
          req = parseRequest(line);
        } catch (e) {
          log.warn({ err: (e as Error).message }, "request refused");
          send({ seq: seqOf(e) ?? -1, ok: false, error: wireError(e) });
          continue;
        }
        const { seq } = req;
        service
          .handle(req, () => send({ seq, started: true }))
          .then(
            (result) => send({ seq, ok: true, result }),
            (e: unknown) => {
              if (isAppError(e)) log.info({ op: req.op, code: e.code, err: e.message }, "request failed");
              else log.error({ op: req.op, err: (e as Error)?.message ?? String(e) }, "request failed");
              send({ seq, ok: false, error: wireError(e) });
            },
          );
      }
    });
  }
}
