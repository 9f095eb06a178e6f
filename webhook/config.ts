/**
 * The webhook's configuration, read once at start-up from flags and environment variables and
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
  readOptions,
  readSigningKey,
  requireOption,
} from "../shared/config.js";
import { ConfigError } from "../shared/errors.js";
import { DEFAULT_MOUNT_PATH, DEFAULT_ROOT } from "../shared/names.js";
import { normalizeMountPath } from "./mutate.js";

const opt = option;

export const WEBHOOK_OPTIONS = {
  listen: opt("listen", "address to serve HTTPS on, HOST:PORT", "0.0.0.0:8443"),
  tlsCertFile: opt("tls-cert-file", "PEM serving certificate (reloaded when it changes)"),
  tlsKeyFile: opt("tls-key-file", "PEM private key of the serving certificate"),
  signingKeyFile: opt("signing-key-file", "file holding the id-signing key shared with the agents"),
  root: opt("root", "host root that holds the pods' directories", DEFAULT_ROOT),
  defaultMountPath: opt(
    "default-mount-path",
    "mount path for pods without the mount-path annotation",
    DEFAULT_MOUNT_PATH,
  ),
  logLevel: LOG_LEVEL_OPTION,
  shutdownGraceSeconds: opt(
    "shutdown-grace-seconds",
    "how long in-flight requests may take after SIGTERM",
    "10",
  ),
} as const;

export interface WebhookConfig {
  readonly listen: { host: string; port: number };
  readonly tlsCertFile: string;
  readonly tlsKeyFile: string;
  readonly signingKey: KeyObject;
  readonly root: string;
  readonly defaultMountPath: string;
  readonly logLevel: string;
  readonly shutdownGraceMs: number;
}

export function loadWebhookConfig(argv: readonly string[], env: NodeJS.ProcessEnv): WebhookConfig {
  const o = WEBHOOK_OPTIONS;
  const raw = readOptions(Object.values(o), argv, env);
  const mp = normalizeMountPath(requireOption(o.defaultMountPath, raw));
  if ("error" in mp)
    throw new ConfigError(`--default-mount-path (env ${o.defaultMountPath.env}) ${mp.error}`);
  const logLevel = parseLogLevel(o.logLevel, requireOption(o.logLevel, raw));
  return Object.freeze({
    listen: parseListen(o.listen, requireOption(o.listen, raw)),
    tlsCertFile: requireOption(o.tlsCertFile, raw),
    tlsKeyFile: requireOption(o.tlsKeyFile, raw),
    signingKey: readSigningKey(o.signingKeyFile, requireOption(o.signingKeyFile, raw)),
    root: parseAbsolutePath(o.root, requireOption(o.root, raw)),
    defaultMountPath: mp.path,
    logLevel,
    shutdownGraceMs:
      parsePositiveInt(o.shutdownGraceSeconds, requireOption(o.shutdownGraceSeconds, raw)) * 1000,
  });
}
