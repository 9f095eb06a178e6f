/**
 * Runs the real `dvctl` as a child process (`node --import tsx dvctl/main.ts ...`), with a minimal
 * environment so that a developer's `DV_*` variables or kubeconfig never leak into a test.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";

export const REPO = join(import.meta.dirname, "..", "..");
export const DVCTL_MAIN = join(REPO, "dvctl", "main.ts");

export interface DvctlResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface DvctlOptions {
  /** Written to stdin, which is then closed. */
  readonly input?: string;
  /** Added to `PATH` and `HOME` (HOME should be a temp directory: the console keeps history there). */
  readonly env?: Readonly<Record<string, string>>;
  readonly timeoutMs?: number;
  /** The script to run instead of dvctl/main.ts (a `kubectl-dv` symlink to it, say). */
  readonly script?: string;
}

/** A running dvctl, for commands that stream (`watch`) or read stdin (`console`). */
export class DvctlProcess {
  stdout = "";
  stderr = "";
  readonly exited: Promise<DvctlResult>;

  constructor(
    readonly child: ChildProcess,
    timeoutMs: number,
  ) {
    child.stdout!.on("data", (c: Buffer) => (this.stdout += c.toString()));
    child.stderr!.on("data", (c: Buffer) => (this.stderr += c.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    this.exited = new Promise((resolve) =>
      child.once("close", (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout: this.stdout, stderr: this.stderr });
      }),
    );
  }

  /** Resolves once stdout matches `re`; rejects with what was printed after `timeoutMs`. */
  async waitForOutput(re: RegExp, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!re.test(this.stdout)) {
      if (Date.now() > deadline)
        throw new Error(
          `dvctl printed no ${re} within ${timeoutMs} ms:\n${this.stdout}\n--- stderr\n${this.stderr}`,
        );
      if (this.child.exitCode !== null)
        throw new Error(`dvctl exited ${this.child.exitCode}:\n${this.stdout}\n--- stderr\n${this.stderr}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

export function startDvctl(args: readonly string[], o: DvctlOptions = {}): DvctlProcess {
  const child = spawn(process.execPath, ["--import", "tsx", o.script ?? DVCTL_MAIN, ...args], {
    cwd: REPO,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: "/nonexistent", ...o.env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  const p = new DvctlProcess(child, o.timeoutMs ?? 60_000);
  if (o.input !== undefined) child.stdin.end(o.input);
  return p;
}

/** Runs dvctl to its end. */
export function runDvctl(args: readonly string[], o: DvctlOptions = {}): Promise<DvctlResult> {
  const p = startDvctl(args, o);
  if (o.input === undefined) p.child.stdin!.end();
  return p.exited;
}
