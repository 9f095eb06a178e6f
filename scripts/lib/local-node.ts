/**
 * One node without Kubernetes, for the demo and the end-to-end tests: an S3 server, runc pods
 * whose spec went through the webhook's patch, the real mounter as root in a mount namespace that
 * behaves like Kubernetes' `Bidirectional` mount of the root, and the real agent in local mode as
 * an unprivileged uid with no capabilities (`setpriv`), in a namespace that receives the host's
 * mounts as `HostToContainer` does.
 *
 * In CSI mode (`volumeMode: "csi"`) the pods get the webhook's CSI volume, the mounter also serves
 * CSI on a socket in a kubelet directory it holds `Bidirectional` too, and a kubelet stand-in
 * (`kubelet.ts`) publishes each pod's volume before its container starts, which binds the target
 * path instead of the pod's directory, and unpublishes it after the container is gone.
 */
import { AGENT_NODE_FLAGS } from "../../agent/config.js";
import { randomBytes } from "node:crypto";
import { renameSync } from "node:fs";
import { chmod, chown, copyFile, mkdir, readFile, unlink, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import type { PodStatus } from "../../agent/reconcile/status.js";
import { CSI_DRIVER_NAME, DEFAULT_SECRET_NAME, podDir } from "../../shared/names.js";
import { signingKeyFromText } from "../../shared/signing.js";
import {
  ensureSharedMount,
  startInMountNamespace,
  unmountTree,
  type NamespacedProcess,
  type SharedMount,
} from "./namespaces.js";
import { KubeletStandIn } from "./kubelet.js";
import { injectedPod, podIdOf, withBuckets, type LocalPodOptions, type Pod } from "./pods.js";
import { RuncPods, type RuncPod } from "./runc.js";
import { S3RVER_CREDENTIALS, S3RVER_REGION, startS3Server, type S3Server } from "./s3-server.js";
import { cleanupStaleWorkDirs, createWorkDir, removeWorkDir } from "./workdir.js";
import { fuseProcesses } from "../soak/observe.js";
import { listClients } from "../../agent/reconcile/mounter-link.js";

export interface LocalNodeOptions {
  /** Work directory prefix under the temp dir. */
  readonly prefix: string;
  readonly buckets: Readonly<Record<string, Readonly<Record<string, string | Uint8Array>>>>;
  /** Extra agent flags. */
  readonly agentArgs?: readonly string[];
  /** Extra mounter flags. */
  readonly mounterArgs?: readonly string[];
  /**
   * The agent's entry: a `.ts` file runs under tsx, a `.js` file (the compiled `dist/agent/main.js`
   * that the image runs) as it is. Default {@link AGENT_MAIN}.
   */
  readonly agentEntry?: string;
  /**
   * How pods get their directory: `hostPath` (default) or `csi` (the kubelet stand-in publishes
   * the CSI volume, see the module comment).
   */
  readonly volumeMode?: "hostPath" | "csi";
}

export interface LocalPod {
  readonly name: string;
  readonly namespace: string;
  readonly file: string;
  readonly id: string;
  /** The pod's directory, `<root>/pods/<id>` (unless a forged hostPath names another). */
  readonly hostDir: string;
  /** CSI mode: the kubelet's publish target, which the container binds. */
  readonly csiTarget?: string;
  pod: Pod;
  readonly container: RuncPod;
}

export const AGENT_MAIN = join(import.meta.dirname, "..", "..", "agent", "main.ts");

/** The mounter's entry beside an agent entry (`agent/main.ts` → `agent/mounter/main.ts`, same for `dist/`). */
export function mounterEntryOf(agentEntry: string): string {
  return join(agentEntry, "..", "mounter", agentEntry.endsWith(".ts") ? "main.ts" : "main.js");
}

/** The agent's uid and gid here and in the manifests: no privilege, no capability. */
export const AGENT_UID = 65532;
export const AGENT_GID = 65532;

/** Runs `argv` as the agent's uid and gid, with no supplementary group and no capability. */
export function unprivileged(argv: readonly string[]): string[] {
  return [
    "setpriv",
    `--reuid=${AGENT_UID}`,
    `--regid=${AGENT_GID}`,
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
    "--no-new-privs",
    "--",
    ...argv,
  ];
}

/** Node running `entry` as the image does; a `.ts` entry under tsx. */
function nodeCommand(entry: string): string[] {
  return [
    process.execPath,
    ...AGENT_NODE_FLAGS,
    ...(entry.endsWith(".ts") ? ["--import", "tsx"] : []),
    entry,
  ];
}

/** Hands a file or directory the agent must read (or, for the pods directory, write) to its uid. */
async function giveToAgent(path: string): Promise<void> {
  await chown(path, AGENT_UID, AGENT_GID);
}
export class LocalNode {
  readonly pods = new Map<string, LocalPod>();
  /** CSI mode: the kubelet stand-in, once the mounter serves CSI. */
  kubelet: KubeletStandIn | undefined;
  agent: NamespacedProcess | undefined;
  mounter: NamespacedProcess | undefined;
  private agentStarts = 0;
  private mounterStarts = 0;

  private constructor(
    readonly work: string,
    readonly root: string,
    readonly podsDir: string,
    readonly secretsDir: string,
    readonly keyFile: string,
    readonly signingKey: Buffer,
    readonly s3: S3Server,
    readonly shared: SharedMount,
    readonly runc: RuncPods,
    private readonly agentArgs: readonly string[],
    private readonly agentEntry: string,
    private readonly mounterArgs: readonly string[],
    /** CSI mode: the kubelet's directory (a shared mount), else undefined. */
    readonly kubeletDir: string | undefined,
    private readonly kubeletShared: SharedMount | undefined,
  ) {}

  /** CSI mode: the mounter's CSI socket, in the kubelet's plugin directory. */
  get csiSocket(): string | undefined {
    return this.kubeletDir !== undefined
      ? join(this.kubeletDir, "plugins", CSI_DRIVER_NAME, "csi.sock")
      : undefined;
  }

  /** The mounter's socket (its default place). */
  get mounterSocket(): string {
    return join(this.root, "run", "mounter.sock");
  }

  static async start(o: LocalNodeOptions): Promise<LocalNode> {
    await cleanupStaleWorkDirs(o.prefix);
    const runc = new RuncPods({ prefix: `${o.prefix}` });
    await runc.cleanupStale();
    const work = await createWorkDir(o.prefix);
    const root = join(work, "root");
    const podsDir = join(work, "pods");
    const secretsDir = join(work, "secrets");
    await mkdir(join(root, "pods"), { recursive: true });
    await mkdir(podsDir);
    await mkdir(secretsDir);
    const keyText = randomBytes(32).toString("base64");
    const keyFile = join(work, "signing-key");
    await writeFile(keyFile, `${keyText}\n`, { mode: 0o600 });
    // The agent runs as its own uid: it must reach the work directory, read the key and the
    // Secrets, and write status files beside the pod files, as a fsGroup gives it in a cluster.
    await chmod(work, 0o755);
    for (const p of [podsDir, secretsDir, keyFile]) await giveToAgent(p);
    let s3: S3Server | undefined;
    let shared: SharedMount | undefined;
    let kubeletShared: SharedMount | undefined;
    const kubeletDir = o.volumeMode === "csi" ? join(work, "kubelet") : undefined;
    try {
      s3 = await startS3Server({ buckets: o.buckets, directory: join(work, "s3") });
      shared = await ensureSharedMount(root);
      if (kubeletDir !== undefined) {
        await mkdir(kubeletDir, { mode: 0o750 });
        kubeletShared = await ensureSharedMount(kubeletDir);
      }
      await runc.prepareRootfs();
    } catch (e) {
      await kubeletShared?.undo().catch(() => undefined);
      await shared?.undo().catch(() => undefined);
      await s3?.stop().catch(() => undefined);
      await removeWorkDir(work).catch(() => undefined);
      throw e;
    }
    return new LocalNode(
      work,
      root,
      podsDir,
      secretsDir,
      keyFile,
      signingKeyFromText(keyText),
      s3,
      shared,
      runc,
      o.agentArgs ?? [],
      o.agentEntry ?? AGENT_MAIN,
      o.mounterArgs ?? [],
      kubeletDir,
      kubeletShared,
    );
  }

  /** Writes the credentials Secret of a namespace, pointing at the local S3 server. */
  async writeSecret(
    namespace: string,
    data: Record<string, string> = this.s3Credentials(),
    name = DEFAULT_SECRET_NAME,
  ): Promise<void> {
    await mkdir(join(this.secretsDir, namespace), { recursive: true });
    await giveToAgent(join(this.secretsDir, namespace));
    const file = join(this.secretsDir, namespace, `${name}.json`);
    await writeFile(file, JSON.stringify({ stringData: data }), { mode: 0o600 });
    await giveToAgent(file);
  }

  s3Credentials(): Record<string, string> {
    return {
      endpoint: this.s3.endpoint,
      region: S3RVER_REGION,
      accessKeyID: S3RVER_CREDENTIALS.accessKeyId,
      secretAccessKey: S3RVER_CREDENTIALS.secretAccessKey,
    };
  }

  /** Admits a pod through the webhook's patch, writes its file, and starts it as a runc container. */
  async addPod(o: LocalPodOptions): Promise<LocalPod> {
    if (this.kubeletDir !== undefined) return this.addCsiPod(o);
    const pod = injectedPod(o, { root: this.root, signingKey: this.signingKey });
    return this.runPod(o.name, pod);
  }

  /**
   * CSI mode, in a real cluster's order: the pod exists (its file is written), the kubelet
   * publishes its volume (starting the mounter first when none runs), then starts the container
   * with the target bound as a HostToContainer volumeMount.
   */
  private async addCsiPod(o: LocalPodOptions): Promise<LocalPod> {
    const pod = injectedPod(o, { root: this.root, volumeMode: "csi" });
    const id = podIdOf(pod);
    const file = `${o.name}.json`;
    const draft = {
      name: o.name,
      namespace: pod.metadata.namespace,
      file,
      id,
      hostDir: podDir(this.root, id),
      pod,
    };
    await this.writePodFile(draft);
    try {
      const kubelet = await this.csiKubelet();
      const csiTarget = await kubelet.publish({ uid: id, namespace: pod.metadata.namespace, name: o.name });
      const container = await this.runc.startPod({
        id: o.name,
        hostDir: csiTarget,
        mountPath: "/datasets",
        readOnly: true,
      });
      const local: LocalPod = { ...draft, csiTarget, container };
      this.pods.set(o.name, local);
      return local;
    } catch (e) {
      await unlink(join(this.podsDir, file)).catch(() => undefined);
      throw e;
    }
  }

  /** The kubelet stand-in, registered with the mounter's CSI services (started when none runs). */
  async csiKubelet(): Promise<KubeletStandIn> {
    if (this.kubeletDir === undefined || this.csiSocket === undefined) throw new Error("not in CSI mode");
    if (this.mounter === undefined || this.mounter.exitStatus() !== undefined) await this.startMounter();
    if (this.kubelet === undefined) {
      this.kubelet = new KubeletStandIn(this.csiSocket, this.kubeletDir);
      await this.kubelet.register();
    }
    return this.kubelet;
  }

  /** Starts a pod from a given spec (for forged or copied pods), as the kubelet would. */
  async runPod(name: string, pod: Pod): Promise<LocalPod> {
    const id = podIdOf(pod);
    const hostPath =
      pod.spec.volumes.find((v) => v.name === "dynamic-volumes")?.hostPath?.path ?? podDir(this.root, id);
    // hostPath type DirectoryOrCreate: the kubelet creates it before the container starts.
    await mkdir(hostPath, { recursive: true });
    const container = await this.runc.startPod({
      id: name,
      hostDir: hostPath,
      mountPath: "/datasets",
      readOnly: true,
    });
    const file = `${name}.json`;
    const local: LocalPod = {
      name,
      namespace: pod.metadata.namespace,
      file,
      id,
      hostDir: hostPath,
      pod,
      container,
    };
    this.pods.set(name, local);
    await this.writePodFile(local);
    return local;
  }

  /**
   * Like {@link addPod}, in a real cluster's order: the pod exists first (its file is written, as
   * the API server stores it, so the agent may see it and mount before the container runs), then
   * the kubelet creates the hostPath and starts the container. {@link addPod} starts the container
   * first, which leaves a window where the hostPath exists for a pod the agent does not know.
   */
  async addPodApiFirst(o: LocalPodOptions): Promise<LocalPod> {
    const pod = injectedPod(o, { root: this.root, signingKey: this.signingKey });
    const id = podIdOf(pod);
    const hostPath = podDir(this.root, id);
    const file = `${o.name}.json`;
    const draft = { name: o.name, namespace: pod.metadata.namespace, file, id, hostDir: hostPath, pod };
    await this.writePodFile(draft);
    try {
      await mkdir(hostPath, { recursive: true });
      const container = await this.runc.startPod({
        id: o.name,
        hostDir: hostPath,
        mountPath: "/datasets",
        readOnly: true,
      });
      const local: LocalPod = { ...draft, container };
      this.pods.set(o.name, local);
      return local;
    } catch (e) {
      await unlink(join(this.podsDir, file)).catch(() => undefined);
      throw e;
    }
  }

  /**
   * Writes the pod file to a temporary name and renames it into place. Returns `performance.now()`
   * right before the rename, the moment the change happens: the rename is synchronous, so that no
   * round trip through the thread pool sits between that moment and the agent seeing the file.
   */
  private async writePodFile(p: Pick<LocalPod, "file" | "pod">): Promise<number> {
    const tmp = join(this.podsDir, `.${p.file}.tmp`);
    await writeFile(tmp, `${JSON.stringify(p.pod, null, 2)}\n`);
    const at = performance.now();
    renameSync(tmp, join(this.podsDir, p.file));
    return at;
  }

  /**
   * Changes the pod's `dynamic-volumes/buckets` annotation, as `kubectl annotate` would. Resolves
   * with `performance.now()` at the moment the new pod file took the old one's place.
   */
  async setBuckets(name: string, buckets: string): Promise<number> {
    const p = this.pod(name);
    p.pod = withBuckets(p.pod, buckets);
    return await this.writePodFile(p);
  }

  /**
   * Deletes the pod: its file goes (the agent sees a delete), then its container. In CSI mode in
   * the kubelet's order instead: the container stops, the volume is unpublished, then the pod
   * object goes.
   */
  async deletePod(name: string): Promise<void> {
    const p = this.pod(name);
    if (p.csiTarget !== undefined) {
      await this.runc.delete(p.container);
      await (await this.csiKubelet()).unpublish({ uid: p.id, namespace: p.namespace, name: p.name });
      await unlink(join(this.podsDir, p.file)).catch(() => undefined);
      this.pods.delete(name);
      return;
    }
    await unlink(join(this.podsDir, p.file)).catch(() => undefined);
    await this.runc.delete(p.container);
    this.pods.delete(name);
  }

  pod(name: string): LocalPod {
    const p = this.pods.get(name);
    if (p === undefined) throw new Error(`no pod ${name}`);
    return p;
  }

  async status(name: string): Promise<PodStatus> {
    const text = await readFile(join(this.podsDir, `${name}.status.json`), "utf8").catch(() => "{}");
    return JSON.parse(text) as PodStatus;
  }

  async events(): Promise<Array<{ name: string; reason: string; message: string; type: string }>> {
    const text = await readFile(join(this.podsDir, "events.jsonl"), "utf8").catch(() => "");
    return text
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l) as { name: string; reason: string; message: string; type: string });
  }

  /** Runs a command inside the pod's running container. */
  exec(name: string, argv: readonly string[], input?: string): ReturnType<RuncPods["exec"]> {
    return this.runc.exec(this.pod(name).container, argv, input !== undefined ? { input } : {});
  }

  /** Starts the mounter as root in its own Bidirectional mount namespace. */
  async startMounter(extra: readonly string[] = []): Promise<NamespacedProcess> {
    if (this.mounter !== undefined && this.mounter.exitStatus() === undefined)
      throw new Error("the mounter is running");
    this.mounterStarts++;
    const entry = mounterEntryOf(this.agentEntry);
    this.mounter = await startInMountNamespace({
      argv: [
        ...nodeCommand(entry),
        "--root",
        this.root,
        "--agent-uid",
        String(AGENT_UID),
        "--agent-gid",
        String(AGENT_GID),
        ...(this.csiSocket !== undefined ? ["--csi-socket", this.csiSocket, "--node-id", "local"] : []),
        ...this.mounterArgs,
        ...extra,
      ],
      logFile: join(this.work, `mounter-${this.mounterStarts}.log`),
      bidirectional: this.kubeletDir !== undefined ? [this.root, this.kubeletDir] : [this.root],
    });
    await waitForLine(this.mounter, '"mounter started"', "mounter");
    return this.mounter;
  }

  /**
   * Starts the agent in local mode as the agent's uid with no capabilities, in a namespace that
   * receives the host's mounts; starts the mounter first when none runs.
   */
  async startAgent(
    extra: readonly string[] = [],
    /** Another build of the agent (an upgrade); default the node's own entry. */
    entry: string = this.agentEntry,
  ): Promise<NamespacedProcess> {
    if (this.agent !== undefined && this.agent.exitStatus() === undefined)
      throw new Error("the agent is running");
    if (this.mounter === undefined || this.mounter.exitStatus() !== undefined) await this.startMounter();
    this.agentStarts++;
    const args = [...this.agentArgs, ...extra];
    // Files handed to the agent by flag (TLS certificate and key, token file) are copied where its
    // uid can read them, as a Secret volume with fsGroup would give them to it.
    const files = join(this.work, "agent-files");
    await mkdir(files, { recursive: true, mode: 0o755 });
    for (const [i, a] of args.entries()) {
      const from = args[i + 1];
      if (!["--tls-cert-file", "--tls-key-file", "--token-auth-file"].includes(a) || from === undefined)
        continue;
      const to = join(files, `${a.slice(2)}-${basename(from)}`);
      await copyFile(from, to);
      await giveToAgent(to);
      args[i + 1] = to;
    }
    this.agent = await startInMountNamespace({
      argv: unprivileged([
        ...nodeCommand(entry),
        "--root",
        this.root,
        "--pods-dir",
        this.podsDir,
        "--secrets-dir",
        this.secretsDir,
        "--signing-key-file",
        this.keyFile,
        ...args,
      ]),
      env: { ...process.env, HOME: "/tmp" },
      logFile: join(this.work, `agent-${this.agentStarts}.log`),
      propagation: "slave",
    });
    await waitForLine(this.agent, '"agent started"', "agent");
    return this.agent;
  }

  /** The FUSE clients the mounter runs now: mount point → pid. */
  async clients(): Promise<Map<string, number>> {
    return listClients(this.mounterSocket);
  }

  /**
   * Kills the mounter with SIGKILL together with every FUSE client of this node, as the end of its
   * container would: the mounts stay behind, stale.
   */
  async killMounter(): Promise<void> {
    const m = this.mounter;
    if (m === undefined || m.exitStatus() !== undefined) return;
    m.kill("SIGKILL");
    await m.exited;
    for (const p of await fuseProcesses(this.root)) {
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {
        /* gone already */
      }
    }
  }

  async mounterLog(): Promise<string> {
    return (await this.mounter?.log()) ?? "";
  }

  async agentLog(): Promise<string> {
    return (await this.agent?.log()) ?? "";
  }

  /** Stops everything: agent, mounter, containers, mounts, S3. */
  async stop(): Promise<void> {
    const errors: unknown[] = [];
    const step = async (f: () => Promise<unknown>): Promise<void> => {
      try {
        await f();
      } catch (e) {
        errors.push(e);
      }
    };
    this.kubelet?.close();
    await step(() => this.agent?.stop(5000) ?? Promise.resolve());
    await step(() => this.mounter?.stop(5000) ?? Promise.resolve());
    await step(() => this.runc.deleteAll());
    // The kubelet's targets first: they hold copies of the pods' mounts.
    if (this.kubeletDir !== undefined) await step(() => unmountTree(this.kubeletDir!));
    await step(() => unmountTree(this.root));
    await step(() => this.kubeletShared?.undo() ?? Promise.resolve());
    await step(() => this.shared.undo());
    await step(() => this.s3.stop());
    // removeWorkDir refuses while anything is still mounted: rm -r through a FUSE mount deletes objects.
    await step(() => removeWorkDir(this.work));
    if (errors.length > 0) throw new AggregateError(errors, "cleanup was incomplete");
  }
}

/** Waits until `p` logs `marker`; rejects with its log when it exits first or takes 30 s. */
async function waitForLine(p: NamespacedProcess, marker: string, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await p.log()).includes(marker)) {
    if (p.exitStatus() !== undefined) throw new Error(`the ${what} exited: ${await p.log()}`);
    if (Date.now() > deadline) throw new Error(`the ${what} did not start: ${await p.log()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
