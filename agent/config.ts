/**
 * The agent's configuration, read once at start-up from flags and environment variables and
 * returned frozen. A bad value fails here with a message naming the flag and the variable.
 */
import {
  envName,
  parseAbsolutePath,
  parsePositiveInt,
  readOptions,
  readSigningKey,
  requireOption,
  type OptionSpec,
} from "../shared/config.js";
import { ConfigError } from "../shared/errors.js";
import { DEFAULT_ROOT, MOUNTERS, type MounterName } from "../shared/names.js";

const opt = (flag: string, description: string, def?: string): OptionSpec => ({
  flag,
  env: envName(flag),
  description,
  ...(def !== undefined ? { default: def } : {}),
});

export const AGENT_OPTIONS = {
  root: opt("root", "host root that holds the pods' directories and the agent's private state", DEFAULT_ROOT),
  nodeName: opt("node-name", "this node's name (in a cluster, from the downward API; NODE_NAME also works)"),
  podsDir: opt(
    "pods-dir",
    "local mode: directory of pod files (without it the agent uses the Kubernetes API)",
  ),
  secretsDir: opt("secrets-dir", "local mode: directory of <namespace>/<name>.json Secrets"),
  signingKeyFile: opt("signing-key-file", "file holding the id-signing key shared with the webhook"),
  defaultMounter: opt(
    "default-mounter",
    `FUSE client for pods without the mounter annotation: ${MOUNTERS.join(", ")}`,
    "s3fs",
  ),
  concurrency: opt("concurrency", "pods reconciled at once", "4"),
  mountTimeoutSeconds: opt("mount-timeout-seconds", "how long one mount may take to become ready", "30"),
  resyncSeconds: opt("resync-seconds", "how often every mount is probed and orphans are collected", "10"),
  backoffMaxSeconds: opt("backoff-max-seconds", "longest wait between retries of a failed mount", "60"),
  logLevel: opt("log-level", "pino log level: fatal, error, warn, info, debug, trace", "info"),
} as const;

export interface AgentConfig {
  readonly root: string;
  readonly nodeName: string;
  readonly local: { podsDir: string; secretsDir: string } | undefined;
  readonly signingKey: Buffer;
  readonly defaultMounter: MounterName;
  readonly concurrency: number;
  readonly mountTimeoutMs: number;
  readonly resyncMs: number;
  readonly backoffMaxMs: number;
  readonly logLevel: string;
}

const LEVELS = new Set(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);

export function loadAgentConfig(argv: readonly string[], env: NodeJS.ProcessEnv): AgentConfig {
  const o = AGENT_OPTIONS;
  const raw = readOptions(Object.values(o), argv, env);
  raw["node-name"] ??= env.NODE_NAME;
  const podsDir = raw["pods-dir"];
  const secretsDir = raw["secrets-dir"];
  if ((podsDir === undefined) !== (secretsDir === undefined))
    throw new ConfigError(
      `local mode needs both --pods-dir (env ${o.podsDir.env}) and --secrets-dir (env ${o.secretsDir.env})`,
    );
  const local =
    podsDir !== undefined && secretsDir !== undefined
      ? {
          podsDir: parseAbsoluteOrRelative(o.podsDir, podsDir),
          secretsDir: parseAbsoluteOrRelative(o.secretsDir, secretsDir),
        }
      : undefined;
  const mounter = requireOption(o.defaultMounter, raw);
  if (!(MOUNTERS as readonly string[]).includes(mounter))
    throw new ConfigError(
      `--default-mounter (env ${o.defaultMounter.env}): "${mounter}" is not one of ${MOUNTERS.join(", ")}`,
    );
  const logLevel = requireOption(o.logLevel, raw);
  if (!LEVELS.has(logLevel))
    throw new ConfigError(
      `--log-level (env ${o.logLevel.env}): "${logLevel}" is not one of ${[...LEVELS].join(", ")}`,
    );
  return Object.freeze({
    root: parseAbsolutePath(o.root, requireOption(o.root, raw)),
    // In local mode every pod file is scheduled here, so the node name is only a label.
    nodeName: local ? (raw["node-name"] ?? "local") : requireOption(o.nodeName, raw),
    local,
    signingKey: readSigningKey(o.signingKeyFile, requireOption(o.signingKeyFile, raw)),
    defaultMounter: mounter as MounterName,
    concurrency: parsePositiveInt(o.concurrency, requireOption(o.concurrency, raw)),
    mountTimeoutMs: parsePositiveInt(o.mountTimeoutSeconds, requireOption(o.mountTimeoutSeconds, raw)) * 1000,
    resyncMs: parsePositiveInt(o.resyncSeconds, requireOption(o.resyncSeconds, raw)) * 1000,
    backoffMaxMs: parsePositiveInt(o.backoffMaxSeconds, requireOption(o.backoffMaxSeconds, raw)) * 1000,
    logLevel,
  });
}

function parseAbsoluteOrRelative(spec: OptionSpec, value: string): string {
  return parseAbsolutePath(spec, value.startsWith("/") ? value : `${process.cwd()}/${value}`);
}
