/**
 * Pods without Kubernetes: runc containers with a busybox rootfs whose bundle carries the volume
 * mount containerd's CRI plugin generates for a volumeMount with `mountPropagation:
 * HostToContainer` (and `readOnly`). Root only. Every command runs through `agent/exec` (argv
 * arrays, never a shell); runc's own output goes to a file in the bundle, because `runc run -d`
 * hands its stdio to the container, which would hold a pipe open forever.
 */
import { randomBytes } from "node:crypto";
import {
  access,
  chmod,
  copyFile,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  realpath,
  rename,
  rm,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import { run, start, type RunResult } from "../../agent/mount/exec.js";
import { mountContaining, propagationOf } from "../../agent/mount/mountinfo.js";
import { readMountinfo } from "./namespaces.js";
import { buildPodSpec, OWNER_ANNOTATION, type OciSpec } from "./oci-spec.js";
import { ownerAlive, ownerToken } from "./workdir.js";

export { buildPodSpec, OWNER_ANNOTATION, type OciSpec } from "./oci-spec.js";

export const DEFAULT_CACHE_DIR = "/var/tmp/dynamic-volumes";

export interface RuncPodsOptions {
  /** Prefix of every container id this instance creates. Default `dv-`. */
  readonly prefix?: string;
  /** Holds `rootfs/` (built once, shared read-only by all pods) and `bundles/<id>/`. Default {@link DEFAULT_CACHE_DIR}. */
  readonly cacheDir?: string;
  /** Static busybox to copy into the rootfs. Default `/bin/busybox` (Debian `busybox-static`). */
  readonly busybox?: string;
  /** Per runc command. Default 30 s. */
  readonly timeoutMs?: number;
}

export interface StartPodOptions {
  /** A name for the pod, unique within this instance; the container id is `<prefix><run>-<id>`. */
  readonly id: string;
  /** The host directory the volume binds, e.g. `<root>/pods/<id>`. Must exist. */
  readonly hostDir: string;
  /** Where the container sees it, e.g. `/datasets`. */
  readonly mountPath: string;
  /** The volumeMount's `readOnly`. Default true, as the webhook injects it. */
  readonly readOnly?: boolean;
}

/** A running container. */
export interface RuncPod {
  /** The runc container id. */
  readonly id: string;
  /** The name given to {@link RuncPods.startPod}. */
  readonly name: string;
  readonly bundle: string;
  /** The container's init process on the host; `/proc/<pid>/root/<mountPath>` is its view. */
  readonly pid: number;
  readonly hostDir: string;
  readonly mountPath: string;
  readonly readOnly: boolean;
}

export interface ExecOptions {
  /** Written to the process's stdin, which is then closed. Default: stdin is /dev/null. */
  readonly input?: string | Uint8Array;
  /** Default 10 s; then the `runc exec` process group is killed. */
  readonly timeoutMs?: number;
}

export interface ExecResult {
  /** Exit code, or null when killed by a signal (or the timeout). */
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
  readonly durationMs: number;
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

function failure(what: string, r: RunResult): Error {
  const why = r.timedOut ? "timed out" : `exit ${r.code ?? r.signal}`;
  return new Error(`${what}: ${why}: ${(r.stderr || r.stdout).trim()}`);
}

/** Starts and tracks runc pods; {@link RuncPods.deleteAll} removes every one it started. */
export class RuncPods {
  readonly prefix: string;
  readonly cacheDir: string;
  /** Random per instance, so parallel runs and leftovers never collide. */
  readonly runId = randomBytes(4).toString("hex");
  private readonly busybox: string;
  private readonly timeoutMs: number;
  private readonly pods = new Map<string, RuncPod>();
  private rootfs: Promise<string> | undefined;

  constructor(opts: RuncPodsOptions = {}) {
    this.prefix = opts.prefix ?? "dv-";
    this.cacheDir = opts.cacheDir ?? DEFAULT_CACHE_DIR;
    this.busybox = opts.busybox ?? "/bin/busybox";
    this.timeoutMs = opts.timeoutMs ?? 30_000;
  }

  /** Builds `<cacheDir>/rootfs` once (atomically, so parallel runs can race); returns its path. */
  prepareRootfs(): Promise<string> {
    this.rootfs ??= this.buildRootfs();
    return this.rootfs;
  }

  private async buildRootfs(): Promise<string> {
    const target = join(this.cacheDir, "rootfs");
    if (await exists(join(target, "bin", "sh"))) return target;
    await access(this.busybox).catch((e: unknown) => {
      throw new Error(`${this.busybox} not found: apt-get install busybox-static`, { cause: e });
    });
    await mkdir(this.cacheDir, { recursive: true });
    const tmp = await mkdtemp(join(this.cacheDir, "rootfs.tmp-"));
    try {
      await chmod(tmp, 0o755); // mkdtemp's 0700 would lock out a non-root container user
      for (const d of ["bin", "proc", "sys", "dev", "tmp", "etc", "run"]) await mkdir(join(tmp, d));
      await copyFile(this.busybox, join(tmp, "bin", "busybox"));
      await chmod(join(tmp, "bin", "busybox"), 0o755);
      // In a chroot, `--install -s` links every applet to /bin/busybox as the container will see it.
      const install = await run("chroot", [tmp, "/bin/busybox", "--install", "-s", "/bin"], {
        timeoutMs: this.timeoutMs,
      });
      if (install.code !== 0) throw failure("busybox --install", install);
      await rename(tmp, target).catch((e: unknown) => {
        // Another run won the race: use its rootfs.
        if (!["ENOTEMPTY", "EEXIST"].includes((e as NodeJS.ErrnoException).code ?? "")) throw e;
      });
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
    return target;
  }

  /** The containers this instance has started and not deleted. */
  list(): RuncPod[] {
    return [...this.pods.values()];
  }

  /**
   * Starts a pod whose `hostDir` is bound at `mountPath` like a HostToContainer volumeMount (see
   * {@link buildPodSpec}), and resolves once it runs. Like containerd, refuses a `hostDir` whose
   * mount is neither shared nor slave: nothing would ever propagate into the pod.
   */
  async startPod(opts: StartPodOptions): Promise<RuncPod> {
    const id = `${this.prefix}${this.runId}-${opts.id}`;
    if (this.pods.has(id)) throw new Error(`pod ${opts.id} already started (${id})`);
    const readOnly = opts.readOnly ?? true;
    // Canonical, because mountinfo is: a symlinked path would match the wrong mount.
    const hostDir = await realpath(opts.hostDir);
    const host = mountContaining(await readMountinfo(), hostDir);
    if (host === undefined || propagationOf(host) === "private" || propagationOf(host) === "unbindable") {
      // containerd: 'path %q is mounted on %q but it is not a shared or slave mount'
      throw new Error(
        `${opts.hostDir} is mounted on ${host?.mountPoint ?? "?"} but it is not a shared or slave mount: ` +
          "call ensureSharedMount() on its root first",
      );
    }
    const rootfs = await this.prepareRootfs();
    const bundle = join(this.cacheDir, "bundles", id);
    await rm(bundle, { recursive: true, force: true });
    await mkdir(bundle, { recursive: true });
    const spec = await run("runc", ["spec", "--bundle", bundle], { timeoutMs: this.timeoutMs });
    if (spec.code !== 0) throw failure("runc spec", spec);
    const configPath = join(bundle, "config.json");
    const base = JSON.parse(await readFile(configPath, "utf8")) as OciSpec;
    const config = buildPodSpec(base, {
      hostname: opts.id,
      rootfs,
      hostDir,
      mountPath: opts.mountPath,
      readOnly,
      owner: (await ownerToken()) ?? "",
    });
    await writeFile(configPath, JSON.stringify(config, null, 2));
    const logFile = join(bundle, "runc.log");
    const runc = await start("runc", ["run", "--detach", "--bundle", bundle, id], {
      env: process.env,
      logFile,
    });
    const timer = setTimeout(() => runc.kill("SIGKILL"), this.timeoutMs);
    const status = await runc.exited.finally(() => clearTimeout(timer));
    if (status.code !== 0) {
      const log = await readFile(logFile, "utf8").catch(() => "");
      await this.forceDelete(id);
      await rm(bundle, { recursive: true, force: true });
      throw new Error(`runc run ${id}: exit ${status.code ?? status.signal}: ${log.trim()}`);
    }
    const state = await this.state(id);
    if (state?.status !== "running")
      throw new Error(`runc run ${id}: container is ${state?.status ?? "gone"}`);
    const pod: RuncPod = {
      id,
      name: opts.id,
      bundle,
      pid: state.pid,
      hostDir,
      mountPath: opts.mountPath,
      readOnly,
    };
    this.pods.set(id, pod);
    return pod;
  }

  /** `runc exec <id> argv…` (no TTY). Never rejects because of the exit status. */
  async exec(pod: RuncPod | string, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const id = typeof pod === "string" ? pod : pod.id;
    const r = await run("runc", ["exec", id, ...argv], {
      timeoutMs: opts.timeoutMs ?? 10_000,
      killGraceMs: 500,
      ...(opts.input !== undefined ? { input: opts.input } : {}),
    });
    return {
      code: r.code,
      stdout: r.stdout,
      stderr: r.stderr,
      timedOut: r.timedOut,
      durationMs: r.durationMs,
    };
  }

  /** `runc state`: the init pid and status, or undefined when runc does not know the container. */
  async state(pod: RuncPod | string): Promise<{ pid: number; status: string } | undefined> {
    const id = typeof pod === "string" ? pod : pod.id;
    const r = await run("runc", ["state", id], { timeoutMs: this.timeoutMs });
    if (r.code !== 0) return undefined;
    const s = JSON.parse(r.stdout) as { pid: number; status: string };
    return { pid: s.pid, status: s.status };
  }

  /** `runc delete -f` and removes the bundle. A container runc does not know is not an error. */
  async delete(pod: RuncPod | string): Promise<void> {
    const id = typeof pod === "string" ? pod : pod.id;
    await this.forceDelete(id);
    await rm(join(this.cacheDir, "bundles", id), { recursive: true, force: true });
    this.pods.delete(id);
  }

  /** Deletes every pod this instance started; collects errors and throws them together. */
  async deleteAll(): Promise<void> {
    const results = await Promise.allSettled([...this.pods.keys()].map((id) => this.delete(id)));
    const errors = results.flatMap((r) => (r.status === "rejected" ? [r.reason as Error] : []));
    if (errors.length > 0) throw new AggregateError(errors, `runc delete failed for ${errors.length} pod(s)`);
  }

  /**
   * Deletes containers (and bundles) whose id starts with `prefix` and whose creating process is
   * gone: leftovers of a crashed run. Pods of a run still alive are left alone. Returns the ids.
   */
  async cleanupStale(prefix = this.prefix): Promise<string[]> {
    const r = await run("runc", ["list", "--format", "json"], { timeoutMs: this.timeoutMs });
    if (r.code !== 0) throw failure("runc list", r);
    type Listed = { id: string; annotations?: Record<string, string> };
    const listed = (JSON.parse(r.stdout || "null") as Listed[] | null) ?? [];
    const removed: string[] = [];
    for (const c of listed) {
      if (!c.id.startsWith(prefix) || (await ownerAlive(c.annotations?.[OWNER_ANNOTATION]))) continue;
      await this.delete(c.id);
      removed.push(c.id);
    }
    // Bundles whose container never started or is already gone.
    const bundles = join(this.cacheDir, "bundles");
    for (const id of await readdir(bundles).catch(() => [] as string[])) {
      if (!id.startsWith(prefix) || listed.some((c) => c.id === id)) continue;
      // No config.json yet: a live run may be between mkdir and writing it; leave it.
      const config = await readFile(join(bundles, id, "config.json"), "utf8").catch(() => undefined);
      if (config === undefined) continue;
      const owner = (JSON.parse(config) as OciSpec).annotations?.[OWNER_ANNOTATION];
      if (!(await ownerAlive(owner))) await rm(join(bundles, id), { recursive: true, force: true });
    }
    return removed;
  }

  private async forceDelete(id: string): Promise<void> {
    const r = await run("runc", ["delete", "--force", id], { timeoutMs: this.timeoutMs });
    if (r.code !== 0 && !/does not exist|not exist/i.test(r.stderr)) throw failure(`runc delete ${id}`, r);
  }
}
