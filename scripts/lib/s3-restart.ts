/**
 * An outage of the local S3 server: kill it, then start it again on the same port over the same
 * data directory, so that every Secret that points at `http://127.0.0.1:PORT` keeps working and
 * every object written before the outage is still there. Wraps the {@link S3Server} that
 * {@link startS3Server} started (a `LocalNode`'s `s3`); its `client` keeps working across restarts
 * because it only knows the endpoint.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { extname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { S3Server } from "./s3-server.js";

export interface RestartableS3 {
  readonly port: number;
  readonly endpoint: string;
  /** The pid of the server process serving now, or undefined while it is down. */
  pid(): number | undefined;
  running(): boolean;
  /** SIGKILL (a crash, not a clean stop) and waits until the process is gone. Idempotent. */
  kill(): Promise<void>;
  /** Starts a server on the same port over the same data; retries while the port is still taken. */
  start(timeoutMs?: number): Promise<void>;
  /** Stops a server this wrapper started (SIGTERM, SIGKILL after 3 s). The original is left to its owner. */
  stop(): Promise<void>;
}

function tsxLoader(): string {
  return pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function isZombieOrGone(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  if (stat === "") return true;
  return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
}

interface Started {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
}

/**
 * Takes over the outages of `server`, whose data lives in `<directory>/data` (LocalNode:
 * `<work>/s3`). The first {@link RestartableS3.kill} kills the original process.
 */
export function restartableS3(server: S3Server, directory: string): RestartableS3 {
  let current: { pid: number; own: Started | undefined } | undefined = { pid: server.pid, own: undefined };

  const spawnOnce = async (timeoutMs: number): Promise<Started> => {
    const ext = extname(fileURLToPath(import.meta.url));
    const entry = fileURLToPath(new URL(`./s3-server-port-child${ext}`, import.meta.url));
    const loader = ext === ".ts" ? ["--import", tsxLoader()] : [];
    const logFd = openSync(join(directory, "server.log"), "a", 0o600);
    let child: ChildProcess;
    try {
      child = spawn(
        process.execPath,
        ["--openssl-legacy-provider", ...loader, entry, join(directory, "data"), String(server.port)],
        { shell: false, stdio: ["ignore", logFd, logFd, "ipc"] },
      );
    } finally {
      closeSync(logFd);
    }
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.on("error", () => undefined);
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`s3rver did not start in ${timeoutMs} ms`)),
          timeoutMs,
        );
        child.once("message", (m: { port?: number; error?: string }) => {
          clearTimeout(timer);
          if (m.port === server.port) resolve();
          else reject(new Error(`s3rver on port ${server.port}: ${m.error ?? JSON.stringify(m)}`));
        });
        child.once("exit", (code, signal) => {
          clearTimeout(timer);
          reject(new Error(`s3rver exited (${code ?? signal})`));
        });
      });
    } catch (e) {
      child.kill("SIGKILL");
      await exited;
      throw e;
    }
    child.unref();
    child.channel?.unref();
    return { child, exited };
  };

  const handle: RestartableS3 = {
    port: server.port,
    endpoint: server.endpoint,
    pid: () => current?.pid,
    running: () => current !== undefined && alive(current.pid),
    async kill() {
      const c = current;
      current = undefined;
      if (c === undefined) return;
      c.own?.child.ref(); // keep this process alive until the server is really gone
      try {
        process.kill(c.pid, "SIGKILL");
      } catch {
        /* already gone */
      }
      if (c.own !== undefined) {
        await c.own.exited;
        return;
      }
      // The original's ChildProcess belongs to startS3Server, which reaps it; wait for that.
      const deadline = Date.now() + 10_000;
      while (!(await isZombieOrGone(c.pid)) && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 20));
    },
    async start(timeoutMs = 20_000) {
      if (current !== undefined) throw new Error("the S3 server is running");
      const deadline = Date.now() + timeoutMs;
      let last: unknown;
      while (Date.now() < deadline) {
        try {
          const own = await spawnOnce(Math.max(1000, deadline - Date.now()));
          current = { pid: own.child.pid!, own };
          return;
        } catch (e) {
          last = e;
          await new Promise((r) => setTimeout(r, 250));
        }
      }
      throw new Error(`could not restart the S3 server on port ${server.port}: ${(last as Error)?.message}`);
    },
    async stop() {
      const own = current?.own;
      if (own === undefined) return;
      current = undefined;
      own.child.ref();
      own.child.kill("SIGTERM");
      const timer = setTimeout(() => own.child.kill("SIGKILL"), 3000);
      await own.exited;
      clearTimeout(timer);
    },
  };
  return handle;
}
