/**
 * Servers under test run in child processes, so that the load generator does not share their event
 * loop. A child is `node --import tsx <entry> ...args` with an IPC channel: it reports its port when
 * it listens, answers CPU and event-loop samples, and exits when told to stop or when the channel
 * closes (the parent died). The parent also kills it on any exit path through `BenchContext.defer`.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

/** Parent to child. */
export type ToChild = { type: "sample" } | { type: "stop" };

/** Child to parent. */
export type FromChild =
  | { type: "ready"; port: number }
  | { type: "sample"; sample: ServerSample }
  | { type: "error"; message: string };

/** Cumulative counters of the child, as of the moment it answered. */
export interface ServerSample {
  /** `process.cpuUsage()`, microseconds. */
  readonly cpuUser: number;
  readonly cpuSystem: number;
  /** `performance.eventLoopUtilization()` totals, milliseconds. */
  readonly eluActive: number;
  readonly eluIdle: number;
}

/** Change between two samples: CPU in ms, event-loop utilization as a fraction. */
export function sampleDelta(a: ServerSample, b: ServerSample): { cpuMs: number; elu: number } {
  const active = b.eluActive - a.eluActive;
  const idle = b.eluIdle - a.eluIdle;
  return {
    cpuMs: (b.cpuUser - a.cpuUser + (b.cpuSystem - a.cpuSystem)) / 1000,
    elu: active + idle > 0 ? active / (active + idle) : 0,
  };
}

export interface ServerChild {
  readonly pid: number;
  readonly port: number;
  sample(): Promise<ServerSample>;
  /** Asks the child to close and exit; kills it when it has not exited after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

export const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));

const START_TIMEOUT_MS = 30_000;
const SAMPLE_TIMEOUT_MS = 5_000;

/**
 * Spawns `entry` (a path relative to the repository root) under tsx and waits for it to listen.
 * `nodeArgs` go before the entry (e.g. `--cpu-prof`). The child is killed by `defer`'s clean-up.
 */
export async function spawnServer(
  entry: string,
  args: readonly string[],
  defer: (fn: () => void) => void,
  nodeArgs: readonly string[] = [],
): Promise<ServerChild> {
  const child = spawn(process.execPath, [...nodeArgs, "--import", "tsx", entry, ...args], {
    cwd: REPO_ROOT,
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  defer(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  const name = `${entry} ${args[0] ?? ""}`.trim();
  let exitedHow: string | undefined;
  const exited = new Promise<string>((resolve) =>
    child.once("exit", (code, signal) => {
      exitedHow = `exited with ${signal ?? `code ${code}`}`;
      resolve(exitedHow);
    }),
  );

  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`${name} did not report its port within ${START_TIMEOUT_MS} ms`));
    }, START_TIMEOUT_MS);
    child.on("message", (m: FromChild) => {
      if (m.type === "ready") {
        clearTimeout(timer);
        resolve(m.port);
      } else if (m.type === "error") {
        clearTimeout(timer);
        reject(new Error(`${name} failed to start: ${m.message}`));
      }
    });
    child.once("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot spawn ${process.execPath}: ${e.message}`));
    });
    void exited.then((how) => {
      clearTimeout(timer);
      reject(new Error(`${name} ${how} before listening; see its output above`));
    });
  });

  const send = (m: ToChild): void => {
    child.send(m);
  };

  return {
    pid: child.pid!,
    port,
    sample: () =>
      new Promise<ServerSample>((resolve, reject) => {
        if (exitedHow !== undefined) {
          reject(new Error(`${name} (pid ${child.pid}) ${exitedHow} while under load`));
          return;
        }
        const timer = setTimeout(() => {
          child.off("message", onMessage);
          reject(new Error(`${name} (pid ${child.pid}) did not answer a sample request`));
        }, SAMPLE_TIMEOUT_MS);
        const onMessage = (m: FromChild): void => {
          if (m.type !== "sample") return;
          clearTimeout(timer);
          child.off("message", onMessage);
          resolve(m.sample);
        };
        child.on("message", onMessage);
        send({ type: "sample" });
      }),
    stop: async (graceMs = 5_000) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      if (child.connected) send({ type: "stop" });
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Child side: a message to the parent. */
export function tellParent(m: FromChild): void {
  process.send?.(m);
}

/**
 * Child side, once listening on `port`: answers samples; on "stop" closes and exits (exits, not
 * just closes, so that a --cpu-prof profile is written); exits at once when the parent is gone,
 * since nobody would stop it then; and reports the port.
 */
export function serveParent(port: number, close: () => Promise<unknown>): void {
  process.on("disconnect", () => process.exit(0));
  process.on("message", (m: ToChild) => {
    if (m.type === "sample") {
      const cpu = process.cpuUsage();
      const elu = performance.eventLoopUtilization();
      tellParent({
        type: "sample",
        sample: { cpuUser: cpu.user, cpuSystem: cpu.system, eluActive: elu.active, eluIdle: elu.idle },
      });
    } else if (m.type === "stop") {
      void close().finally(() => process.exit(0));
    }
  });
  tellParent({ type: "ready", port });
}

/** Child side: runs `main`; a failure is reported to the parent and on stderr, and exits 1. */
export function runChild(name: string, main: () => Promise<void>): void {
  main().catch((e: unknown) => {
    const message = e instanceof Error ? e.message : String(e);
    tellParent({ type: "error", message });
    process.stderr.write(`${name}: ${message}\n`);
    process.exit(1);
  });
}
