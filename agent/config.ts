/**
 * The agent's configuration, read once at start-up from flags and environment variables and
 * returned frozen. A bad value fails here with a message naming the flag and the variable.
 */
import type { KeyObject } from "node:crypto";
import {
  LOG_LEVEL_OPTION,
  option,
  parseLogLevel,
  parseAbsolutePath,
  parseListen,
  parsePositiveInt,
  readOptionFile,
  readOptions,
  readSigningKey,
  requireOption,
  type OptionSpec,
  type RawOptions,
} from "../shared/config.js";
import { ConfigError } from "../shared/errors.js";
import { DEFAULT_ROOT, MOUNTERS, type MounterName } from "../shared/names.js";
import { parseTokenAuthFile, type StaticToken } from "./console/auth.js";
import { defaultSocketPath } from "./mounter/config.js";

const opt = option;

/**
 * V8 flags the agent runs with (Dockerfile.agent, `npm run agent`, the local node). A young
 * generation capped at 2 MiB per semi-space: starting hundreds of clients at once made V8 grow it
 * to its 16 MiB default and promote the churn, which raised the agent's resident memory by about
 * 70 MiB on every node for no gain in speed.
 */
export const AGENT_NODE_FLAGS = ["--max-semi-space-size=2"] as const;

export const AGENT_OPTIONS = {
  root: opt("root", "host root that holds the pods' directories (the agent only reads it)", DEFAULT_ROOT),
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
  resyncSeconds: opt("resync-seconds", "how often every mount is probed and orphans are collected", "10"),
  backoffMaxSeconds: opt("backoff-max-seconds", "longest wait between retries of a failed mount", "60"),
  mounterSocket: opt(
    "mounter-socket",
    "unix socket of the node's mounter, which makes every mount (default <root>/run/mounter.sock)",
  ),
  logLevel: LOG_LEVEL_OPTION,
  listen: opt(
    "listen",
    "HOST:PORT to serve the wss console, /healthz, /readyz and /metrics on (off without it)",
  ),
  tlsCertFile: opt("tls-cert-file", "PEM certificate for --listen; reloaded when the file changes"),
  tlsKeyFile: opt("tls-key-file", "PEM private key for --listen"),
  tokenAuthFile: opt(
    "token-auth-file",
    'local mode: console tokens in the kube-apiserver format (token,user,uid,"group1,group2")',
  ),
  tokenAudience: opt(
    "token-audience",
    "comma list of audiences the console asks TokenReview to confirm (default: none, the API server's own)",
  ),
  consoleMaxConnections: opt("console-max-connections", "console connections at once", "1024"),
  consoleMaxFrameBytes: opt("console-max-frame-bytes", "largest console frame, in bytes", "1048576"),
  consoleRequestsPerSecond: opt(
    "console-requests-per-second",
    "sustained requests per console connection",
    "20",
  ),
  consoleRequestBurst: opt("console-request-burst", "requests a console connection may send at once", "40"),
  consoleMaxUnauthenticated: opt(
    "console-max-unauthenticated",
    "console connections still authenticating, in each of two pools (token in the Authorization header being checked; websocket waiting for its auth frame); 503 beyond it",
    "64",
  ),
  consoleMaxUnauthenticatedPerAddress: opt(
    "console-max-unauthenticated-per-address",
    "console connections still authenticating from one remote address, in each pool; 429 beyond it",
    "8",
  ),
  consoleMaxHandshakesPerAddress: opt(
    "console-max-handshakes-per-address",
    "connections from one remote address that have not sent an HTTP request yet (TLS handshake, headers); reset beyond it",
    "32",
  ),
  consoleAuthTimeoutSeconds: opt(
    "console-auth-timeout-seconds",
    "time from a console connection's TCP accept to a valid token; the connection is closed after it",
    "10",
  ),
} as const;

export interface ConsoleConfig {
  readonly host: string;
  readonly port: number;
  readonly tls: { readonly certFile: string; readonly keyFile: string };
  /** Local mode: the static tokens; undefined in a cluster (TokenReview and SubjectAccessReview). */
  readonly tokens: readonly StaticToken[] | undefined;
  /** Repeated tokens in the token file, to be logged at start-up. */
  readonly tokenWarnings: readonly string[];
  readonly audiences: readonly string[];
  readonly maxConnections: number;
  readonly maxPayloadBytes: number;
  readonly requestsPerSecond: number;
  readonly burst: number;
  readonly maxUnauthenticated: number;
  readonly maxUnauthenticatedPerAddress: number;
  readonly maxHandshakesPerAddress: number;
  readonly authTimeoutMs: number;
}

export interface AgentConfig {
  readonly root: string;
  readonly nodeName: string;
  readonly local: { podsDir: string; secretsDir: string } | undefined;
  readonly signingKey: KeyObject;
  readonly defaultMounter: MounterName;
  readonly concurrency: number;
  readonly resyncMs: number;
  readonly backoffMaxMs: number;
  /** The mounter's socket. */
  readonly mounterSocket: string;
  readonly logLevel: string;
  /** The console and health endpoints; undefined without --listen. */
  readonly console: ConsoleConfig | undefined;
}

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
  const logLevel = parseLogLevel(o.logLevel, requireOption(o.logLevel, raw));
  const root = parseAbsolutePath(o.root, requireOption(o.root, raw));
  return Object.freeze({
    root,
    // In local mode every pod file is scheduled here, so the node name is only a label.
    nodeName: local ? (raw["node-name"] ?? "local") : requireOption(o.nodeName, raw),
    local,
    signingKey: readSigningKey(o.signingKeyFile, requireOption(o.signingKeyFile, raw)),
    defaultMounter: mounter as MounterName,
    concurrency: parsePositiveInt(o.concurrency, requireOption(o.concurrency, raw)),
    resyncMs: parsePositiveInt(o.resyncSeconds, requireOption(o.resyncSeconds, raw)) * 1000,
    backoffMaxMs: parsePositiveInt(o.backoffMaxSeconds, requireOption(o.backoffMaxSeconds, raw)) * 1000,
    mounterSocket: parseAbsolutePath(o.mounterSocket, raw[o.mounterSocket.flag] ?? defaultSocketPath(root)),
    logLevel,
    console: loadConsoleConfig(raw, local !== undefined),
  });
}

function loadConsoleConfig(raw: RawOptions, local: boolean): ConsoleConfig | undefined {
  const o = AGENT_OPTIONS;
  const where = (spec: OptionSpec): string => `--${spec.flag} (env ${spec.env})`;
  const listen = raw[o.listen.flag];
  if (listen === undefined) {
    for (const spec of [o.tlsCertFile, o.tlsKeyFile, o.tokenAuthFile, o.tokenAudience])
      if (raw[spec.flag] !== undefined)
        throw new ConfigError(
          `${where(spec)} is set but --listen (env ${o.listen.env}) is not: it has no effect`,
        );
    return undefined;
  }
  const { host, port } = parseListen(o.listen, listen);
  const tokenFile = raw[o.tokenAuthFile.flag];
  const audiences = (raw[o.tokenAudience.flag] ?? "")
    .split(",")
    .map((a) => a.trim())
    .filter((a) => a !== "");
  let tokens: StaticToken[] | undefined;
  let tokenWarnings: string[] = [];
  if (local) {
    if (tokenFile === undefined)
      throw new ConfigError(
        `local mode: the console needs ${where(o.tokenAuthFile)}, a file of token,user,uid lines; nobody could authenticate otherwise`,
      );
    if (audiences.length > 0)
      throw new ConfigError(
        `${where(o.tokenAudience)} applies to TokenReview, which local mode does not use`,
      );
    const parsed = parseTokenAuthFile(
      readOptionFile(o.tokenAuthFile, tokenFile),
      `${where(o.tokenAuthFile)} "${tokenFile}"`,
    );
    if (parsed.tokens.length === 0)
      throw new ConfigError(`${where(o.tokenAuthFile)}: "${tokenFile}" lists no tokens`);
    tokens = parsed.tokens;
    tokenWarnings = parsed.warnings;
  } else if (tokenFile !== undefined) {
    throw new ConfigError(
      `${where(o.tokenAuthFile)} is for local mode; in a cluster the console uses TokenReview and SubjectAccessReview`,
    );
  }
  const int = (spec: OptionSpec): number => parsePositiveInt(spec, requireOption(spec, raw));
  const maxUnauthenticated = int(o.consoleMaxUnauthenticated);
  const maxUnauthenticatedPerAddress = int(o.consoleMaxUnauthenticatedPerAddress);
  if (maxUnauthenticatedPerAddress > maxUnauthenticated)
    throw new ConfigError(
      `${where(o.consoleMaxUnauthenticatedPerAddress)} (${maxUnauthenticatedPerAddress}) is more than ${where(o.consoleMaxUnauthenticated)} (${maxUnauthenticated}): one address could take every slot`,
    );
  return {
    host,
    port,
    tls: { certFile: requireOption(o.tlsCertFile, raw), keyFile: requireOption(o.tlsKeyFile, raw) },
    tokens,
    tokenWarnings,
    audiences,
    maxConnections: int(o.consoleMaxConnections),
    maxPayloadBytes: int(o.consoleMaxFrameBytes),
    requestsPerSecond: int(o.consoleRequestsPerSecond),
    burst: int(o.consoleRequestBurst),
    maxUnauthenticated,
    maxUnauthenticatedPerAddress,
    maxHandshakesPerAddress: int(o.consoleMaxHandshakesPerAddress),
    authTimeoutMs: int(o.consoleAuthTimeoutSeconds) * 1000,
  };
}

function parseAbsoluteOrRelative(spec: OptionSpec, value: string): string {
  return parseAbsolutePath(spec, value.startsWith("/") ? value : `${process.cwd()}/${value}`);
}
