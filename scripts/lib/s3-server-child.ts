/**
 * Child-process entry of {@link startS3Server} (./s3-server.ts): runs s3rver on 127.0.0.1, port 0,
 * creates the named buckets, reports `{port}` over the IPC channel and serves until SIGTERM or until
 * the parent goes away (the channel closes), so a crashed test run leaves no server behind.
 *
 * argv: <data directory> <JSON array of bucket names> [<directory to remove when orphaned>]
 */
import { rmSync } from "node:fs";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";

interface S3rverInstance {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
}
type S3rverCtor = new (options: Record<string, unknown>) => S3rverInstance;

const [directory, bucketsJson, removeWhenOrphaned] = process.argv.slice(2);
const send = process.send?.bind(process);
if (directory === undefined || send === undefined) {
  console.error("usage: node s3-server-child.ts <dir> <buckets-json> (started by startS3Server, with IPC)");
  process.exit(2);
}
const buckets = JSON.parse(bucketsJson ?? "[]") as string[];
const S3rver = createRequire(import.meta.url)("s3rver") as S3rverCtor;
const server = new S3rver({
  address: "127.0.0.1",
  port: 0,
  silent: process.env["S3RVER_VERBOSE"] === undefined,
  directory,
  configureBuckets: buckets.map((name) => ({ name, configs: [] })),
});
const address = await server.run();

let stopping = false;
const stop = (orphaned: boolean): void => {
  if (stopping) return;
  stopping = true;
  const done = (code: number): never => {
    // A parent that stops us removes the directory itself; a dead one cannot.
    if (orphaned && removeWhenOrphaned) rmSync(removeWhenOrphaned, { recursive: true, force: true });
    process.exit(code);
  };
  server.close().then(
    () => done(0),
    () => done(1),
  );
};
process.on("SIGTERM", () => stop(false));
process.on("SIGINT", () => stop(false));
process.on("disconnect", () => stop(true));
send({ port: address.port });
