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
import { VOLUME_MODES, normalizeMountPath, type VolumeMode } from "./mutate.js";

const opt = option;

export const WEBHOOK_OPTIONS = {
  listen: opt("listen", "address to serve HTTPS on, HOST:PORT", "0.0.0.0:8443"),
  tlsCertFile: opt("tls-cert-file", "PEM serving certificate (reloaded when it changes)"),
  tlsKeyFile: opt("tls-key-file", "PEM private key of the serving certificate"),
  signingKeyFile: opt(
    "signing-key-file",
    "file holding the id-signing key shared with the agents (required in hostPath mode)",
  ),
  root: opt("root", "host root that holds the pods' directories", DEFAULT_ROOT),
  defaultMountPath: opt(
    "default-mount-path",
    "mount path for pods without the mount-path annotation",
    DEFAULT_MOUNT_PATH,
  ),
  volumeMode: opt(
    "volume-mode",
    `the volume injected pods get: ${VOLUME_MODES.join(" or ")} (a CSI ephemeral inline volume, for namespaces at Pod Security baseline or restricted)`,
    "hostPath",
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
  /** The id-signing key: always in hostPath mode; in csi mode only when a file is given. */
  readonly signingKey: KeyObject | undefined;
  readonly volumeMode: VolumeMode;
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
  const volumeMode = parseVolumeMode(requireOption(o.volumeMode, raw));
  return Object.freeze({
    listen: parseListen(o.listen, requireOption(o.listen, raw)),
    tlsCertFile: requireOption(o.tlsCertFile, raw),
    tlsKeyFile: requireOption(o.tlsKeyFile, raw),
    // CSI mode signs nothing; a key, when given, still verifies pods injected in hostPath mode.
    signingKey:
      volumeMode === "csi" && raw[o.signingKeyFile.flag] === undefined
        ? undefined
        : readSigningKey(o.signingKeyFile, requireOption(o.signingKeyFile, raw)),
    volumeMode,
    root: parseAbsolutePath(o.root, requireOption(o.root, raw)),
    defaultMountPath: mp.path,
    logLevel,
    shutdownGraceMs:
      parsePositiveInt(o.shutdownGraceSeconds, requireOption(o.shutdownGraceSeconds, raw)) * 1000,
  });
}

function parseVolumeMode(value: string): VolumeMode {
  const mode = VOLUME_MODES.find((m) => m === value);
  if (mode === undefined)
    throw new ConfigError(
      `--${WEBHOOK_OPTIONS.volumeMode.flag} (env ${WEBHOOK_OPTIONS.volumeMode.env}): "${value}" is not one of ${VOLUME_MODES.join(", ")}`,
    );
  return mode;
}
