import { expect } from "chai";
import { WorkQueue, type TimerHandle, type Timers } from "../../../../agent/reconcile/work-queue.js";

/** Timers that fire only when the test advances the clock. */
class FakeTimers implements Timers {
  now = 0;
  private readonly due: Array<{ at: number; fn: () => void; cancelled: boolean }> = [];

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const t = { at: this.now + ms, fn, cancelled: false };
    this.due.push(t);
    return { cancel: () => void (t.cancelled = true) };
  }

  get pending(): number {
    return this.due.filter((t) => !t.cancelled).length;
  }

  /** Moves the clock forward, firing every timer due by then in time order. */
  advance(ms: number): void {
    const until = this.now + ms;
    for (;;) {
      const next = this.due.filter((t) => !t.cancelled && t.at <= until).sort((a, b) => a.at - b.at)[0];
      if (next === undefined) break;
      this.due.splice(this.due.indexOf(next), 1);
      this.now = next.at;
      next.fn();
    }
    this.now = until;
  }
}

/** A job per run that the test finishes by hand. */
class Jobs {
  readonly started: string[] = [];
  readonly running = new Map<string, Array<{ resolve: () => void; reject: (e: Error) => void }>>();
  maxRunning = 0;
  maxRunningPerKey = 0;

  readonly work = (key: string): Promise<void> => {
    this.started.push(key);
    return new Promise<void>((resolve, reject) => {
      const runs = this.running.get(key) ?? [];
      runs.push({ resolve, reject });
      this.running.set(key, runs);
      this.maxRunningPerKey = Math.max(this.maxRunningPerKey, runs.length);
      this.maxRunning = Math.max(this.maxRunning, this.count());
    }).finally(() => {
      const runs = this.running.get(key)!;
      runs.shift();
      if (runs.length === 0) this.running.delete(key);
    });
  };

  count(): number {
    return [...this.running.values()].reduce((n, r) => n + r.length, 0);
  }

  /** Finishes the oldest run of `key` and lets the queue react. */
  async finish(key: string, error?: Error): Promise<void> {
    const run = this.running.get(key)?.[0];
    if (run === undefined) throw new Error(`${key} is not running`);
    if (error !== undefined) run.reject(error);
    else run.resolve();
    await settle();
  }
}

/** Lets promise callbacks run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

describe("WorkQueue", () => {
  describe("for one key", () => {
    it("runs it once at a time, and once more after the run when it is enqueued meanwhile", async () => {
      const jobs = new Jobs();
      const q = new WorkQueue(jobs.work, { concurrency: 4, timers: new FakeTimers() });
      q.enqueue("a");
      await settle();
      q.enqueue("a");
      q.enqueue("a");
      q.enqueue("a");
      await settle();
      expect(jobs.started).to.deep.equal(["a"]);
      await jobs.finish("a");
      expect(jobs.started, "one more run for all the changes made meanwhile").to.deep.equal(["a", "a"]);
      await jobs.finish("a");
      await q.idle();
      expect(jobs.started).to.deep.equal(["a", "a"]);
      expect(jobs.maxRunningPerKey).to.equal(1);
    });

    it("queues a key that waits for a free worker only once", async () => {
      const jobs = new Jobs();
      const q = new WorkQueue(jobs.work, { concurrency: 1, timers: new FakeTimers() });
      q.enqueue("a");
      q.enqueue("b");
      q.enqueue("b");
      await settle();
      expect(q.depth).to.equal(2);
      await jobs.finish("a");
      await jobs.finish("b");
      await q.idle();
      expect(jobs.started).to.deep.equal(["a", "b"]);
    });
  });

  it("works on at most `concurrency` keys at once, in the order they came", async () => {
    const jobs = new Jobs();
    const depths: number[] = [];
    const q = new WorkQueue(jobs.work, {
      concurrency: 2,
      timers: new FakeTimers(),
      onDepth: (d) => depths.push(d),
    });
    for (const k of ["a", "b", "c", "d"]) q.enqueue(k);
    await settle();
    expect(jobs.started).to.deep.equal(["a", "b"]);
    expect(q.depth).to.equal(4);
    await jobs.finish("b");
    expect(jobs.started).to.deep.equal(["a", "b", "c"]);
    await jobs.finish("a");
    await jobs.finish("c");
    await jobs.finish("d");
    await q.idle();
    expect(jobs.started).to.deep.equal(["a", "b", "c", "d"]);
    expect(jobs.maxRunning).to.equal(2);
    expect(depths.at(-1)).to.equal(0);
  });

  it("goes on after a job that fails, and reports idle once nothing is queued or running", async () => {
    const jobs = new Jobs();
    let idles = 0;
    const q = new WorkQueue(jobs.work, { concurrency: 1, timers: new FakeTimers(), onIdle: () => idles++ });
    q.enqueue("a");
    q.enqueue("b");
    let idle = false;
    void q.idle().then(() => (idle = true));
    await jobs.finish("a", new Error("boom"));
    expect(jobs.started).to.deep.equal(["a", "b"]);
    expect(idle).to.equal(false);
    await jobs.finish("b");
    expect(idle).to.equal(true);
    expect(idles).to.equal(1);
  });

  describe("retries", () => {
    it("enqueues the key when its timer fires, not before", async () => {
      const jobs = new Jobs();
      const timers = new FakeTimers();
      const q = new WorkQueue(jobs.work, { concurrency: 1, timers });
      q.retryAfter("a", 1000);
      expect(q.retryPending("a")).to.equal(true);
      timers.advance(999);
      await settle();
      expect(jobs.started).to.deep.equal([]);
      timers.advance(1);
      await settle();
      expect(jobs.started).to.deep.equal(["a"]);
      expect(q.retryPending("a")).to.equal(false);
      await jobs.finish("a");
    });

    it("keeps the pending retry of a key when another is asked for", async () => {
      const jobs = new Jobs();
      const timers = new FakeTimers();
      const q = new WorkQueue(jobs.work, { concurrency: 1, timers });
      q.retryAfter("a", 1000);
      q.retryAfter("a", 10);
      expect(timers.pending).to.equal(1);
      timers.advance(10);
      await settle();
      expect(jobs.started).to.deep.equal([]);
      timers.advance(990);
      await settle();
      expect(jobs.started).to.deep.equal(["a"]);
      await jobs.finish("a");
    });

    it("marks a key that is running when its retry fires for one more run", async () => {
      const jobs = new Jobs();
      const timers = new FakeTimers();
      const q = new WorkQueue(jobs.work, { concurrency: 1, timers });
      q.enqueue("a");
      q.retryAfter("a", 100);
      timers.advance(100);
      await settle();
      expect(jobs.started).to.deep.equal(["a"]);
      await jobs.finish("a");
      expect(jobs.started).to.deep.equal(["a", "a"]);
      await jobs.finish("a");
      await q.idle();
    });

    it("cancels pending retries and refuses new keys once stopped", async () => {
      const jobs = new Jobs();
      const timers = new FakeTimers();
      const q = new WorkQueue(jobs.work, { concurrency: 1, timers });
      q.retryAfter("a", 100);
      q.stop();
      expect(timers.pending).to.equal(0);
      q.enqueue("b");
      q.retryAfter("c", 1);
      timers.advance(1000);
      await settle();
      expect(jobs.started).to.deep.equal([]);
      await q.idle();
    });
  });
});
