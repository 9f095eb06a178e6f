/**
 * Local mode (docs/design.md "Local mode"): every `*.json` / `*.yaml` file in the pods directory is one
 * Pod scheduled on this node. Editing a file is an update, removing it a delete; files replaced by
 * rename are picked up. Status goes to `<file>.status.json` beside the pod (the file name without
 * its extension), Events are appended to `events.jsonl`, Secrets are read from
 * `<secrets-dir>/<namespace>/<name>.json`.
 */
import { createHash } from "node:crypto";
import { appendFile, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { existsSync, readdirSync, readFileSync, statSync, watch, type FSWatcher } from "node:fs";
import { basename, extname, join } from "node:path";
import { dump as dumpYaml, load as loadYaml } from "js-yaml";
import { AppError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { ANNOTATIONS, SECRET_KEYS } from "../../shared/names.js";
import type { PodObject } from "../reconcile/pod.js";
import type { PodEvent, PodEventRecord, PodRef, PodSource } from "./pod-source.js";

export interface LocalPodSourceOptions {
  readonly podsDir: string;
  readonly secretsDir: string;
  readonly log: Logger;
  /** Rescan interval in ms, a fallback for missed change notifications. Default 1000. */
  readonly rescanMs?: number;
}

interface FileState {
  readonly hash: string;
  /** Inode, size, mtime and ctime when last read. */
  readonly version: string;
  readonly pod: PodObject;
}

const POD_FILE = /^[^.].*\.(json|ya?ml)$/;
const STATUS_SUFFIX = ".status.json";
const DNS_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

export function isPodFile(name: string): boolean {
  return POD_FILE.test(name) && !name.endsWith(STATUS_SUFFIX);
}

/** `trainer.yaml` → `trainer.status.json`. */
export function statusFileName(podFile: string): string {
  return `${basename(podFile, extname(podFile))}${STATUS_SUFFIX}`;
}

function parsePodText(file: string, text: string): PodObject {
  const obj: unknown = file.endsWith(".json") ? JSON.parse(text) : loadYaml(text);
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) throw new Error("not a Pod object");
  const pod = obj as PodObject & { kind?: unknown };
  if (pod.kind !== undefined && pod.kind !== "Pod")
    throw new Error(`kind is ${JSON.stringify(pod.kind)}, not Pod`);
  return pod;
}

export class LocalPodSource implements PodSource {
  private readonly files = new Map<string, FileState>();
  private readonly firstSeen = new Map<string, string>();
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private onEvent: ((e: PodEvent) => void) | undefined;
  private scanning: Promise<void> | undefined;
  /** A scan of the whole directory is due. */
  private wantAll = false;
  /** Files named by change notifications, to be read before anything else is looked at. */
  private readonly wantFiles = new Set<string>();
  private readonly editLocks = new Map<string, Promise<unknown>>();
  /**
   * Files that do not parse, by name: the version and hash of the text last reported. A broken file
   * is logged once, and again only when it changes, not on every scan.
   */
  private readonly broken = new Map<string, { version: string; hash: string }>();
  private readonly log: Logger;

  constructor(private readonly opts: LocalPodSourceOptions) {
    this.log = opts.log.child({ component: "local-pod-source" });
  }

  async start(onEvent: (e: PodEvent) => void): Promise<void> {
    this.onEvent = onEvent;
    await this.scan();
    try {
      // Status files, events.jsonl and the temporary files of atomic writes change all the time,
      // mostly by this agent's own hand; only pod files are worth a scan.
      this.watcher = watch(this.opts.podsDir, (_event, file) => {
        if (file === null) this.requestScan();
        else if (isPodFile(file)) this.requestScan(file);
      });
      this.watcher.on("error", (err) =>
        this.log.warn({ err: err.message }, "watch failed; relying on rescans"),
      );
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, "cannot watch the pods directory; relying on rescans");
    }
    this.timer = setInterval(() => this.requestScan(), this.opts.rescanMs ?? 1000);
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    clearInterval(this.timer);
    this.onEvent = undefined;
    await this.scanning;
  }

  /** Asks for a scan of `file` alone, or of the whole directory. */
  private requestScan(file?: string): void {
    if (file === undefined) this.wantAll = true;
    else this.wantFiles.add(file);
    this.kick();
  }

  private kick(): void {
    if (this.scanning !== undefined || (!this.wantAll && this.wantFiles.size === 0)) return;
    this.scanning = this.drain()
      .catch((e: unknown) => this.log.error({ err: (e as Error).message }, "scan failed"))
      .finally(() => {
        this.scanning = undefined;
        this.kick();
      });
  }

  /**
   * A change notification names its file, and only that file is read: a whole scan stats every
   * pod file on the node, and it stood between a pod file's change and the start of its mount.
   * The periodic scan of the whole directory still catches whatever a notification missed.
   */
  private async drain(): Promise<void> {
    while (this.wantAll || this.wantFiles.size > 0) {
      if (this.wantAll) {
        this.wantAll = false;
        this.wantFiles.clear();
        await this.scan();
        continue;
      }
      const names = [...this.wantFiles];
      this.wantFiles.clear();
      for (const name of names) if (!this.readPodFile(name)) this.forgetIfGone(name);
    }
  }

  /**
   * Reads the directory and emits upserts for new or changed files and deletes for removed ones.
   * The directory and its files are read synchronously: they are small local files, and each
   * asynchronous call is a round trip through the thread pool that costs more than the read (six
   * of them stood between a pod file's change and the start of its mount).
   */
  private async scan(): Promise<void> {
    let names: string[];
    try {
      names = readdirSync(this.opts.podsDir).filter(isPodFile);
    } catch (e) {
      this.log.warn({ dir: this.opts.podsDir, err: (e as Error).message }, "cannot read the pods directory");
      return;
    }
    const present = new Set(names);
    for (const name of names) if (!this.readPodFile(name)) present.delete(name);
    for (const name of [...this.files.keys()]) if (!present.has(name)) this.forgetIfGone(name);
  }

  /**
   * Reads one pod file and emits an upsert when it is new or changed. False when it cannot be
   * stat'ed or read (gone, or going); a file that reads but does not parse keeps its last good state.
   */
  private readPodFile(name: string): boolean {
    const path = join(this.opts.podsDir, name);
    let text: string;
    let version: string;
    try {
      // A file whose inode, size and times are unchanged is not read again: a scan runs every
      // second, and reading and hashing hundreds of pod files each time is most of an idle
      // agent's work.
      const st = statSync(path);
      version = `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
      const known = this.files.get(name);
      if (known?.version === version) return true;
      // A broken file that has not changed since it was reported: nothing new to read or say.
      if (this.broken.get(name)?.version === version) return true;
      text = readFileSync(path, "utf8");
    } catch {
      this.broken.delete(name);
      return false;
    }
    const hash = createHash("sha256").update(text).digest("hex");
    const known = this.files.get(name);
    if (known?.hash === hash) {
      this.broken.delete(name);
      this.files.set(name, { ...known, version });
      return true;
    }
    let pod: PodObject;
    try {
      pod = this.normalize(name, parsePodText(name, text));
    } catch (e) {
      // A half-written or broken file must not read as a deleted pod: keep the last good state.
      // Logged once per content: the periodic scan would otherwise repeat it every second.
      const seen = this.broken.get(name);
      this.broken.set(name, { version, hash });
      if (seen?.hash !== hash)
        this.log.warn(
          { file: join(this.opts.podsDir, name), err: (e as Error).message },
          known !== undefined
            ? "pod file unreadable; keeping its last good state until it is fixed"
            : "pod file unreadable; the pod is ignored until the file is fixed",
        );
      return true;
    }
    this.broken.delete(name);
    this.files.set(name, { hash, version, pod });
    this.onEvent?.({ type: "upsert", pod });
    return true;
  }

  /** Emits a delete for a known pod whose file is really gone (an unreadable one is kept). */
  private forgetIfGone(name: string): void {
    const state = this.files.get(name);
    if (!existsSync(join(this.opts.podsDir, name))) this.broken.delete(name);
    if (state === undefined || existsSync(join(this.opts.podsDir, name))) return;
    this.files.delete(name);
    this.onEvent?.({ type: "delete", pod: state.pod });
  }

  /** Fills in what the API server would: namespace, name from the file, uid and creation time. */
  private normalize(file: string, pod: PodObject): PodObject {
    const md = { ...(pod.metadata ?? {}) };
    md.namespace ||= "default";
    md.name ||= basename(file, extname(file));
    const key = `${md.namespace}/${md.name}`;
    if (!this.firstSeen.has(key)) this.firstSeen.set(key, new Date().toISOString());
    md.creationTimestamp ??= this.firstSeen.get(key)!;
    md.uid ||= `local-${createHash("sha256").update(`${file}\n${key}`).digest("hex").slice(0, 32)}`;
    return { ...pod, metadata: md };
  }

  private fileOf(namespace: string, name: string): string | undefined {
    for (const [file, s] of this.files)
      if (s.pod.metadata?.namespace === namespace && s.pod.metadata?.name === name) return file;
    return undefined;
  }

  getPod(namespace: string, name: string): PodObject | undefined {
    const f = this.fileOf(namespace, name);
    return f === undefined ? undefined : this.files.get(f)?.pod;
  }

  /**
   * Why `namespace/name` is not here, in local-mode terms: no pod file holds it (a pod file that
   * does not parse is named, since it may be the one meant). For the console's NotFound.
   */
  missingPod(namespace: string, name: string): AppError {
    const broken = [...this.broken.keys()].sort();
    const hint =
      broken.length > 0
        ? `; ${broken.length === 1 ? "this file does" : "these files do"} not parse: ${broken.map((f) => join(this.opts.podsDir, f)).join(", ")}`
        : `; write the pod to a .json or .yaml file there (npm run inject makes one from a plain pod)`;
    return new AppError("NotFound", `no pod ${namespace}/${name} in ${this.opts.podsDir}${hint}`);
  }

  async getSecret(namespace: string, name: string): Promise<Record<string, string> | undefined> {
    if (!DNS_NAME.test(namespace) || !DNS_NAME.test(name))
      throw new AppError("InvalidArgument", `Secret "${namespace}/${name}" is not a valid name`);
    let text: string;
    const path = join(this.opts.secretsDir, namespace, `${name}.json`);
    try {
      // Synchronous for the same reason as the pod files; a mount waits for it.
      text = readFileSync(path, "utf8");
    } catch (e) {
      // The message reaches the pod's status: it names the file to write, not a cluster to ask.
      if ((e as NodeJS.ErrnoException).code === "ENOENT") throw missingSecret(namespace, name, path);
      throw new AppError(
        "Unavailable",
        `cannot read Secret ${namespace}/${name} from ${path}: ${(e as NodeJS.ErrnoException).code}`,
      );
    }
    return decodeSecret(text, `${namespace}/${name}`);
  }

  async writeStatus(pod: PodRef, status: string): Promise<void> {
    const file = this.fileOf(pod.namespace, pod.name);
    if (file === undefined) return;
    await writeAtomic(join(this.opts.podsDir, statusFileName(file)), `${status}\n`);
  }

  async recordEvent(pod: PodRef, event: PodEventRecord): Promise<void> {
    const line = JSON.stringify({
      time: new Date().toISOString(),
      namespace: pod.namespace,
      name: pod.name,
      uid: pod.uid,
      ...event,
    });
    await appendFile(join(this.opts.podsDir, "events.jsonl"), `${line}\n`);
  }

  async updateBuckets(
    namespace: string,
    name: string,
    edit: (current: string | undefined) => string,
  ): Promise<PodObject> {
    const file = this.fileOf(namespace, name);
    if (file === undefined) throw this.missingPod(namespace, name);
    // Serialize edits of one file so that concurrent console requests never lose an update.
    const prev = this.editLocks.get(file) ?? Promise.resolve();
    const next = prev.then(async () => {
      const path = join(this.opts.podsDir, file);
      const raw = parsePodText(file, await readFile(path, "utf8")) as PodObject & Record<string, unknown>;
      const md = (raw.metadata ??= {});
      const annotations = (md.annotations ??= {});
      const value = edit(annotations[ANNOTATIONS.buckets]);
      if (value === "") delete annotations[ANNOTATIONS.buckets];
      else annotations[ANNOTATIONS.buckets] = value;
      const text = file.endsWith(".json") ? `${JSON.stringify(raw, null, 2)}\n` : dumpYaml(raw);
      if (!(await writeAtomic(path, text, true)))
        throw new AppError(
          "NotFound",
          `pod ${namespace}/${name} was deleted while its buckets were being edited`,
        );
      const pod = this.normalize(file, raw);
      // No version: the next scan reads the file once, finds the same hash and records it.
      this.files.set(file, { hash: createHash("sha256").update(text).digest("hex"), version: "", pod });
      this.onEvent?.({ type: "upsert", pod });
      return pod;
    });
    this.editLocks.set(
      file,
      next.catch(() => undefined),
    );
    return next;
  }
}

/**
 * The error for a Secret file that does not exist: what was looked for, where, and what to write
 * there. Local mode has no API server, so the message must not send anyone to one.
 */
export function missingSecret(namespace: string, name: string, path: string): AppError {
  const keys = Object.values(SECRET_KEYS).join(", ");
  return new AppError(
    "NotFound",
    `no Secret ${namespace}/${name}: ${path} does not exist; write {"stringData": {${keys}}} there (mode 0600)`,
  );
}

/** Decodes a Secret file: `stringData` as is, `data` from base64. Throws AppError on a malformed file. */
export function decodeSecret(text: string, what: string): Record<string, string> {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch {
    throw new AppError("InvalidArgument", `Secret ${what} is not valid JSON`);
  }
  const o = obj as { data?: unknown; stringData?: unknown };
  const out: Record<string, string> = {};
  if (o.data !== undefined) {
    if (typeof o.data !== "object" || o.data === null)
      throw new AppError("InvalidArgument", `Secret ${what}: data must be a map`);
    for (const [k, v] of Object.entries(o.data)) {
      if (typeof v !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(v))
        throw new AppError("InvalidArgument", `Secret ${what}: data.${k} is not base64`);
      out[k] = Buffer.from(v, "base64").toString("utf8");
    }
  }
  if (o.stringData !== undefined) {
    if (typeof o.stringData !== "object" || o.stringData === null)
      throw new AppError("InvalidArgument", `Secret ${what}: stringData must be a map`);
    for (const [k, v] of Object.entries(o.stringData)) {
      if (typeof v !== "string")
        throw new AppError("InvalidArgument", `Secret ${what}: stringData.${k} must be a string`);
      out[k] = v;
    }
  }
  return out;
}

/**
 * Replaces `path` by rename. With `replaceOnly`, a file deleted meanwhile is not brought back: the
 * check right before the rename leaves a window of one system call instead of the whole edit.
 */
async function writeAtomic(path: string, text: string, replaceOnly = false): Promise<boolean> {
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  await writeFile(tmp, text);
  if (
    replaceOnly &&
    !(await stat(path).then(
      () => true,
      () => false,
    ))
  ) {
    await rm(tmp, { force: true });
    return false;
  }
  await rename(tmp, path);
  return true;
}
