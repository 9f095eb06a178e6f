/**
 * A keyed work queue: one worker per key at a time, at most `concurrency` keys at once, and a key
 * enqueued while it is being worked on runs once more afterwards (so the latest state always wins).
 * Retries wait on timers from an injected {@link Timers}, so that tests control time.
 */

/** A cancellable one-shot timer. */
export interface TimerHandle {
  cancel(): void;
}

/** What the queue needs of time: one-shot timers. */
export interface Timers {
  /** Calls `fn` once, `ms` from now. A pending timer must not keep the process alive. */
  setTimeout(fn: () => void, ms: number): TimerHandle;
}

/** Node's timers, unref'd: a pending retry does not hold the process up at shutdown. */
export const realTimers: Timers = {
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return { cancel: () => clearTimeout(t) };
  },
};

export interface WorkQueueOptions {
  /** How many keys are worked on at once (at least 1). */
  readonly concurrency: number;
  /** Default {@link realTimers}. */
  readonly timers?: Timers;
  /** Called with the number of keys queued or running whenever it may have changed. */
  readonly onDepth?: (depth: number) => void;
  /** Called when nothing is queued or running any more. */
  readonly onIdle?: () => void;
}

export class WorkQueue {
  private readonly queued = new Set<string>();
  private readonly pending: string[] = [];
  private readonly running = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly retries = new Map<string, TimerHandle>();
  private readonly idleWaiters: Array<() => void> = [];
  private readonly timers: Timers;
  private readonly concurrency: number;
  private stopped = false;

  /** `work` is the job for one key; its rejection is the caller's to handle (the queue goes on). */
  constructor(
    private readonly work: (key: string) => Promise<void>,
    private readonly opts: WorkQueueOptions,
  ) {
    this.timers = opts.timers ?? realTimers;
    this.concurrency = Math.max(1, opts.concurrency);
  }

  /** Keys queued or running. */
  get depth(): number {
    return this.pending.length + this.running.size;
  }

  /**
   * Queues `key`. A key already queued is not queued twice; a key being worked on is queued once
   * more, after the current run. Ignored once stopped.
   */
  enqueue(key: string): void {
    if (this.stopped) return;
    if (this.running.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.pending.push(key);
    this.pump();
  }

  /**
   * Enqueues `key` in `delayMs`, unless a retry of `key` is already pending (the earlier one
   * stands: a pass it starts looks at every failure of the key).
   */
  retryAfter(key: string, delayMs: number): void {
    if (this.stopped || this.retries.has(key)) return;
    this.retries.set(
      key,
      this.timers.setTimeout(
        () => {
          this.retries.delete(key);
          this.enqueue(key);
        },
        Math.max(0, delayMs),
      ),
    );
  }

  /** Whether a retry of `key` is pending. */
  retryPending(key: string): boolean {
    return this.retries.has(key);
  }

  /** Resolves when nothing is queued or running. */
  idle(): Promise<void> {
    if (this.depth === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Cancels pending retries and accepts no more keys; the runs under way finish (see idle). */
  stop(): void {
    this.stopped = true;
    for (const t of this.retries.values()) t.cancel();
    this.retries.clear();
  }

  private pump(): void {
    while (this.running.size < this.concurrency && this.pending.length > 0) {
      const key = this.pending.shift()!;
      this.queued.delete(key);
      this.running.add(key);
      this.opts.onDepth?.(this.depth);
      let run: Promise<void>;
      try {
        run = this.work(key);
      } catch (e) {
        // A job that throws before its first await is a rejection like any other.
        run = Promise.reject(e instanceof Error ? e : new Error(String(e)));
      }
      void run
        .catch(() => undefined)
        .finally(() => {
          this.running.delete(key);
          if (this.dirty.delete(key)) this.enqueue(key);
          this.pump();
          this.opts.onDepth?.(this.depth);
          if (this.depth === 0) {
            this.opts.onIdle?.();
            for (const w of this.idleWaiters.splice(0)) w();
          }
        });
    }
  }
}
