/**
 * Entry point of `npm run inject` (see inject-cli.ts). Wiring only.
 */
import { runInjectCli } from "./inject-cli.js";

process.exitCode = runInjectCli(process.argv.slice(2), {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
});
