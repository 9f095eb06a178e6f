/**
 * A websocket client for the console fuzz: it replaces well-formed ids with unique ones, matches
 * replies to requests, counts replies, events and error codes, and records every frame of an
 * undocumented shape as a violation.
 */
import { WebSocket } from "ws";
import {
  CONSOLE_ERROR_CODES,
  CONSOLE_PATH,
  parseRequest,
  parseServerFrame,
  type ConsoleRequest,
  type ServerFrame,
} from "../../shared/protocol.js";
import { bodyText } from "./arbitraries.js";
import { REAL, type Frame } from "./console-frames.js";

/** An error reply never quotes a hostile value at length. */
export const MAX_ERROR_FRAME = 4096;

// --- a fuzzing client ----------------------------------------------------------------------------

export interface Outcome {
  readonly request: Record<string, unknown>;
  reply?: { ok: boolean; code?: string };
}

export class FuzzConn {
  sent = 0;
  replies = 0;
  okReplies = 0;
  events = 0;
  closed: { code: number; reason: string } | undefined;
  closing = false;
  readonly notes = new Set<string>();
  readonly violations: string[] = [];
  readonly codes: Record<string, number> = {};
  private readonly byId = new Map<string, Outcome>();
  private readonly sharedIds = new Set<string>();
  private wake: (() => void) | undefined;

  private constructor(
    readonly ws: WebSocket,
    private readonly nextId: () => string,
    private readonly outcomes: Outcome[],
  ) {
    ws.on("message", (data, isBinary) => this.onMessage(data as Buffer, isBinary));
    ws.on("error", () => undefined);
    ws.on("close", (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.wake?.();
    });
  }

  static open(
    port: number,
    ca: string,
    header: string | undefined,
    nextId: () => string,
    outcomes: Outcome[],
  ): Promise<FuzzConn | { refused: number }> {
    const ws = new WebSocket(`wss://127.0.0.1:${port}${CONSOLE_PATH}`, {
      ca,
      headers: header === undefined ? {} : { authorization: header },
      maxPayload: 64 * 1024 * 1024,
    });
    return new Promise((resolve, reject) => {
      ws.once("unexpected-response", (_req, res) => {
        res.resume();
        resolve({ refused: res.statusCode ?? 0 });
      });
      ws.once("error", reject);
      ws.once("open", () => {
        ws.off("error", reject);
        resolve(new FuzzConn(ws, nextId, outcomes));
      });
    });
  }

  get open(): boolean {
    return this.closed === undefined && this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends one frame; a well-formed id is replaced by a unique one so that its reply can be matched. */
  send(f: Frame): void {
    let data = f.data;
    if (f.uniqueId && f.object !== undefined) {
      const o: Record<string, unknown> & { id: string } = { ...f.object, id: this.nextId() };
      // A valid mount/unmount of a real pod waits for the reconciler: keep its wait short.
      const parsed = tryParse(JSON.stringify(o));
      if (
        (parsed?.op === "mount" || parsed?.op === "unmount") &&
        REAL.has(`${parsed.namespace}/${parsed.pod}`)
      )
        o.timeoutSeconds = Math.min(typeof o.timeoutSeconds === "number" ? o.timeoutSeconds : 2, 2);
      data = bodyText(o);
      const outcome: Outcome = { request: o };
      this.byId.set(o.id, outcome);
      this.outcomes.push(outcome);
    } else if (f.object !== undefined) {
      // An id that may repeat (1e21, "ü🙂"): its reply cannot be told apart, so an edit it asks for
      // counts as accepted whatever the reply.
      const id = f.object.id;
      if (typeof id === "string" || typeof id === "number") this.sharedIds.add(String(id));
      this.outcomes.push({ request: f.object });
    }
    this.notes.add(f.note);
    this.sent++;
    this.ws.send(data, { binary: f.binary });
  }

  /** Resolves once every frame sent has its reply, or the connection closed, or `ms` passed. */
  async settle(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (this.replies < this.sent && this.closed === undefined) {
      if (Date.now() > deadline) return false;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, 20);
      });
    }
    return true;
  }

  async close(): Promise<void> {
    if (this.closed !== undefined) return;
    this.closing = true;
    this.ws.close();
    const t = setTimeout(() => this.ws.terminate(), 1000);
    while (this.closed === undefined) await new Promise((r) => setTimeout(r, 10));
    clearTimeout(t);
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (isBinary) return void this.violations.push("the server sent a binary frame");
    const text = data.toString("utf8");
    let f: ServerFrame;
    try {
      f = parseServerFrame(text);
    } catch {
      return void this.violations.push(`a frame of unknown shape: ${text.slice(0, 200)}`);
    }
    if ("event" in f) {
      this.events++;
      return;
    }
    if ("progress" in f) {
      if (!this.byId.has(String(f.id)) && !this.sharedIds.has(String(f.id)))
        this.violations.push(`progress for an unknown id: ${text.slice(0, 200)}`);
      return;
    }
    this.replies++;
    if (f.ok) this.okReplies++;
    else {
      this.codes[f.error.code] = (this.codes[f.error.code] ?? 0) + 1;
      if (!(CONSOLE_ERROR_CODES as readonly string[]).includes(f.error.code))
        this.violations.push(`undocumented error code: ${text.slice(0, 200)}`);
      if (f.error.code === "Internal") this.violations.push(`an Internal error: ${text.slice(0, 300)}`);
      if (f.error.message === "") this.violations.push(`an error without a message: ${text.slice(0, 200)}`);
      if (text.length > MAX_ERROR_FRAME)
        this.violations.push(`an error reply of ${text.length} bytes: ${text.slice(0, 200)}`);
    }
    const outcome = f.id === null ? undefined : this.byId.get(String(f.id));
    if (outcome !== undefined) {
      if (outcome.reply !== undefined) this.violations.push(`a second reply for id ${String(f.id)}`);
      outcome.reply = f.ok ? { ok: true } : { ok: false, code: f.error.code };
    }
    this.wake?.();
  }
}

export function tryParse(text: string): (ConsoleRequest & { namespace?: string; pod?: string }) | undefined {
  try {
    return parseRequest(text);
  } catch {
    return undefined;
  }
}
