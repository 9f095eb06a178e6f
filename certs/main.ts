/**
 * Entry point of the `certs` command (`npx tsx certs/main.ts <command>` or `npm run certs -- <command>`).
 * Wiring only: see `cli.ts`.
 */
import { runCli } from "./cli.js";

process.exitCode = await runCli(process.argv.slice(2), {
  env: process.env,
  stdout: (line) => process.stdout.write(line.endsWith("\n") ? line : `${line}\n`),
  stderr: (line) => process.stderr.write(line.endsWith("\n") ? line : `${line}\n`),
});
