/**
 * In-cluster renewal while the webhook runs (`--renew-certificates`): every replica checks, at a
 * jittered interval, the Secret that holds the serving bundle and the caBundle of the
 * MutatingWebhookConfiguration, carries out the next step of rotation.ts, and serves the Secret's
 * certificate once every caBundle verifies it.
 *
 * One check ({@link checkCertificates}):
 *
 * 1. Read the Secret. Missing or unusable (keys missing, a key that does not match, a certificate
 *    for other names): create or regenerate it as the bootstrap does (`ensureServingSecret`).
 * 2. Otherwise read the configuration and plan (rotation.ts): renew the serving certificate under the
 *    same CA, stage a new CA, promote the staged CA, or nothing. Every write of the Secret is guarded
 *    by its resourceVersion: a replica that loses the race to another one does nothing more in this
 *    check, and the next check starts from what the winner wrote.
 * 3. Make every caBundle hold the current CA and the staged one, keeping the other CAs until they
 *    expire (`patchCaBundle`), and publish the same CAs in the ConfigMap for dvctl when asked.
 * 4. When the Secret's certificate differs from the one in the server's files and every caBundle
 *    verifies it, write the files (certificate first, key last) and reload the server, which swaps
 *    its TLS context without closing a connection (`server.setSecureContext`).
 *
 * Key material never appears in a log line or an error: only names, times and reasons.
 */
import type { V1MutatingWebhookConfiguration, V1Secret } from "@kubernetes/client-node";
import { readFile } from "node:fs/promises";
import { basename, dirname } from "node:path";
import { AppError, isAppError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import {
  NEXT_CA_CERT_KEY,
  NEXT_CA_KEY_KEY,
  bundlesHold,
  bundlesVerify,
  decode,
  MAX_ATTEMPTS,
  ensureServingSecret,
  isCode,
  issueServing,
  newCa,
  patchCaBundle,
  readServingSecret,
  secretFor,
  type CertsApi,
  type ServingBundle,
} from "./bootstrap.js";
import { publishCaConfigMap } from "./ca-config-map.js";
import { writePemFiles } from "./files.js";
import { DEFAULT_RENEW_BEFORE_MS, certValidity, keyMatchesCert, type CertificatePair } from "./generate.js";
import { planRotation, type RotationPolicy, type RotationStep } from "./rotation.js";

const DAY_MS = 24 * 60 * 60 * 1000;
/** Stage a new CA this long before the CA expires (60 days): before the bootstrap's own window. */
export const DEFAULT_CA_RENEW_BEFORE_MS = 60 * DAY_MS;
/** How long a staged CA is in every caBundle before a certificate it signed is served (1 hour). */
export const DEFAULT_CA_OVERLAP_MS = 60 * 60 * 1000;
/** How often each replica checks (10 minutes), spread by ±{@link DEFAULT_JITTER}. */
export const DEFAULT_CHECK_INTERVAL_MS = 10 * 60 * 1000;
export const DEFAULT_JITTER = 0.2;
/** A failed check is retried after at most this long (1 minute), jittered too. */
export const MAX_RETRY_MS = 60 * 1000;

export interface CertificateRenewalOptions {
  /** Namespace of the Secret and of the webhook's Service. */
  readonly namespace: string;
  readonly secretName: string;
  /** The webhook's Service: the certificate covers its four DNS names. */
  readonly service: string;
  readonly webhookConfigName: string;
  /** Also publish the CAs (no key) in this ConfigMap of `namespace`, for dvctl. */
  readonly caConfigMap?: string;
  readonly extraDnsNames?: readonly string[];
  readonly extraIps?: readonly string[];
  /** Default {@link DEFAULT_RENEW_BEFORE_MS} (30 days). */
  readonly renewBeforeMs?: number;
  /** Default {@link DEFAULT_CA_RENEW_BEFORE_MS} (60 days). */
  readonly caRenewBeforeMs?: number;
  /** Default {@link DEFAULT_CA_OVERLAP_MS} (1 hour). */
  readonly caOverlapMs?: number;
  /** Validity of new certificates; defaults from generate.ts (serving 1 year, CA 10 years). */
  readonly validityMs?: number;
  readonly caValidityMs?: number;
  /** The files the server reads; rewritten when the Secret holds a new, trusted certificate. */
  readonly certFile: string;
  readonly keyFile: string;
  /** Makes the server load the files now; true when it installed a new certificate. */
  readonly reload: () => boolean;
  readonly now?: () => Date;
  readonly log: Logger;
}

export interface CheckResult {
  /**
   * What was done to the Secret; `lost-race` when another replica changed it first and nothing was
   * left to do after reading it again.
   */
  readonly step: RotationStep["action"] | "created" | "regenerated" | "lost-race";
  /** Webhooks whose caBundle was patched. */
  readonly caBundlePatched: readonly string[];
  /** `installed`: the server now serves the Secret's certificate; `untrusted`: not yet, see the log. */
  readonly served: "unchanged" | "installed" | "untrusted";
  /** notAfter of the Secret's serving certificate. */
  readonly notAfter: Date;
}

/** The Secret's content, read: the serving bundle, and the staged CA when there is one. */
interface SecretContent {
  readonly secret: V1Secret;
  readonly bundle: ServingBundle;
  readonly nextCa?: CertificatePair;
}

/** Runs one check (see the module comment). Throws AppErrors from the API; nothing is logged twice. */
export async function checkCertificates(
  api: CertsApi,
  opts: CertificateRenewalOptions,
): Promise<CheckResult> {
  const now = opts.now?.() ?? new Date();
  const { namespace, secretName } = opts;
  const where = `Secret ${namespace}/${secretName}`;
  const log = opts.log;
  let step: CheckResult["step"] | undefined;
  let content: SecretContent | undefined;
  let lostRace = false;
  for (let attempt = 1; step === undefined; attempt++) {
    if (attempt > MAX_ATTEMPTS)
      throw new AppError(
        "Conflict",
        `${where} kept changing while it was being written (${MAX_ATTEMPTS} attempts); checking again later`,
      );
    content = readContent(await api.readSecret(namespace, secretName), opts);
    if (content === undefined) {
      const r = await ensureServingSecret(api, { ...certificateOptions(opts, now), secretName, log });
      step = r.outcome === "created" ? "created" : r.outcome === "renewed" ? "regenerated" : "lost-race";
      content = readContent(await api.readSecret(namespace, secretName), opts);
      if (content === undefined) step = undefined;
      continue;
    }
    const config = await readConfig(api, opts.webhookConfigName);
    const plan = planRotation(rotationState(content, config), policyOf(opts), now);
    const next = nextSecret(content, plan, opts, now);
    if (next === undefined) {
      if (plan.action === "wait")
        log.debug({ secret: where, reason: plan.reason }, "CA rotation in progress");
      step = lostRace ? "lost-race" : plan.action;
      continue;
    }
    if (plan.action !== "none" && plan.action !== "wait")
      log.info({ secret: where, action: plan.action, reason: plan.reason }, messageFor[plan.action]);
    try {
      content = readContent(await api.replaceSecret(namespace, secretName, next), opts) ?? content;
      step = plan.action;
    } catch (e) {
      if (!isCode(e, "Conflict") && !isCode(e, "NotFound")) throw e;
      // Another replica wrote first: decide again from what it wrote (it may have done the same step).
      log.info({ secret: where }, "another replica changed the Secret first; reading it again");
      lostRace = true;
    }
  }
  if (content === undefined) throw new AppError("Unavailable", `${where} could not be read`);

  const cas = [content.bundle.caPem, ...(content.nextCa ? [content.nextCa.certPem] : [])];
  const trust = await patchCaBundle(api, { webhookConfigName: opts.webhookConfigName, caPem: cas, now, log });
  if (opts.caConfigMap !== undefined) {
    try {
      await publishCaConfigMap(api, { namespace, name: opts.caConfigMap, caPem: cas, now, log });
    } catch (e) {
      log.warn(
        { configMap: `${namespace}/${opts.caConfigMap}`, err: isAppError(e) ? e.message : String(e) },
        "cannot publish the CA in its ConfigMap; until it is, dvctl needs --ca-file",
      );
    }
  }
  // What the API server now trusts: read again, since another replica may have patched it too.
  const served = await serve(content.bundle, await readConfig(api, opts.webhookConfigName), opts);
  return {
    step,
    caBundlePatched: trust.patched,
    served,
    notAfter: certValidity(content.bundle.certPem).notAfter,
  };
}

const messageFor = {
  "renew-serving": "renewing the serving certificate under the same CA",
  "stage-ca": "staging a new CA: adding it to the caBundle before any certificate it signs is served",
  "promote-ca": "promoting the new CA: storing a serving certificate it signed",
} as const;

/** The Secret to write for `plan`, or undefined when it stays as it is. */
function nextSecret(
  content: SecretContent,
  plan: RotationStep,
  opts: CertificateRenewalOptions,
  now: Date,
): V1Secret | undefined {
  const { namespace, secretName } = opts;
  const data = content.secret.data ?? {};
  const staged: Record<string, string> = content.nextCa
    ? { [NEXT_CA_CERT_KEY]: data[NEXT_CA_CERT_KEY]!, [NEXT_CA_KEY_KEY]: data[NEXT_CA_KEY_KEY]! }
    : {};
  const certOpts = certificateOptions(opts, now);
  switch (plan.action) {
    case "renew-serving": {
      const ca = { certPem: content.bundle.caPem, keyPem: content.bundle.caKeyPem! };
      return secretFor(namespace, secretName, issueServing(certOpts, ca), content.secret, staged);
    }
    case "stage-ca": {
      const ca = newCa(certOpts);
      return secretFor(namespace, secretName, content.bundle, content.secret, {
        [NEXT_CA_CERT_KEY]: b64(ca.certPem),
        [NEXT_CA_KEY_KEY]: b64(ca.keyPem),
      });
    }
    case "promote-ca":
      return secretFor(namespace, secretName, issueServing(certOpts, content.nextCa!), content.secret);
    case "wait":
    case "none":
      return undefined;
  }
}

async function serve(
  bundle: ServingBundle,
  config: V1MutatingWebhookConfiguration,
  opts: CertificateRenewalOptions,
): Promise<CheckResult["served"]> {
  const [cert, key] = await Promise.all([readOr(opts.certFile), readOr(opts.keyFile)]);
  if (cert === bundle.certPem && key === bundle.keyPem) return "unchanged";
  const notAfter = certValidity(bundle.certPem).notAfter.toISOString();
  if (!bundlesVerify(config, bundle.certPem)) {
    opts.log.warn(
      { webhookConfiguration: opts.webhookConfigName, notAfter },
      "the Secret's certificate is not yet verified by every caBundle; still serving the current one",
    );
    return "untrusted";
  }
  // The key last: a reload between the two writes finds a mismatched pair and keeps the current one.
  await writePemFiles(dirname(opts.certFile), [
    { name: basename(opts.certFile), content: bundle.certPem, secret: false },
  ]);
  await writePemFiles(dirname(opts.keyFile), [
    { name: basename(opts.keyFile), content: bundle.keyPem, secret: true },
  ]);
  const installed = opts.reload();
  opts.log.info({ certFile: opts.certFile, notAfter, installed }, "serving the certificate from the Secret");
  return "installed";
}

export interface RenewalLoopOptions extends CertificateRenewalOptions {
  /** Default {@link DEFAULT_CHECK_INTERVAL_MS}. */
  readonly intervalMs?: number;
  /** Each wait is the interval times a factor drawn from [1 - jitter, 1 + jitter]. Default 0.2. */
  readonly jitter?: number;
  /** Delay of the first check; default 0 (a check right away reports missing RBAC at once). */
  readonly initialDelayMs?: number;
  /** Random source in [0, 1); default Math.random. */
  readonly random?: () => number;
  /** Called after each check, with its result or its error (for tests and metrics). */
  readonly onCheck?: (result: CheckResult | Error) => void;
}

export interface RenewalLoop {
  /** Runs a check now, after the one in flight if any. */
  checkNow(): Promise<CheckResult | Error>;
  /** Stops the timer and waits for a check in flight. */
  stop(): Promise<void>;
}

/** Starts the periodic check ({@link checkCertificates}); its timer does not keep the process alive. */
export function startCertificateRenewal(api: CertsApi, opts: RenewalLoopOptions): RenewalLoop {
  const interval = opts.intervalMs ?? DEFAULT_CHECK_INTERVAL_MS;
  const jitter = opts.jitter ?? DEFAULT_JITTER;
  const random = opts.random ?? Math.random;
  const spread = (ms: number): number => Math.max(1, Math.round(ms * (1 - jitter + 2 * jitter * random())));
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let chain: Promise<unknown> = Promise.resolve();

  const run = (): Promise<CheckResult | Error> => {
    const p = chain.then(async () => {
      try {
        const r = await checkCertificates(api, opts);
        opts.log.debug(
          { step: r.step, served: r.served, notAfter: r.notAfter.toISOString() },
          "certificate check done",
        );
        return r;
      } catch (e) {
        const err = e instanceof Error ? e : new Error(String(e));
        opts.log.error(
          {
            err: isAppError(e) ? e.message : err.message,
            retryInSeconds: Math.round(Math.min(interval, MAX_RETRY_MS) / 1000),
          },
          "certificate check failed; retrying",
        );
        return err;
      }
    });
    chain = p;
    return p;
  };
  const schedule = (ms: number): void => {
    if (stopped) return;
    timer = setTimeout(() => {
      void run().then((r) => {
        opts.onCheck?.(r);
        schedule(spread(r instanceof Error ? Math.min(interval, MAX_RETRY_MS) : interval));
      });
    }, ms);
    timer.unref();
  };
  schedule(opts.initialDelayMs ?? 0);
  opts.log.info(
    {
      secret: `${opts.namespace}/${opts.secretName}`,
      webhookConfiguration: opts.webhookConfigName,
      intervalSeconds: interval / 1000,
    },
    "renewing the serving certificate while running",
  );
  return {
    checkNow: run,
    stop: async () => {
      stopped = true;
      clearTimeout(timer);
      await chain;
    },
  };
}

function readContent(
  secret: V1Secret | undefined,
  opts: CertificateRenewalOptions,
): SecretContent | undefined {
  if (secret === undefined || secret.type !== "kubernetes.io/tls") return undefined;
  const read = readServingSecret(secret, opts);
  if (!read.ok) return undefined;
  const nextCert = decode(secret.data?.[NEXT_CA_CERT_KEY]);
  const nextKey = decode(secret.data?.[NEXT_CA_KEY_KEY]);
  const nextCa =
    nextCert !== "" && keyMatchesCert(nextCert, nextKey) ? { certPem: nextCert, keyPem: nextKey } : undefined;
  return { secret, bundle: read.bundle, ...(nextCa ? { nextCa } : {}) };
}

function rotationState(content: SecretContent, config: V1MutatingWebhookConfiguration) {
  return {
    ca: { ...certValidity(content.bundle.caPem), hasKey: content.bundle.caKeyPem !== undefined },
    serving: certValidity(content.bundle.certPem),
    ...(content.nextCa ? { nextCa: certValidity(content.nextCa.certPem) } : {}),
    nextCaTrusted: content.nextCa !== undefined && bundlesHold(config, content.nextCa.certPem),
  };
}

function policyOf(opts: CertificateRenewalOptions): RotationPolicy {
  return {
    renewBeforeMs: opts.renewBeforeMs ?? DEFAULT_RENEW_BEFORE_MS,
    caRenewBeforeMs: opts.caRenewBeforeMs ?? DEFAULT_CA_RENEW_BEFORE_MS,
    caOverlapMs: opts.caOverlapMs ?? DEFAULT_CA_OVERLAP_MS,
  };
}

function certificateOptions(opts: CertificateRenewalOptions, now: Date) {
  return {
    namespace: opts.namespace,
    service: opts.service,
    now,
    renewBefore: opts.renewBeforeMs ?? DEFAULT_RENEW_BEFORE_MS,
    ...(opts.validityMs !== undefined ? { validityMs: opts.validityMs } : {}),
    ...(opts.caValidityMs !== undefined ? { caValidityMs: opts.caValidityMs } : {}),
    ...(opts.extraDnsNames ? { extraDnsNames: opts.extraDnsNames } : {}),
    ...(opts.extraIps ? { extraIps: opts.extraIps } : {}),
  };
}

async function readConfig(api: CertsApi, name: string): Promise<V1MutatingWebhookConfiguration> {
  const config = await api.readMutatingWebhookConfiguration(name);
  if (config === undefined)
    throw new AppError(
      "NotFound",
      `MutatingWebhookConfiguration "${name}" not found; apply the webhook manifests first or check the name`,
    );
  return config;
}

async function readOr(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch {
    return undefined;
  }
}

function b64(s: string): string {
  return Buffer.from(s, "utf8").toString("base64");
}
