/**
 * Writes pods' `dynamic-volumes/status` annotations: the writes of one pod one after another, so
 * that an older status never lands last, and none when the text is what was written last.
 */
import type { Logger } from "../../shared/logger.js";
import type { PodRef, PodSource } from "../sources/pod-source.js";
import { renderStatus, type PodStatus } from "./status.js";

/** Where status goes: the pod source's `writeStatus`. */
export type StatusSink = Pick<PodSource, "writeStatus">;

interface PodWrites {
  /** The text last written, to skip unchanged writes. */
  written?: string;
  /** The pod's latest write, which the next one waits for. */
  writing?: Promise<void>;
}

export class StatusWriter {
  private readonly pods = new Map<string, PodWrites>();

  constructor(
    private readonly sink: StatusSink,
    private readonly log: Logger,
  ) {}

  /**
   * Writes `current()` for pod `key` once the pod's earlier writes are done: read then, not now,
   * so that a burst of changes ends in one write of the latest status. Skipped when the text is
   * the one written last; a failed write is logged (the next one tries again) and never rejects.
   */
  write(key: string, ref: PodRef, current: () => PodStatus): Promise<void> {
    const w = this.pods.get(key) ?? {};
    this.pods.set(key, w);
    const run = (w.writing ?? Promise.resolve()).then(() => this.writeNow(w, ref, current()));
    w.writing = run;
    return run;
  }

  /** Forgets a pod that is gone: the next pod of that name starts afresh. */
  forget(key: string): void {
    this.pods.delete(key);
  }

  private async writeNow(w: PodWrites, ref: PodRef, status: PodStatus): Promise<void> {
    const text = renderStatus(status);
    if (text === w.written) return;
    try {
      await this.sink.writeStatus(ref, text);
      w.written = text;
    } catch (e) {
      this.log.warn({ pod: `${ref.namespace}/${ref.name}`, err: (e as Error).message }, "status not written");
    }
  }
}
