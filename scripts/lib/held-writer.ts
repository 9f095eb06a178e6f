/**
 * A writer inside a runc pod that creates a file at once and closes it when told to: it opens
 * `/datasets/<name>/<file>`, says "opened", writes everything it is fed into that descriptor, and
 * closes it when its input ends. So the file can be created while the S3 server answers and
 * closed while it does not, the way a test of write-back must (rclone may fail to create a file
 * while the server is down, but acknowledges a close from its cache). Exit 0 with "closed" means
 * every write and the close returned 0.
 */
import { spawn, type ChildProcess } from "node:child_process";

export interface WriterResult {
  /** Exit code: 0 acknowledged; 90 open failed; 91 write failed; 92 close failed; null killed. */
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export class HeldWriter {
  /** Resolves once the file is open; rejects when the writer exits before. */
  readonly opened: Promise<void>;
  readonly done: Promise<WriterResult>;
  private readonly child: ChildProcess;
  private stdout = "";
  private stderr = "";

  /** `container` is the runc container id; `name` the mount under `/datasets`. */
  constructor(container: string, name: string, file: string) {
    const path = `/datasets/${name}/${file}`;
    const script = `exec 3>${path} || exit 90; echo opened; cat >&3 || exit 91; exec 3>&- || exit 92; echo closed`;
    this.child = spawn("runc", ["exec", container, "sh", "-c", script], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.child.on("error", () => undefined);
    this.child.stdin!.on("error", () => undefined);
    this.child.stderr!.on("data", (c: Buffer) => (this.stderr += c.toString()));
    this.opened = new Promise((resolve, reject) => {
      this.child.stdout!.on("data", (c: Buffer) => {
        this.stdout += c.toString();
        if (this.stdout.includes("opened")) resolve();
      });
      this.child.once("exit", (code) =>
        reject(new Error(`the writer exited (${code}) before opening ${path}: ${this.stderr.trim()}`)),
      );
    });
    this.opened.catch(() => undefined);
    this.done = new Promise((resolve) =>
      this.child.once("close", (code) => resolve({ code, stdout: this.stdout, stderr: this.stderr })),
    );
  }

  /** Writes `data` and ends the writer's input: it then closes the file and exits. */
  finish(data: Uint8Array): void {
    this.child.stdin!.end(data);
  }

  /** SIGKILL to `runc exec` (cleanup). */
  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
  }
}
