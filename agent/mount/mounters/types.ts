/**
 * What a mounter builder takes and returns. Builders are pure: a {@link MountRequest} in, a
 * {@link MountCommand} (argv, env, files) out; `agent/mount/fuse-mount.ts` writes the files and runs it.
 */
import type { MounterName } from "../../../shared/names.js";

export type { MounterName } from "../../../shared/names.js";

/** Credentials from the pod's Secret. They travel in env or 0600 files only, never in argv. */
export interface S3Credentials {
  readonly accessKeyID: string;
  readonly secretAccessKey: string;
}

/** A user-supplied option: `key=value`, or `key` alone (a switch) as `true`. */
export type MountOptionValue = string | true;

export interface MountRequest {
  readonly bucket: string;
  /** Key prefix without leading or trailing slash; `""` for the whole bucket. */
  readonly prefix: string;
  readonly readOnly: boolean;
  /**
   * Absolute directory the client mounts on. `agent/mount/fuse-mount.ts` hands the builders a staging
   * directory in the agent's private state and moves the mount to `<root>/pods/<id>/<name>` itself.
   */
  readonly mountPoint: string;
  /** S3 endpoint URL, `http(s)://host[:port][/path]`. */
  readonly endpoint: string;
  /** Region for request signing; `""` means `us-east-1`. */
  readonly region: string;
  readonly credentials: S3Credentials;
  /** Owner shown for every file and directory; the client's default (the agent, root) when absent. */
  readonly uid?: number;
  readonly gid?: number;
  /** User options, checked against the mounter's allowlist. They override `uid`/`gid` above. */
  readonly options: Readonly<Record<string, MountOptionValue>>;
  /** Agent-private directory for this mount (credential files, cache), under `<root>/agent`. */
  readonly stateDir: string;
  /**
   * List the mount on its staging directory before moving it into the pod, so that a mount that
   * cannot list its bucket (wrong credentials, a missing bucket) never shows in the pod, even for a
   * moment. Off by default: the pod then sees the bucket one listing sooner. The reconciler turns it
   * on for an entry whose last attempt failed, so a retry of a broken entry cannot flicker.
   */
  readonly listBeforePlacing?: boolean;
}

/** A file the agent writes before starting the client. */
export interface MountFile {
  /** Absolute path inside `stateDir`. */
  readonly path: string;
  readonly content: string;
  readonly mode: 0o600;
}

export interface MountCommand {
  /** Absolute path of the executable (never looked up through `PATH`). */
  readonly command: string;
  readonly argv: readonly string[];
  /** The client's complete environment (base environment plus the mounter's variables). */
  readonly env: Readonly<Record<string, string>>;
  readonly files: readonly MountFile[];
  /** True when the client forks into the background and the started process exits on success. */
  readonly daemonizes: boolean;
  /** Directory (inside `stateDir`) to create with mode 0700 for the client's cache. */
  readonly cacheDir?: string;
  /** File (inside `stateDir`) the client logs to instead of stdout/stderr; read to report failures. */
  readonly logFile?: string;
}

/** Environment the agent passes down to every client (proxies, CA bundle…), before scrubbing. */
export type BaseEnv = Readonly<Record<string, string | undefined>>;

export interface BuildOptions {
  /**
   * Base environment; variables that could carry other credentials (`AWS_*`, `RCLONE_*`) are
   * dropped, and `PATH` is replaced by {@link clientPath}.
   */
  readonly baseEnv?: BaseEnv;
  /** Absolute path of the client. Default: its entry in `DEFAULT_PROGRAMS` (`./programs.ts`). */
  readonly program?: string;
  /** The client's `PATH`. Default `DEFAULT_CLIENT_PATH` (`./programs.ts`). */
  readonly clientPath?: string;
}

/** A mounter: builds the command for a validated request. */
export interface MounterBuilder {
  readonly name: MounterName;
  /** Allowed user option names, for messages and docs. */
  readonly allowedOptions: readonly string[];
  build(req: MountRequest, opts?: BuildOptions): MountCommand;
}
