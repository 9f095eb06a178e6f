/**
 * Child-process entry of {@link restartableS3} (./s3-restart.ts): runs s3rver on 127.0.0.1 on a
 * given port over an existing data directory, reports `{port}` over the IPC channel and serves
 * until SIGTERM or until the parent goes away (the channel closes). Like ./s3-server-child.ts,
 * but on a fixed port and without creating buckets: it serves what the directory already holds.
 *
 * argv: <data directory> <port>
 */
import { createRequire } from "node:module";

interface S3rverInstance {
  run(): Promise<{ port: number }>;
  close(): Promise<void>;
}
type S3rverCtor = new (options: Record<string, unknown>) => S3rverInstance;

const [directory, portText] = process.argv.slice(2);
const send = process.send?.bind(process);
const port = Number(portText);
if (directory === undefined || send === undefined || !Number.isInteger(port) || port <= 0) {
  console.error("usage: node s3-server-port-child.ts <dir> <port> (started by restartableS3, with IPC)");
  process.exit(2);
}
const S3rver = createRequire(import.meta.url)("s3rver") as S3rverCtor;
const server = new S3rver({
  address: "127.0.0.1",
  port,
  silent: process.env["S3RVER_VERBOSE"] === undefined,
  directory,
});
try {
  const address = await server.run();
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    // Keep-alive connections of FUSE clients can hold close() open: do not wait for them forever.
    setTimeout(() => process.exit(0), 2000).unref();
    server.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  process.on("disconnect", stop);
  send({ port: address.port });
} catch (e) {
  // EADDRINUSE and the like: the parent reads the message and may retry.
  send({ error: (e as NodeJS.ErrnoException).code ?? String(e) }, () => process.exit(1));
}
