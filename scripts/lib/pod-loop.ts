/**
 * A shell loop running inside a runc pod for as long as a test needs it, reporting each iteration
 * and each error on its output: the long-lived readers and writers that must not notice an agent
 * restart. The loop prints `pid=<pid>` first, so that {@link PodLoop.stop} can end it from inside
 * the container (a signal to `runc exec` itself would leave the loop running).
 */
import { spawn, type ChildProcess } from "node:child_process";

/** Holds `path` open and reads a line from it each round, plus a fresh `cat` of it. */
export function readerScript(path: string): string {
  return [
    `f=${path}`,
    'exec 3<"$f" || exit 90',
    "echo pid=$$",
    "n=0",
    "while :; do",
    '  if ! IFS= read -r line <&3; then exec 3<&-; exec 3<"$f"; fi',
    '  cat "$f" >/dev/null || echo "ERR cat $n"',
    "  n=$((n+1)); echo ok $n",
    "  sleep 0.05",
    "done",
  ].join("\n");
}

/** Appends a numbered line to `path` each round, opened for append and fsync'ed before close. */
export function appenderScript(path: string): string {
  return [
    "echo pid=$$",
    "n=0",
    "while :; do",
    "  n=$((n+1))",
    `  if echo "line $n" | dd of=${path} oflag=append conv=notrunc,fsync status=none; then echo ok $n; else echo "ERR write $n"; fi`,
    "  sleep 0.05",
    "done",
  ].join("\n");
}

export class PodLoop {
  private readonly child: ChildProcess;
  private out = "";
  private err = "";
  private exitCode: number | null | undefined;
  readonly exited: Promise<void>;

  constructor(
    private readonly container: string,
    script: string,
  ) {
    this.child = spawn("runc", ["exec", container, "sh", "-c", script], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child.on("error", () => undefined);
    this.child.stdout!.on("data", (c: Buffer) => (this.out += c.toString()));
    this.child.stderr!.on("data", (c: Buffer) => (this.err += c.toString()));
    this.exited = new Promise((resolve) =>
      this.child.once("close", (code) => {
        this.exitCode = code;
        resolve();
      }),
    );
  }

  /** Rounds that succeeded. */
  get rounds(): number {
    return this.out.split("\n").filter((l) => l.startsWith("ok ")).length;
  }

  /** The numbers of the rounds that succeeded, in order. */
  get acknowledged(): number[] {
    return this.out
      .split("\n")
      .filter((l) => l.startsWith("ok "))
      .map((l) => Number(l.slice(3)));
  }

  /** Every error the loop reported, stderr included, and its exit when it ended on its own. */
  get errors(): string[] {
    const own = this.out.split("\n").filter((l) => l.startsWith("ERR"));
    const stderr = this.err.split("\n").filter((l) => l.trim() !== "");
    const ended = this.exitCode !== undefined && !this.stopping ? [`exited ${this.exitCode}`] : [];
    return [...own, ...stderr, ...ended];
  }

  private stopping = false;

  /** Waits until the loop has done `n` more rounds than now. */
  async advance(n: number, timeoutMs = 20_000): Promise<void> {
    const target = this.rounds + n;
    const deadline = Date.now() + timeoutMs;
    while (this.rounds < target) {
      if (this.exitCode !== undefined) throw new Error(`the loop ended: ${this.errors.join("; ")}`);
      if (Date.now() > deadline) throw new Error(`the loop did ${this.rounds}/${target} rounds`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** Ends the loop from inside the container and waits for it. */
  async stop(): Promise<void> {
    this.stopping = true;
    const pid = /^pid=(\d+)$/m.exec(this.out)?.[1];
    if (pid !== undefined && this.exitCode === undefined) {
      const k = spawn("runc", ["exec", this.container, "kill", pid], { stdio: "ignore" });
      await new Promise((r) => k.once("close", r));
    }
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5000);
    await this.exited;
    clearTimeout(timer);
  }
}
