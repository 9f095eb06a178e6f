#!/usr/bin/env node
/**
 * dvctl: the command-line client of the agent's websocket console. Wiring only: the process's
 * streams and signals go to `runCli`, and its answer becomes the exit code (see `dvctl --help`).
 */
import { runCli } from "./cli.js";

runCli(process.argv.slice(2), {
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
