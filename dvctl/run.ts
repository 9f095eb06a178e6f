/**
 * dvctl: the command-line client of the agent's websocket console. Wiring only: the process's
 * streams and signals go to `runCli`, and its answer becomes the exit code (see `dvctl --help`).
 * Loaded by main.ts once the Node version is known to be new enough.
 */
import { runCli } from "./cli.js";
import { programNameOf } from "./node-guard.js";

// `dvctl ls | head`: the reader went away. Nothing more can be shown, so exit 0 at once, quietly,
// as a pipeline whose reader stopped early expects (no EPIPE stack trace, no SIGPIPE status).
for (const stream of [process.stdout, process.stderr])
  stream.on("error", (e: NodeJS.ErrnoException) => {
    if (e.code === "EPIPE") process.exit(0);
    throw e;
  });

runCli(process.argv.slice(2), {
  programName: programNameOf(process.argv[1]),
  stdin: process.stdin,
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  onInterrupt: (fn) => {
    process.on("SIGINT", fn);
    process.on("SIGTERM", fn);
    return () => {
      process.off("SIGINT", fn);
      process.off("SIGTERM", fn);
    };
  },
}).then(
  (code) => {
    // Lingering handles (a kubeconfig's keep-alive agent) must not hold the exit back.
    process.exitCode = code;
    setTimeout(() => process.exit(code), 200).unref();
  },
  (e: unknown) => {
    process.stderr.write(`dvctl: internal error: ${String((e as Error)?.stack ?? e)}\n`);
    process.exit(1);
  },
);
