/**
 * The webhook's configuration, read once at start-up from flags and environment variables and
 * returned frozen. A bad value fails here with a message naming the flag and the variable.
 */
import type { KeyObject } from "node:crypto";
import {
  LOG_LEVEL_OPTION,
  option,
  parseBoolean,
  parseLogLevel,
  parseAbsolutePath,
  parseListen,
  parsePositiveInt,
  readOptions,
  readSigningKey,
  requireOption,
  type RawOptions,
} from "../shared/config.js";
import { validateServingNames } from "../certs/generate.js";
import { ConfigError, isAppError } from "../shared/errors.js";
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
  // In-cluster certificate renewal (certs/renewer.ts); off by default, for local mode.
  renewCertificates: {
    ...opt(
      "renew-certificates",
      "keep the serving certificate renewed in its Secret and the caBundle while running, and serve each renewal (needs the Kubernetes API)",
    ),
    boolean: true,
  },
  certificateSecret: opt(
    "certificate-secret",
    "with --renew-certificates: the kubernetes.io/tls Secret holding the serving certificate",
    "dynamic-volumes-tls",
  ),
  certificateNamespace: opt(
    "certificate-namespace",
    "with --renew-certificates: namespace of that Secret and of the webhook's Service",
    "dynamic-volumes",
  ),
  certificateService: opt(
    "certificate-service",
    "with --renew-certificates: the webhook's Service, whose names the certificate covers",
    "dynamic-volumes-webhook",
  ),
  webhookConfig: opt(
    "webhook-config",
    "with --renew-certificates: the MutatingWebhookConfiguration whose caBundle is kept",
    "dynamic-volumes",
  ),
  caConfigMap: opt(
    "ca-config-map",
    "with --renew-certificates: also publish the CA (no key) in this ConfigMap of the namespace, for dvctl",
  ),
  certificateExtraDns: opt(
    "certificate-extra-dns",
    "with --renew-certificates: more DNS SANs for renewed certificates, comma-separated",
  ),
  certificateExtraIp: opt(
    "certificate-extra-ip",
    "with --renew-certificates: IP SANs for renewed certificates, comma-separated",
  ),
  certificateCheckIntervalSeconds: opt(
    "certificate-check-interval-seconds",
    "with --renew-certificates: how often each replica checks the certificate (spread by ±20%)",
    "600",
  ),
} as const;

/** In-cluster certificate renewal (`--renew-certificates`), see certs/renewer.ts. */
export interface CertificateRenewalConfig {
  readonly secretName: string;
  readonly namespace: string;
  readonly service: string;
  readonly webhookConfigName: string;
  readonly caConfigMap: string | undefined;
  readonly extraDnsNames: readonly string[];
  readonly extraIps: readonly string[];
  readonly checkIntervalMs: number;
}

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
  /** Undefined unless `--renew-certificates`. */
  readonly certificateRenewal: CertificateRenewalConfig | undefined;
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
    certificateRenewal: parseCertificateRenewal(raw),
  });
}

function parseCertificateRenewal(raw: RawOptions): CertificateRenewalConfig | undefined {
  const o = WEBHOOK_OPTIONS;
  if (!parseBoolean(o.renewCertificates, raw[o.renewCertificates.flag])) return undefined;
  const list = (value: string | undefined): string[] =>
    (value ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "");
  const renewal = {
    secretName: requireOption(o.certificateSecret, raw),
    namespace: requireOption(o.certificateNamespace, raw),
    service: requireOption(o.certificateService, raw),
    webhookConfigName: requireOption(o.webhookConfig, raw),
    caConfigMap: raw[o.caConfigMap.flag] || undefined,
    extraDnsNames: Object.freeze(list(raw[o.certificateExtraDns.flag])),
    extraIps: Object.freeze(list(raw[o.certificateExtraIp.flag])),
    checkIntervalMs:
      parsePositiveInt(
        o.certificateCheckIntervalSeconds,
        requireOption(o.certificateCheckIntervalSeconds, raw),
      ) * 1000,
  };
  try {
    validateServingNames(renewal);
  } catch (e) {
    throw new ConfigError(
      `${isAppError(e) ? e.message : String(e)} (check --${o.certificateService.flag}, --${o.certificateNamespace.flag}, --${o.certificateExtraDns.flag}, --${o.certificateExtraIp.flag})`,
      { cause: e },
    );
  }
  return Object.freeze(renewal);
}

function parseVolumeMode(value: string): VolumeMode {
  const mode = VOLUME_MODES.find((m) => m === value);
  if (mode === undefined)
    throw new ConfigError(
      `--${WEBHOOK_OPTIONS.volumeMode.flag} (env ${WEBHOOK_OPTIONS.volumeMode.env}): "${value}" is not one of ${VOLUME_MODES.join(", ")}`,
    );
  return mode;
}
