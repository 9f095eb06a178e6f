/**
 * Host set-up the agent does at start-up, as the kubelet does for its own directory: the root must
 * be a mount point with shared propagation, so that the FUSE mounts made below it propagate to the
 * containers' `HostToContainer` (rslave) views. Also the one way the agent makes a directory that
 * is, or may become, a mount point.
 */
import { mkdirSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { AppError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { agentDir, podsDir } from "../shared/names.js";
import { run } from "./exec.js";
import { findMount, parseMountinfo, propagationOf } from "./mountinfo.js";

async function mount(argv: string[]): Promise<void> {
  const r = await run("mount", argv, { timeoutMs: 10_000 });
  if (r.code !== 0)
    throw new AppError(
      "Unavailable",
      `mount ${argv.join(" ")} failed: ${r.stderr.trim()}; the agent needs CAP_SYS_ADMIN (a privileged container)`,
    );
}

/** Creates the root and makes it a shared mount point. Returns what it had to do. */
export async function ensureSharedRoot(root: string, log: Logger): Promise<string[]> {
  const done: string[] = [];
  await mkdir(podsDir(root), { recursive: true, mode: 0o755 });
  await mkdir(agentDir(root), { recursive: true, mode: 0o700 });
  let infos = parseMountinfo(await readFile("/proc/self/mountinfo", "utf8"));
  if (findMount(infos, root) === undefined) {
    await mount(["--bind", root, root]);
    done.push("bind");
    infos = parseMountinfo(await readFile("/proc/self/mountinfo", "utf8"));
  }
  const rec = findMount(infos, root);
  if (rec === undefined || propagationOf(rec) !== "shared") {
    await mount(["--make-rshared", root]);
    done.push("make-rshared");
  }
  if (done.length > 0) log.info({ root, done }, "root made a shared mount point");
  return done;
}

/**
 * Makes directory `path` when its parent exists, and says whether `path` is there now (made, or
 * found: anything in the way counts). A plain mkdir never enters a mount on its last component: it
 * stops at EEXIST, so even a stale FUSE mount there cannot block it, and it can be synchronous. A
 * missing parent gives false; the recursive mkdir that makes parents also stats what exists, which
 * could wait on a FUSE client, so the caller decides how to run that one.
 */
export function makeDirAt(path: string, mode: number): boolean {
  try {
    mkdirSync(path, { mode });
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EEXIST") return true;
    if (code === "ENOENT") return false;
    throw e;
  }
}
