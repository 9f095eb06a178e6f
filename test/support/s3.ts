/**
 * A real S3 server for integration tests: s3rver on 127.0.0.1, port 0, in this process, with a
 * bucket created and objects seeded through @aws-sdk/client-s3.
 *
 * In-process means FUSE traffic from a client mounted by the test is served by the test's own event
 * loop. Never touch a FUSE mount backed by this server with a synchronous `fs` call: the loop would
 * block waiting for the client, which waits for the server on the same loop.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CreateBucketCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";

/** The credentials s3rver accepts. */
export const S3RVER_CREDENTIALS = Object.freeze({ accessKeyID: "S3RVER", secretAccessKey: "S3RVER" });
export const S3RVER_REGION = "us-east-1";

interface S3rverInstance {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
  httpServer?: Server;
}
type S3rverCtor = new (options: Record<string, unknown>) => S3rverInstance;

export interface TestS3 {
  /** `http://127.0.0.1:PORT` */
  readonly endpoint: string;
  readonly port: number;
  readonly client: S3Client;
  /** Creates a bucket (through the API, as a user would). */
  createBucket(bucket: string): Promise<void>;
  put(bucket: string, key: string, body: string | Uint8Array): Promise<void>;
  /** The object's body as UTF-8, or undefined when it does not exist. */
  get(bucket: string, key: string): Promise<string | undefined>;
  /** All keys in the bucket (first 1,000: enough for tests, and no legacy-provider listing). */
  keys(bucket: string, prefix?: string): Promise<string[]>;
  /** Closes every connection and the server, and removes its data directory. */
  stop(): Promise<void>;
}

export interface StartS3Options {
  /** Buckets to create, each with objects to seed (key → body). */
  readonly buckets?: Readonly<Record<string, Readonly<Record<string, string>>>>;
}

/** Starts s3rver on 127.0.0.1 with an ephemeral port and seeds the given buckets. */
export async function startS3(opts: StartS3Options = {}): Promise<TestS3> {
  const require = createRequire(import.meta.url);
  const S3rver = require("s3rver") as S3rverCtor;
  const directory = await mkdtemp(join(tmpdir(), "dv-s3rver-"));
  const server = new S3rver({ address: "127.0.0.1", port: 0, silent: true, directory });
  const address = await server.run();
  const endpoint = `http://127.0.0.1:${address.port}`;
  const client = new S3Client({
    endpoint,
    region: S3RVER_REGION,
    forcePathStyle: true,
    credentials: {
      accessKeyId: S3RVER_CREDENTIALS.accessKeyID,
      secretAccessKey: S3RVER_CREDENTIALS.secretAccessKey,
    },
  });
  const s3: TestS3 = {
    endpoint,
    port: address.port,
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
    async stop() {
      client.destroy();
      server.httpServer?.closeAllConnections();
      await server.close().catch(() => undefined);
      await rm(directory, { recursive: true, force: true });
    },
  };
  try {
    for (const [bucket, objects] of Object.entries(opts.buckets ?? {})) {
      await s3.createBucket(bucket);
      for (const [key, body] of Object.entries(objects)) await s3.put(bucket, key, body);
    }
  } catch (e) {
    await s3.stop();
    throw e;
  }
  return s3;
}
