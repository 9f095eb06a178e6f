/**
 * A local S3 server in a child process: s3rver on 127.0.0.1 with buckets created and objects
 * seeded. A child, not in-process, because FUSE clients mounted by the same program are served by
 * it: with the server on the caller's event loop, any synchronous filesystem call on such a mount
 * (or one blocked in the kernel) deadlocks the loop it waits for. Started with
 * `--openssl-legacy-provider` (s3rver's continuation tokens use DES, which OpenSSL 3 only
 * offers through the legacy provider; without it truncated ListObjectsV2 answers HTTP 500).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { extname, join } from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";
import {
  CreateBucketCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";

/** The credentials and region s3rver accepts. */
export const S3RVER_CREDENTIALS = Object.freeze({ accessKeyId: "S3RVER", secretAccessKey: "S3RVER" });
export const S3RVER_REGION = "us-east-1";

export interface S3ServerOptions {
  /** Buckets to create, each with objects to seed (key → body). */
  readonly buckets?: Readonly<Record<string, Readonly<Record<string, string | Uint8Array>>>>;
  /** Holds `data/` and `server.log`. Default a fresh temporary directory, removed by `stop()`. */
  readonly directory?: string;
  /** Default 15 s. */
  readonly startTimeoutMs?: number;
}

export interface S3Server {
  /** `http://127.0.0.1:PORT` */
  readonly endpoint: string;
  readonly port: number;
  /** The server process. */
  readonly pid: number;
  readonly logFile: string;
  readonly client: S3Client;
  createBucket(bucket: string): Promise<void>;
  put(bucket: string, key: string, body: string | Uint8Array): Promise<void>;
  /** The object's body as UTF-8, or undefined when it does not exist. */
  get(bucket: string, key: string): Promise<string | undefined>;
  /** Keys in the bucket (first 1,000), sorted. */
  keys(bucket: string, prefix?: string): Promise<string[]>;
  /** SIGTERM (SIGKILL after 3 s), then removes the directory when it was created here. Idempotent. */
  stop(): Promise<void>;
}

// tsx's loader as a URL for `--import`: resolved here, so it does not depend on the child's cwd.
// createRequire, not import.meta.resolve: tsx may run this module as CommonJS, which lacks it.
function tsxLoader(): string {
  return pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;
}

interface Child {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  readonly port: number;
}

/** Spawns the server and waits for its port; on any failure kills it and rejects with its log. */
async function spawnChild(
  directory: string,
  buckets: string[],
  timeoutMs: number,
  ownDir: boolean,
): Promise<Child> {
  const logFile = join(directory, "server.log");
  // Run the sibling entry with the same extension as this module: .ts under tsx, .js once built.
  const ext = extname(fileURLToPath(import.meta.url));
  const entry = fileURLToPath(new URL(`./s3-server-child${ext}`, import.meta.url));
  const loader = ext === ".ts" ? ["--import", tsxLoader()] : [];
  const argv = [
    "--openssl-legacy-provider",
    ...loader,
    entry,
    join(directory, "data"),
    JSON.stringify(buckets),
    // The child removes the directory itself if we die without stopping it.
    ...(ownDir ? [directory] : []),
  ];
  const logFd = openSync(logFile, "a", 0o600);
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, argv, { shell: false, stdio: ["ignore", logFd, logFd, "ipc"] });
  } finally {
    closeSync(logFd); // the child has its own copy
  }
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.on("error", () => undefined);
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`s3rver did not start in ${timeoutMs} ms`)), timeoutMs);
      const fail = (e: Error): void => (clearTimeout(timer), reject(e));
      child.once("message", (m: { port?: number }) => {
        clearTimeout(timer);
        if (typeof m.port === "number") resolve(m.port);
        else reject(new Error(`unexpected message from s3rver: ${JSON.stringify(m)}`));
      });
      child.once("error", fail);
      child.once("exit", (code, signal) => fail(new Error(`s3rver exited (${code ?? signal})`)));
    });
    return { child, exited, port };
  } catch (e) {
    child.kill("SIGKILL");
    await exited;
    const text = await readFile(logFile, "utf8").catch(() => "");
    throw new Error(`${(e as Error).message}\n${text}`, { cause: e });
  }
}

/** Starts s3rver in a child process on an ephemeral port and seeds `opts.buckets`. */
export async function startS3Server(opts: S3ServerOptions = {}): Promise<S3Server> {
  const ownDir = opts.directory === undefined;
  const directory = opts.directory ?? (await mkdtemp(join(tmpdir(), "dv-s3rver-")));
  let spawned: Child;
  try {
    await mkdir(join(directory, "data"), { recursive: true });
    spawned = await spawnChild(
      directory,
      Object.keys(opts.buckets ?? {}),
      opts.startTimeoutMs ?? 15_000,
      ownDir,
    );
  } catch (e) {
    if (ownDir) await rm(directory, { recursive: true, force: true });
    throw e;
  }
  const { child, exited, port } = spawned;
  // The open IPC channel is what tells the child its parent is alive; it must not keep us alive.
  child.unref();
  child.channel?.unref();

  const endpoint = `http://127.0.0.1:${port}`;
  const client = new S3Client({
    endpoint,
    region: S3RVER_REGION,
    forcePathStyle: true,
    credentials: { ...S3RVER_CREDENTIALS }, // a copy: the SDK annotates the object it is given
  });
  let stopped: Promise<void> | undefined;
  const server: S3Server = {
    endpoint,
    port,
    pid: child.pid!,
    logFile: join(directory, "server.log"),
    client,
    async createBucket(bucket) {
      await client.send(new CreateBucketCommand({ Bucket: bucket }));
    },
    async put(bucket, key, body) {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
    },
    async get(bucket, key) {
      try {
        const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
        return await r.Body?.transformToString();
      } catch (e) {
        if ((e as { name?: string }).name === "NoSuchKey") return undefined;
        throw e;
      }
    },
    async keys(bucket, prefix) {
      const r = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
      return (r.Contents ?? []).map((o) => o.Key ?? "").sort();
    },
    stop() {
      stopped ??= (async () => {
        client.destroy();
        if (child.exitCode === null && child.signalCode === null) {
          child.ref(); // keep this process alive until the server is really gone
          child.kill("SIGTERM");
          const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
          await exited;
          clearTimeout(timer);
        }
        if (ownDir) await rm(directory, { recursive: true, force: true });
      })();
      return stopped;
    },
  };
  try {
    for (const [bucket, objects] of Object.entries(opts.buckets ?? {})) {
      for (const [key, body] of Object.entries(objects)) await server.put(bucket, key, body);
    }
  } catch (e) {
    await server.stop();
    throw e;
  }
  return server;
}
