/**
 * The mounter's configuration, read once at start-up from flags and environment variables and
 * returned frozen. A bad value fails here with a message naming the flag and the variable.
 */
import {
  LOG_LEVEL_OPTION,
  option,
  parseAbsolutePath,
  parseBoolean,
  parseLogLevel,
  parsePositiveInt,
  readOptions,
  requireOption,
  type OptionSpec,
  type RawOptions,
} from "../../shared/config.js";
import { hostname } from "node:os";
import { ConfigError } from "../../shared/errors.js";
import { DEFAULT_ROOT } from "../../shared/names.js";
import { DEFAULT_CLIENT_PATH, DEFAULT_PROGRAMS, type ProgramPaths } from "../mount/mounters/programs.js";

const opt = option;

/** The uid and gid the agent runs as in the manifests (distroless "nonroot"). */
export const DEFAULT_AGENT_ID = "65532";

export const MOUNTER_OPTIONS = {
  root: opt(
    "root",
    "host root that holds the pods' directories and the mounter's private state",
    DEFAULT_ROOT,
  ),
  socket: opt("socket", "unix socket the agent connects to (default <root>/run/mounter.sock)"),
  agentUid: opt("agent-uid", "uid of the agent: owner of the socket", DEFAULT_AGENT_ID),
  agentGid: opt("agent-gid", "gid of the agent: group of the socket and its directory", DEFAULT_AGENT_ID),
  csiSocket: opt(
    "csi-socket",
    "absolute path of the unix socket that serves the CSI Identity and Node services to the kubelet (CSI mode); empty: CSI services off",
    "",
  ),
  nodeId: opt("node-id", "CSI node id reported to the kubelet (default: $NODE_NAME, else the host name)"),
  check: {
    ...opt("check", "connect to a running mounter, ping it, and exit 0 when it answers (a probe)"),
    boolean: true,
  },
  mountTimeoutSeconds: opt("mount-timeout-seconds", "how long one mount may take to become ready", "30"),
  uploadGraceSeconds: opt(
    "upload-grace-seconds",
    "how long an unmount waits for a client to upload the writes it acknowledged; then the client is stopped and a cache that may hold them is kept for the next mount of the entry",
    "60",
  ),
  s3fsProgram: opt("s3fs-program", "absolute path of s3fs", DEFAULT_PROGRAMS.s3fs),
  rcloneProgram: opt("rclone-program", "absolute path of rclone", DEFAULT_PROGRAMS.rclone),
  geesefsProgram: opt("geesefs-program", "absolute path of geesefs", DEFAULT_PROGRAMS.geesefs),
  mountProgram: opt("mount-program", "absolute path of util-linux mount", DEFAULT_PROGRAMS.mount),
  umountProgram: opt("umount-program", "absolute path of util-linux umount", DEFAULT_PROGRAMS.umount),
  fusermount3Program: opt(
    "fusermount3-program",
    "absolute path of fusermount3",
    DEFAULT_PROGRAMS.fusermount3,
  ),
  clientPath: opt(
    "client-path",
    "PATH given to the FUSE clients, which look up helpers such as fusermount themselves (absolute directories, ':'-separated); the mounter's own PATH is never passed on",
    DEFAULT_CLIENT_PATH,
  ),
  logLevel: LOG_LEVEL_OPTION,
} as const;

export interface MounterConfig {
  readonly root: string;
  readonly socketPath: string;
  readonly agentUid: number;
  readonly agentGid: number;
  /** Unix socket of the CSI services, or undefined when they are off. */
  readonly csiSocket: string | undefined;
  /** CSI node id: `--node-id`, else `NODE_NAME`, else the host name. */
  readonly nodeId: string;
  /** Run as a probe of a running mounter instead of serving. */
  readonly check: boolean;
  readonly mountTimeoutMs: number;
  /** Upper bound of the wait at unmount for a client's uploads (see `agent/mount/write-back.ts`). */
  readonly uploadGraceMs: number;
  /** The programs the mounter runs, by absolute path: nothing is looked up through `PATH`. */
  readonly programs: ProgramPaths;
  /** The clients' `PATH`. */
  readonly clientPath: string;
  readonly logLevel: string;
}

/** `<root>/run/mounter.sock`. */
export function defaultSocketPath(root: string): string {
  return `${root === "/" ? "" : root}/run/mounter.sock`;
}

function parseId(spec: OptionSpec, value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n > 0xfffffffe)
    throw new ConfigError(`--${spec.flag} (env ${spec.env}): "${value}" must be a numeric id`);
  return n;
}

export function loadMounterConfig(argv: readonly string[], env: NodeJS.ProcessEnv): MounterConfig {
  const o = MOUNTER_OPTIONS;
  const raw = readOptions(Object.values(o), argv, env);
  const root = parseAbsolutePath(o.root, requireOption(o.root, raw));
  const csiSocket = raw[o.csiSocket.flag] ?? "";
  const int = (spec: OptionSpec): number => parsePositiveInt(spec, requireOption(spec, raw));
  return Object.freeze({
    root,
    socketPath: parseAbsolutePath(o.socket, raw[o.socket.flag] ?? defaultSocketPath(root)),
    agentUid: parseId(o.agentUid, requireOption(o.agentUid, raw)),
    agentGid: parseId(o.agentGid, requireOption(o.agentGid, raw)),
    csiSocket: csiSocket === "" ? undefined : parseAbsolutePath(o.csiSocket, csiSocket),
    nodeId: parseNodeId(o.nodeId, raw[o.nodeId.flag] || env.NODE_NAME || hostname()),
    check: parseBoolean(o.check, raw[o.check.flag]),
    mountTimeoutMs: int(o.mountTimeoutSeconds) * 1000,
    uploadGraceMs: int(o.uploadGraceSeconds) * 1000,
    programs: loadPrograms(raw),
    clientPath: parseClientPath(o.clientPath, requireOption(o.clientPath, raw)),
    logLevel: parseLogLevel(o.logLevel, requireOption(o.logLevel, raw)),
  });
}

function loadPrograms(raw: RawOptions): ProgramPaths {
  const o = MOUNTER_OPTIONS;
  const path = (spec: OptionSpec): string => parseAbsolutePath(spec, requireOption(spec, raw));
  return Object.freeze({
    s3fs: path(o.s3fsProgram),
    rclone: path(o.rcloneProgram),
    geesefs: path(o.geesefsProgram),
    mount: path(o.mountProgram),
    umount: path(o.umountProgram),
    fusermount3: path(o.fusermount3Program),
  });
}

function parseNodeId(spec: OptionSpec, value: string): string {
  if (!/^[A-Za-z0-9]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9])?$/.test(value))
    throw new ConfigError(`--${spec.flag} (env ${spec.env}): "${value.slice(0, 60)}" is not a node name`);
  return value;
}

function parseClientPath(spec: OptionSpec, value: string): string {
  for (const dir of value.split(":"))
    if (!dir.startsWith("/") || dir.split("/").includes(".."))
      throw new ConfigError(
        `--${spec.flag} (env ${spec.env}): "${value}" must list absolute directories only, separated by ':'`,
      );
  return value;
}
