/**
 * The first thing `dvctl` runs: a check that this Node is new enough, before anything that needs a
 * newer one is loaded (main.ts imports the program only after it). This file must parse and run on
 * old Node, so it uses nothing newer than ES2017 and builtins every Node since 12 has.
 *
 * On an older Node (a system `node` on the PATH, as `#!/usr/bin/env node` finds it), dvctl runs
 * itself again on the repository's pinned Node (`node_modules/node/bin/node`, the `node` devDependency)
 * when it can find it above its own file; otherwise it refuses with one line saying what it needs.
 */
import { spawn } from "node:child_process";
import { existsSync, realpathSync } from "node:fs";
import { basename, dirname, join } from "node:path";

/** The oldest Node dvctl runs on (package.json `engines`). */
export const MIN_NODE_MAJOR = 22;

/** Set in the environment of the re-run, so that a pinned Node that is old too cannot loop. */
export const REEXEC_ENV = "DVCTL_REEXEC";

/** The major version of `v20.11.1` (or `20.11.1`); 0 when it does not parse. */
export function nodeMajor(version: string): number {
  const m = /^v?(\d+)\./.exec(version);
  return m ? Number(m[1]) : 0;
}

/** `dvctl`, or `kubectl dv` when run as the kubectl plugin `kubectl-dv`. */
export function programNameOf(script: string | undefined): string {
  return /^kubectl-dv(\.[cm]?[jt]s)?$/.test(basename(script || "")) ? "kubectl dv" : "dvctl";
}

/** The one line printed on a Node that is too old. */
export function refusalLine(version: string, name = "dvctl"): string {
  return (
    `${name}: needs Node ${MIN_NODE_MAJOR} or later (this is ${version}); run it as \`npx dvctl\` ` +
    "from the repository (which pins Node 24), or install Node 24\n"
  );
}

/** The repository's pinned Node binary, looked for in `node_modules/node/bin/node` above `fromDir`. */
export function pinnedNode(fromDir: string): string | undefined {
  let dir = fromDir;
  for (;;) {
    const candidate = join(dir, "node_modules", "node", "bin", "node");
    if (existsSync(candidate)) return candidate;
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

function realpathOr(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}

/**
 * True when this Node is new enough and the program should be loaded. Otherwise it either re-runs
 * the same script on the pinned Node (this process then only waits for it and takes its exit
 * status), or writes the refusal line and sets exit code 1; both return false.
 */
export function nodeIsNewEnough(version = process.version): boolean {
  if (nodeMajor(version) >= MIN_NODE_MAJOR) return true;
  const script = process.argv[1];
  // Through the symlinks of `npm link` or /usr/local/bin to the repository's dist/dvctl/main.js.
  const pinned = script && !process.env[REEXEC_ENV] ? pinnedNode(dirname(realpathOr(script))) : undefined;
  if (pinned === undefined || script === undefined) {
    process.stderr.write(refusalLine(version, programNameOf(script)));
    process.exitCode = 1;
    return false;
  }
  const env = Object.assign({}, process.env);
  env[REEXEC_ENV] = "1";
  const child = spawn(pinned, [script].concat(process.argv.slice(2)), { stdio: "inherit", env: env });
  // Ctrl-C reaches the child from the terminal; this process must outlive it, not die first.
  process.on("SIGINT", function () {});
  process.on("SIGTERM", function () {
    child.kill("SIGTERM");
  });
  child.on("error", function (e) {
    process.stderr.write(refusalLine(version, programNameOf(script)).replace(/\n$/, ` (${e.message})\n`));
    process.exit(1);
  });
  child.on("exit", function (code, signal) {
    process.exit(code === null ? 128 + (signal === "SIGINT" ? 2 : signal === "SIGKILL" ? 9 : 15) : code);
  });
  return false;
}
