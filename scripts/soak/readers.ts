/**
 * Long-lived readers: processes inside pod containers that hold a file of a mounted bucket open
 * (`exec 3< /datasets/<name>/marker.txt`) and read it in a loop, through the held descriptor
 * (`tail -c` seeks it back to the start) and with a fresh `cat`, about every 100 ms. They run on
 * pods of their own whose annotation never changes (reserved: no flipper, console edit, writer or
 * FUSE kill touches them), so every error they see is a real one: across an agent kill there must
 * be none; across a mounter kill (its FUSE clients die with it) errors are expected until the agent
 * has made the mounts again, and then the readers must read again (the held descriptor is opened
 * again after an error, since one of a dead client's mount never works again).
 *
 * Each reader prints `ERR <i> held=<rc> cat=<rc> <what it read>` for every iteration with an error,
 * `OK <i>` at the first good iteration after errors, `REOPEN <i>` when it opened its file again and
 * `HB <i> <good iterations>` every 20 iterations; lines are timed on arrival.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { formatBucketEntry, type BucketEntry } from "../../shared/buckets.js";
import { markerText } from "./catalog.js";
import type { SoakPod, Window, World } from "./world.js";

/** The reader pods: one per mounter, with fixed read-only entries. */
const READER_PODS: ReadonlyArray<{ mounter: "s3fs" | "rclone"; entries: readonly BucketEntry[] }> = [
  {
    mounter: "s3fs",
    entries: [
      { name: "r1", bucket: "alpha", prefix: "p1", readOnly: true },
      { name: "r2", bucket: "beta", prefix: "", readOnly: true },
    ],
  },
  { mounter: "rclone", entries: [{ name: "r1", bucket: "gamma", prefix: "p2", readOnly: true }] },
];

/** After a window closes, errors are still its own for this long (the agent remounts, S3 answers again). */
const TAIL_MS: Readonly<Record<Window["kind"], number>> = { mounter: 30_000, s3: 30_000, agent: 10_000 };
/** Which window an error in several belongs to: the one that explains it. */
const PRIORITY: readonly Window["kind"][] = ["mounter", "s3", "agent"];

export type ErrorKind = Window["kind"] | "none";

/** Heartbeats come every 20 iterations (about 3 s): a longer gap than this is a stall. */
const STALL_MS = 8000;

function script(name: string, want: string): string {
  const f = `/datasets/${name}/marker.txt`;
  return [
    `f=${f}; want='${want}'`,
    `op() { command exec 3< "$f"; }`,
    `op 2>/dev/null || echo "ERR 0 open"`,
    `i=0; ok=0; bad=0`,
    `while :; do`,
    `  i=$((i+1))`,
    `  h=$(tail -c 64 <&3 2>&1); hr=$?`,
    `  c=$(cat "$f" 2>&1); cr=$?`,
    `  if [ $hr -eq 0 ] && [ "$h" = "$want" ] && [ $cr -eq 0 ] && [ "$c" = "$want" ]; then`,
    `    ok=$((ok+1)); if [ $bad -eq 1 ]; then bad=0; echo "OK $i"; fi`,
    `  else`,
    `    bad=1; echo "ERR $i held=$hr cat=$cr $(printf '%s | %s' "$h" "$c" | tr '\\n' ' ' | head -c 160)"`,
    `    if [ $hr -ne 0 ] || [ "$h" != "$want" ]; then command exec 3<&-; op 2>/dev/null && echo "REOPEN $i"; fi`,
    `  fi`,
    `  if [ $((i % 20)) -eq 0 ]; then echo "HB $i $ok"; fi`,
    `  sleep 0.1`,
    `done`,
  ].join("\n");
}

class Reader {
  readonly errors: Array<{ t: number; line: string; held: boolean; fresh: boolean }> = [];
  readonly oks: number[] = [];
  reopens = 0;
  /** Gaps between heartbeats longer than {@link STALL_MS}: reads that hung rather than failed. */
  readonly stalls: Array<{ from: number; to: number }> = [];
  iterations = 0;
  good = 0;
  lastBeat = 0;
  maxBeatGapMs = 0;
  exitedAt: number | undefined;
  private readonly child: ChildProcess;
  private buf = "";
  private stopping = false;

  constructor(
    readonly label: string,
    container: string,
    name: string,
    want: string,
    private readonly w: World,
  ) {
    this.child = spawn("runc", ["exec", container, "sh", "-c", script(name, want)], {
      stdio: ["ignore", "pipe", "ignore"],
    });
    this.child.on("error", (e) => w.ledger.harnessError(`reader ${label}`, e));
    this.child.stdout!.on("data", (c: Buffer) => this.feed(c.toString()));
    this.child.once("exit", (code, signal) => {
      this.exitedAt = Date.now();
      if (!this.stopping)
        w.ledger.harnessError(`reader ${label}`, new Error(`exited (${code ?? signal}) before the end`));
    });
  }

  private feed(text: string): void {
    this.buf += text;
    const lines = this.buf.split("\n");
    this.buf = lines.pop() ?? "";
    const t = Date.now();
    for (const line of lines) {
      const [tag, i, rest] = line.split(" ", 3);
      if (tag === "ERR") {
        this.errors.push({ t, line, held: !/ held=0 /.test(line), fresh: !/ cat=0 /.test(line) });
        if (this.errors.length <= 3 || this.errors.length % 50 === 0)
          this.w.log(`reader ${this.label}: ${line.slice(0, 160)} (${this.errors.length} errors so far)`);
      } else if (tag === "OK") {
        this.oks.push(t);
        this.w.log(`reader ${this.label}: reads again at iteration ${i}`);
      } else if (tag === "REOPEN") this.reopens++;
      else if (tag === "HB") {
        if (this.lastBeat !== 0 && t - this.lastBeat > STALL_MS)
          this.stalls.push({ from: this.lastBeat, to: t });
        if (this.lastBeat !== 0) this.maxBeatGapMs = Math.max(this.maxBeatGapMs, t - this.lastBeat);
        this.lastBeat = t;
        this.iterations = Number(i);
        this.good = Number(rest);
      }
    }
  }

  /** Reads work now: no error yet, or a good iteration came after the last error. */
  readingAfter(t: number): boolean {
    const lastErr = this.errors[this.errors.length - 1]?.t;
    if (lastErr === undefined || lastErr < t) return this.lastBeat > t || this.oks.some((k) => k > t);
    return this.oks.some((k) => k >= lastErr);
  }

  /** SIGTERM, which `runc exec` passes on to the shell; SIGKILL to runc if that is not enough. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.exitedAt !== undefined) return;
    this.child.kill("SIGTERM");
    const exited = new Promise<void>((r) => this.child.once("exit", () => r()));
    await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
    if (this.exitedAt === undefined) this.child.kill("SIGKILL");
  }
}

export interface ReaderSummary {
  readonly pods: number;
  readonly readers: number;
  readonly iterations: number;
  readonly errors: Readonly<Record<ErrorKind, number>>;
  /** Iterations with an error, by which read failed: the held descriptor's, the fresh `cat`. */
  readonly heldErrors: number;
  readonly freshErrors: number;
  readonly reopens: number;
  /** Mounter kills × readers after which reads worked again, of all. */
  readonly recovered: number;
  readonly recoveries: number;
  /** From the mounter's restart to the reader's first good iteration, worst case. */
  readonly worstRecoveryMs: number | undefined;
  readonly maxBeatGapMs: number;
  /** Stalls (heartbeat gaps over 8 s) by the fault window they overlap: count and longest. */
  readonly stalls: Readonly<Record<ErrorKind, { count: number; longestMs: number }>>;
}

export class Readers {
  readonly pods: SoakPod[] = [];
  private readonly readers: Reader[] = [];

  constructor(private readonly w: World) {}

  /** Creates the reader pods, waits for their mounts and starts one reader per mount. */
  async start(): Promise<void> {
    const w = this.w;
    const rng = w.rng("readers");
    for (const spec of READER_PODS) {
      const value = spec.entries.map(formatBucketEntry).join(", ");
      const pod = await w.createPod(rng, value, spec.mounter, { reserved: true, namespace: "team-a" });
      w.ledger.count("pods.created");
      w.ledger.count(`pods.created.${spec.mounter}`);
      this.pods.push(pod);
    }
    const deadline = Date.now() + 60_000;
    for (const [i, spec] of READER_PODS.entries()) {
      const pod = this.pods[i]!;
      for (const e of spec.entries) {
        while ((await w.node.status(pod.name))[e.name]?.state !== "mounted") {
          if (Date.now() > deadline || w.aborted)
            throw new Error(`reader pod ${pod.name}: ${e.name} not mounted`);
          await w.sleep(200);
        }
        const label = `${pod.name}/${e.name} (${spec.mounter})`;
        const want = markerText(e.bucket, e.prefix).trimEnd();
        this.readers.push(new Reader(label, w.node.pod(pod.name).container.id, e.name, want, w));
      }
    }
    w.ledger.count("readers.processes", this.readers.length);
    w.log(`${this.readers.length} long-lived readers on pods ${this.pods.map((p) => p.name).join(", ")}`);
  }

  /** Host directories of the reader pods: the FUSE-kill actor leaves their clients alone. */
  hostDirs(): string[] {
    return this.pods.map((p) => p.hostDir);
  }

  /** Waits (at most `timeoutMs`) until every reader reads again after `t`. */
  async recovered(t: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.w.aborted) {
      if (this.readers.every((r) => r.readingAfter(t))) return true;
      if (Date.now() > deadline) return false;
      await this.w.sleep(200);
    }
    return false;
  }

  /** Stops the readers, judges their errors by fault window, and counts everything in the ledger. */
  async finish(): Promise<ReaderSummary> {
    await Promise.all(this.readers.map((r) => r.stop()));
    const w = this.w;
    const L = w.ledger;
    const errors: Record<ErrorKind, number> = { agent: 0, mounter: 0, s3: 0, none: 0 };
    const windowOf = (t: number): Window | undefined => {
      for (const kind of PRIORITY)
        for (const win of w.windows)
          if (win.kind === kind && win.from <= t && t <= (win.to ?? Infinity) + TAIL_MS[kind]) return win;
      return undefined;
    };
    let recovered = 0;
    let recoveries = 0;
    let worst: number | undefined;
    const end = Date.now();
    for (const r of this.readers) {
      for (const e of r.errors) {
        const win = windowOf(e.t);
        const kind: ErrorKind = win?.kind ?? "none";
        errors[kind]++;
        if (kind === "agent")
          L.violate(
            "readers",
            `reader ${r.label}: a read failed across an agent kill: ${e.line.slice(0, 200)}`,
          );
        else if (kind === "none")
          L.violate(
            "readers",
            `reader ${r.label}: a read failed with no fault around: ${e.line.slice(0, 200)}`,
          );
      }
      for (const win of w.windows) {
        if (win.kind === "agent") L.checked("readers");
        if (win.kind !== "mounter") continue;
        L.checked("readers");
        recoveries++;
        const back = win.to ?? end;
        // Its errors: up to its tail, or to the next mounter kill when that comes first.
        const next = w.windows.find((x) => x.kind === "mounter" && x.from > win.from)?.from ?? Infinity;
        const until = Math.min(back + TAIL_MS.mounter, next);
        const last = r.errors.filter((e) => e.t >= win.from && e.t < until).pop();
        const ok = last === undefined ? back : r.oks.find((k) => k >= last.t);
        if (ok === undefined) {
          L.violate(
            "readers",
            `reader ${r.label} never read again after the mounter kill at +${Math.round((win.from - w.loadStart) / 1000)} s of the load`,
          );
          continue;
        }
        recovered++;
        worst = Math.max(worst ?? 0, ok - back);
      }
      L.checked("readers");
      if (r.exitedAt !== undefined && r.exitedAt < end - 5000)
        L.violate("readers", `reader ${r.label} ended before the load did`);
      else if (end - r.lastBeat > 15_000)
        L.violate(
          "readers",
          `reader ${r.label} made no progress in its last ${Math.round((end - r.lastBeat) / 1000)} s`,
        );
    }
    const stalls: Record<ErrorKind, { count: number; longestMs: number }> = {
      agent: { count: 0, longestMs: 0 },
      mounter: { count: 0, longestMs: 0 },
      s3: { count: 0, longestMs: 0 },
      none: { count: 0, longestMs: 0 },
    };
    for (const r of this.readers)
      for (const g of r.stalls) {
        // The window in which the hang began: shortly after the last heartbeat before it.
        const win = windowOf(Math.min(g.to, g.from + STALL_MS / 2));
        const st = stalls[win?.kind ?? "none"];
        st.count++;
        st.longestMs = Math.max(st.longestMs, g.to - g.from);
      }
    const summary: ReaderSummary = {
      stalls,
      pods: this.pods.length,
      readers: this.readers.length,
      iterations: this.readers.reduce((a, r) => a + r.iterations, 0),
      errors,
      heldErrors: this.readers.reduce((a, r) => a + r.errors.filter((e) => e.held).length, 0),
      freshErrors: this.readers.reduce((a, r) => a + r.errors.filter((e) => e.fresh).length, 0),
      reopens: this.readers.reduce((a, r) => a + r.reopens, 0),
      recovered,
      recoveries,
      worstRecoveryMs: worst,
      maxBeatGapMs: Math.max(0, ...this.readers.map((r) => r.maxBeatGapMs)),
    };
    L.counters.set("readers.iterations", summary.iterations);
    for (const [k, v] of Object.entries(errors)) L.counters.set(`readers.errors.${k}`, v);
    L.counters.set("readers.reopens", summary.reopens);
    L.counters.set("readers.errors.heldDescriptor", summary.heldErrors);
    L.counters.set("readers.errors.freshCat", summary.freshErrors);
    L.counters.set("readers.recoveredAfterMounterKill", recovered);
    if (worst !== undefined) L.counters.set("readers.worstRecoveryMs", worst);
    L.counters.set("readers.maxHeartbeatGapMs", summary.maxBeatGapMs);
    for (const [k, v] of Object.entries(stalls))
      if (v.count > 0) L.counters.set(`readers.stalls.${k}`, v.count);
    return summary;
  }
}
