/**
 * The `certs` command line (`npm run certs -- <command> [flags]`):
 *
 * - `generate`: write a new CA and serving certificate to a directory (ca.crt, ca.key, tls.crt,
 *   tls.key; keys mode 0600), for local runs and the demo.
 * - `bootstrap`: in a cluster, as kube-webhook-certgen does: keep the serving bundle in a
 *   `kubernetes.io/tls` Secret, patch the MutatingWebhookConfiguration's caBundle, optionally write
 *   the PEMs to a directory (run as the webhook's init container), and optionally publish the CA,
 *   without its key, in a ConfigMap that console users may read.
 *
 * Every flag has an environment variable (`DV_` + the flag in upper snake case). List flags take
 * comma-separated values. Exit codes: 0 done, 1 failed, 2 usage (a bad or missing flag).
 */
import { resolve } from "node:path";
import {
  envName,
  parsePositiveInt,
  readOptions,
  requireOption,
  usage,
  type OptionSpec,
  type RawOptions,
} from "../shared/config.js";
import { ConfigError, isAppError } from "../shared/errors.js";
import { createLogger, type Logger } from "../shared/logger.js";
import { ensureServingSecret, patchCaBundle, type CertsApi } from "./bootstrap.js";
import { publishCaConfigMap, type PublishCaOutcome } from "./ca-config-map.js";
import { writePemFiles } from "./files.js";
import {
  DEFAULT_CA_VALIDITY_DAYS,
  DEFAULT_SERVING_VALIDITY_DAYS,
  certExpiry,
  generateCa,
  generateServingCert,
  validateServingNames,
} from "./generate.js";
import { defaultKubeApi } from "./kube-client.js";

export interface CliDeps {
  readonly env: NodeJS.ProcessEnv;
  readonly stdout: (line: string) => void;
  readonly stderr: (line: string) => void;
  /** Default: `KubeConfig.loadFromDefault()` (KUBECONFIG, ~/.kube/config, or in-cluster). */
  readonly kubeApi?: () => CertsApi;
  readonly log?: Logger;
  readonly now?: () => Date;
}

const spec = (flag: string, description: string, extra: Partial<OptionSpec> = {}): OptionSpec => ({
  flag,
  env: envName(flag),
  description,
  ...extra,
});

const SERVICE = spec("service", "name of the webhook's Service");
const NAMESPACE = spec("namespace", "namespace of the Service (and of the Secret)");
const OUT_DIR = spec("out-dir", "directory for ca.crt, ca.key, tls.crt and tls.key");
const EXTRA_DNS = spec("extra-dns", "more DNS SANs, comma-separated (e.g. localhost)");
const EXTRA_IP = spec("extra-ip", "IP SANs, comma-separated (e.g. 127.0.0.1)");
const VALIDITY = spec("validity-days", "validity of the serving certificate", {
  default: String(DEFAULT_SERVING_VALIDITY_DAYS),
});
const CA_VALIDITY = spec("ca-validity-days", "validity of the CA", {
  default: String(DEFAULT_CA_VALIDITY_DAYS),
});
const SECRET_NAME = spec("secret-name", "the kubernetes.io/tls Secret that holds the serving bundle");
const WEBHOOK_CONFIG = spec("webhook-config", "the MutatingWebhookConfiguration whose caBundle is set");
const WRITE_DIR = spec("write-dir", "also write ca.crt, tls.crt and tls.key to this directory");
const CA_CONFIG_MAP = spec(
  "ca-config-map",
  "also publish the CA (ca.crt, no key) in this ConfigMap of --namespace, for console users",
);
const RENEW_BEFORE = spec("renew-before-days", "renew when the certificate expires within this many days", {
  default: "30",
});

const GENERATE_SPECS = [SERVICE, NAMESPACE, OUT_DIR, EXTRA_DNS, EXTRA_IP, VALIDITY, CA_VALIDITY];
const BOOTSTRAP_SPECS = [
  NAMESPACE,
  SECRET_NAME,
  SERVICE,
  WEBHOOK_CONFIG,
  WRITE_DIR,
  CA_CONFIG_MAP,
  RENEW_BEFORE,
  EXTRA_DNS,
  EXTRA_IP,
  VALIDITY,
  CA_VALIDITY,
];

const TOP_USAGE = `Usage: certs <command> [flags]

Commands:
  generate    write a new CA and serving certificate to --out-dir
  bootstrap   keep the serving certificate in a Secret and patch the webhook's caBundle

Run "certs <command> --help" for the flags of a command.
`;

/** Runs the command line; returns the exit code (0 done, 1 failed, 2 usage). */
export async function runCli(argv: readonly string[], deps: CliDeps): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "generate":
        return await generate(rest, deps);
      case "bootstrap":
        return await bootstrap(rest, deps);
      case "help":
      case "--help":
      case "-h":
        deps.stdout(TOP_USAGE);
        return 0;
      default:
        throw new ConfigError(
          command === undefined ? "a command is required" : `unknown command "${command}"`,
        );
    }
  } catch (e) {
    if (e instanceof ConfigError) {
      deps.stderr(
        `certs: ${e.message}\n${command === "generate" || command === "bootstrap" ? `Run "certs ${command} --help" for usage.` : TOP_USAGE}`,
      );
      return 2;
    }
    deps.stderr(`certs: ${isAppError(e) ? e.message : `unexpected error: ${String(e)}`}`);
    return 1;
  }
}

async function generate(argv: readonly string[], deps: CliDeps): Promise<number> {
  if (wantsHelp(argv)) {
    deps.stdout(usage("certs generate", GENERATE_SPECS));
    return 0;
  }
  const raw = readOptions(GENERATE_SPECS, argv, deps.env);
  const names = servingNames(raw);
  const outDir = resolve(requireOption(OUT_DIR, raw));
  const validityDays = parsePositiveInt(VALIDITY, raw[VALIDITY.flag]!);
  const caValidityDays = parsePositiveInt(CA_VALIDITY, raw[CA_VALIDITY.flag]!);
  const now = deps.now?.() ?? new Date();
  const ca = generateCa({
    commonName: `${names.service}.${names.namespace}.svc CA`,
    validityDays: caValidityDays,
    now,
  });
  const serving = generateServingCert({ ca, ...names, validityDays, now });
  const written = await writePemFiles(outDir, [
    { name: "ca.crt", content: ca.certPem, secret: false },
    { name: "ca.key", content: ca.keyPem, secret: true },
    { name: "tls.crt", content: serving.certPem, secret: false },
    { name: "tls.key", content: serving.keyPem, secret: true },
  ]);
  deps.stdout(
    `wrote ${written.join(", ")}\nserving certificate valid until ${certExpiry(serving.certPem).toISOString()}`,
  );
  return 0;
}

async function bootstrap(argv: readonly string[], deps: CliDeps): Promise<number> {
  if (wantsHelp(argv)) {
    deps.stdout(usage("certs bootstrap", BOOTSTRAP_SPECS));
    return 0;
  }
  const raw = readOptions(BOOTSTRAP_SPECS, argv, deps.env);
  const names = servingNames(raw);
  const secretName = requireOption(SECRET_NAME, raw);
  const webhookConfigName = requireOption(WEBHOOK_CONFIG, raw);
  const renewBeforeDays = parsePositiveInt(RENEW_BEFORE, raw[RENEW_BEFORE.flag]!);
  const validityDays = parsePositiveInt(VALIDITY, raw[VALIDITY.flag]!);
  const caValidityDays = parsePositiveInt(CA_VALIDITY, raw[CA_VALIDITY.flag]!);
  if (renewBeforeDays >= validityDays)
    throw new ConfigError(
      `--${RENEW_BEFORE.flag} (${renewBeforeDays}) must be less than --${VALIDITY.flag} (${validityDays}), or every run would renew`,
    );
  const writeDir = raw[WRITE_DIR.flag] ? resolve(raw[WRITE_DIR.flag]!) : undefined;
  const caConfigMap = raw[CA_CONFIG_MAP.flag] || undefined;
  const log = (deps.log ?? createLogger({ name: "certs" })).child({ component: "bootstrap" });
  const api = (deps.kubeApi ?? defaultKubeApi)();

  const bundle = await ensureServingSecret(api, {
    ...names,
    secretName,
    now: deps.now?.() ?? new Date(),
    renewBefore: renewBeforeDays * 24 * 60 * 60 * 1000,
    validityDays,
    caValidityDays,
    log,
  });
  const patched = await patchCaBundle(api, {
    webhookConfigName,
    caPem: bundle.caPem,
    now: deps.now?.() ?? new Date(),
    log,
  });
  if (writeDir !== undefined) {
    // The key last: a server that reloads when tls.key changes then finds a matching tls.crt.
    await writePemFiles(writeDir, [
      { name: "ca.crt", content: bundle.caPem, secret: false },
      { name: "tls.crt", content: bundle.certPem, secret: false },
      { name: "tls.key", content: bundle.keyPem, secret: true },
    ]);
  }
  let published: PublishCaOutcome | "failed" | undefined;
  if (caConfigMap !== undefined) {
    // Only dvctl's discovery reads the ConfigMap: failing here would keep the webhook from starting
    // (the bootstrap is its init container) and so block pod creation, for a convenience.
    try {
      published = await publishCaConfigMap(api, {
        namespace: names.namespace,
        name: caConfigMap,
        caPem: bundle.caPem,
        now: deps.now?.() ?? new Date(),
        log,
      });
    } catch (e) {
      published = "failed";
      log.warn(
        { configMap: `${names.namespace}/${caConfigMap}`, err: isAppError(e) ? e.message : String(e) },
        "cannot publish the CA in its ConfigMap; until it is, dvctl needs --ca-file",
      );
    }
  }
  log.info(
    {
      secret: `${names.namespace}/${secretName}`,
      outcome: bundle.outcome,
      ...(bundle.reason ? { reason: bundle.reason } : {}),
      notAfter: bundle.notAfter.toISOString(),
      webhookConfiguration: webhookConfigName,
      caBundlePatched: patched.patched,
      ...(writeDir !== undefined ? { writeDir } : {}),
      ...(published !== undefined ? { caConfigMap: `${caConfigMap}: ${published}` } : {}),
    },
    "certificate bootstrap done",
  );
  return 0;
}

/** Service, namespace and extra SANs from the flags, checked; a bad value is a usage error. */
function servingNames(raw: RawOptions): {
  service: string;
  namespace: string;
  extraDnsNames: string[];
  extraIps: string[];
} {
  const names = {
    service: requireOption(SERVICE, raw),
    namespace: requireOption(NAMESPACE, raw),
    extraDnsNames: list(raw[EXTRA_DNS.flag]),
    extraIps: list(raw[EXTRA_IP.flag]),
  };
  try {
    validateServingNames(names);
  } catch (e) {
    throw new ConfigError(
      `${isAppError(e) ? e.message : String(e)} (check --service, --namespace, --extra-dns, --extra-ip)`,
      {
        cause: e,
      },
    );
  }
  return names;
}

function wantsHelp(argv: readonly string[]): boolean {
  return argv.includes("--help") || argv.includes("-h");
}

function list(value: string | undefined): string[] {
  return (value ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}
