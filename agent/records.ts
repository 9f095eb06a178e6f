/**
 * The agent's record of each mount it made, kept in its private state so that after a restart it
 * can tell a healthy mount it may adopt from one made from an older spec. One directory per mount,
 * `<root>/agent/mounts/<id>/<name>/`, which also holds the client's credential files and cache.
 */
import { mkdir, readFile, readdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { agentDir } from "../shared/names.js";
import type { MountSpec } from "./plan.js";

export class MountRecords {
  constructor(private readonly root: string) {}

  /** `<root>/agent/mounts`. */
  get base(): string {
    return join(agentDir(this.root), "mounts");
  }

  podStateDir(id: string): string {
    return join(this.base, id);
  }

  /** Private directory of one mount: credential files, cache, and the record. */
  stateDir(id: string, name: string): string {
    return join(this.base, id, name);
  }

  async read(id: string, name: string): Promise<MountSpec | undefined> {
    try {
      return JSON.parse(await readFile(join(this.stateDir(id, name), "spec.json"), "utf8")) as MountSpec;
    } catch {
      return undefined;
    }
  }

  async write(id: string, name: string, spec: MountSpec): Promise<void> {
    const dir = this.stateDir(id, name);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const tmp = join(dir, "spec.json.tmp");
    await writeFile(tmp, JSON.stringify(spec), { mode: 0o600 });
    await rename(tmp, join(dir, "spec.json"));
  }

  /** Removes a mount's private directory (credentials and cache with it). Never under `<root>/pods`. */
  async remove(id: string, name: string): Promise<void> {
    await rm(this.stateDir(id, name), { recursive: true, force: true });
  }

  async removePod(id: string): Promise<void> {
    await rm(this.podStateDir(id), { recursive: true, force: true });
  }

  /** Ids that have private state. */
  async ids(): Promise<string[]> {
    try {
      return await readdir(this.base);
    } catch {
      return [];
    }
  }
}
