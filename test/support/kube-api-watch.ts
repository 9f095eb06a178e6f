/**
 * Watch responses of the fake API server: newline-delimited `{type, object}` events over a chunked
 * HTTP response, as the API server streams them for `?watch=true`.
 */
import type { ServerResponse } from "node:http";
import { matchesRef, type KubeObjectStore, type StoreEvent } from "./kube-object-store.js";
import { statusObject, type ResourceRef } from "./kube-resources.js";
import { parseFieldSelector, parseLabelSelector } from "./kube-selectors.js";

/**
 * Answers a watch request for `ref` with the query's `resourceVersion`, `labelSelector`,
 * `fieldSelector`, `timeoutSeconds` and `allowWatchBookmarks`:
 *
 * - no resourceVersion, `""` or `"0"`: synthetic ADDED events for the current objects, then changes;
 * - a resourceVersion still in history: the changes after it, then the live ones;
 * - an older (compacted) one: an ERROR event carrying a 410 Expired Status, and the end of the stream.
 *
 * Returns the open stream, or undefined when it has already ended. Throws a StoreError (400) for a
 * malformed selector before anything is written.
 */
export function serveWatch(
  store: KubeObjectStore,
  ref: ResourceRef,
  q: URLSearchParams,
  res: ServerResponse,
  split: boolean,
): WatchStream | undefined {
  const selectors = {
    labelSelector: q.get("labelSelector") ?? undefined,
    fieldSelector: q.get("fieldSelector") ?? undefined,
  };
  const labels = parseLabelSelector(selectors.labelSelector);
  const fields = parseFieldSelector(selectors.fieldSelector);
  const matches = (e: StoreEvent) => matchesRef(ref, e) && labels(e.object) && fields(e.object);
  res.writeHead(200, { "Content-Type": "application/json", "Cache-Control": "no-cache, private" });
  res.flushHeaders();
  const stream = new WatchStream(res, split, q.get("allowWatchBookmarks") === "true");
  const from = q.get("resourceVersion");
  if (from === null || from === "" || from === "0") {
    for (const object of store.list(ref, selectors)) stream.send({ type: "ADDED", object });
  } else {
    const past = store.eventsSince(ref, Number(from));
    if (past === "expired") {
      const message = `too old resource version: ${from} (${store.oldestResourceVersion})`;
      stream.send({ type: "ERROR", object: statusObject(410, "Expired", message) });
      stream.end();
      return undefined;
    }
    for (const e of past.filter(matches)) stream.send({ type: e.type, object: e.object });
  }
  const unsubscribe = store.subscribe((e) => {
    if (matches(e)) stream.send({ type: e.type, object: structuredClone(e.object) });
  });
  const timeout = Number(q.get("timeoutSeconds") ?? "0");
  const timer = timeout > 0 ? setTimeout(() => stream.end(), timeout * 1000) : undefined;
  stream.onClose(() => {
    unsubscribe();
    if (timer !== undefined) clearTimeout(timer);
  });
  return stream;
}

/** One open watch response: events are queued and written in order, optionally split across chunks. */
export class WatchStream {
  private queue: string[] = [];
  private writing = false;
  private ended = false;
  private readonly closeHandlers: (() => void)[] = [];

  constructor(
    private readonly res: ServerResponse,
    private readonly split: boolean,
    private readonly bookmarks: boolean,
  ) {
    res.on("close", () => this.closed());
  }

  send(event: { type: string; object: unknown }): void {
    if (this.ended) return;
    this.queue.push(`${JSON.stringify(event)}\n`);
    void this.drain();
  }

  bookmark(rv: number): void {
    if (this.bookmarks)
      this.send({
        type: "BOOKMARK",
        object: { kind: "Status", apiVersion: "v1", metadata: { resourceVersion: String(rv) } },
      });
  }

  /** Ends the response once the queued events are written; stops taking new ones now. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.writing) this.res.end();
    this.closed();
  }

  /** Runs `fn` once, when the stream ends from either side. */
  onClose(fn: () => void): void {
    this.closeHandlers.push(fn);
  }

  private async drain(): Promise<void> {
    if (this.writing) return;
    this.writing = true;
    while (this.queue.length > 0 && !this.res.destroyed) {
      const line = this.queue.shift()!;
      if (this.split && line.length > 2) {
        const half = Math.floor(line.length / 2);
        this.res.write(line.slice(0, half));
        await new Promise((r) => setTimeout(r, 5));
        this.res.write(line.slice(half));
      } else {
        this.res.write(line);
      }
    }
    this.writing = false;
    if (this.ended && !this.res.writableEnded) this.res.end();
  }

  private closed(): void {
    this.ended = true;
    for (const fn of this.closeHandlers.splice(0)) fn();
  }
}
