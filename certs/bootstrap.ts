/**
 * The in-cluster certificate bootstrap, as kube-webhook-certgen does it: keep a CA and a serving
 * certificate in a `kubernetes.io/tls` Secret, and put the CA into the `caBundle` of every webhook of
 * the MutatingWebhookConfiguration.
 *
 * The Kubernetes API is reached through the small {@link CertsApi} interface, implemented for a real
 * cluster by `kube-client.ts` and faked in tests. Key material is never logged.
 */
import type {
  V1ConfigMap,
  V1MutatingWebhookConfiguration,
  V1ObjectMeta,
  V1Secret,
} from "@kubernetes/client-node";
import { AppError, isAppError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import {
  DEFAULT_RENEW_BEFORE_MS,
  type CertificatePair,
  certExpiry,
  certMatchesCa,
  certSubjectAltNames,
  generateCa,
  generateServingCert,
  keyMatchesCert,
  needsRenewal,
  serviceDnsNames,
  splitPemCertificates,
} from "./generate.js";

/** Secret type and keys, as the kubelet and cert-manager use them. */
export const TLS_SECRET_TYPE = "kubernetes.io/tls";
export const TLS_CERT_KEY = "tls.crt";
export const TLS_KEY_KEY = "tls.key";
export const CA_CERT_KEY = "ca.crt";
/**
 * The CA's private key, kept so that a serving certificate can be renewed under the same CA (no
 * caBundle change). Neither the webhook's files nor the agents' volume include it.
 */
export const CA_KEY_KEY = "ca.key";
/** A CA staged for the next rotation and its key (rotation.ts), until it is promoted to `ca.crt`. */
export const NEXT_CA_CERT_KEY = "next-ca.crt";
export const NEXT_CA_KEY_KEY = "next-ca.key";

/** How many times a read-modify-write is retried after losing a race to another writer. */
export const MAX_ATTEMPTS = 3;

/** One RFC 6902 operation. */
export interface JsonPatchOperation {
  readonly op: "add" | "replace" | "remove" | "test";
  readonly path: string;
  readonly value?: unknown;
}

/**
 * The Kubernetes API calls the bootstrap needs. Implementations throw {@link AppError}s: `Conflict`
 * for HTTP 409 (exists already, or a stale resourceVersion), `NotFound` for a missing object on write,
 * `Forbidden`, `Unauthenticated`, `InvalidArgument` (400/422) and `Unavailable` for the rest.
 */
export interface CertsApi {
  /** The Secret, or undefined when it does not exist. */
  readSecret(namespace: string, name: string): Promise<V1Secret | undefined>;
  /** Creates the Secret; `Conflict` when one with that name exists. */
  createSecret(namespace: string, secret: V1Secret): Promise<V1Secret>;
  /** Replaces the Secret; `Conflict` when `metadata.resourceVersion` is no longer current. */
  replaceSecret(namespace: string, name: string, secret: V1Secret): Promise<V1Secret>;
  /** The configuration, or undefined when it does not exist. */
  readMutatingWebhookConfiguration(name: string): Promise<V1MutatingWebhookConfiguration | undefined>;
  /** Applies a JSON patch (`application/json-patch+json`). */
  patchMutatingWebhookConfiguration(
    name: string,
    patch: readonly JsonPatchOperation[],
  ): Promise<V1MutatingWebhookConfiguration>;
  /** The ConfigMap, or undefined when it does not exist. */
  readConfigMap(namespace: string, name: string): Promise<V1ConfigMap | undefined>;
  /** Creates the ConfigMap; `Conflict` when one with that name exists. */
  createConfigMap(namespace: string, configMap: V1ConfigMap): Promise<V1ConfigMap>;
  /** Replaces the ConfigMap; `Conflict` when `metadata.resourceVersion` is no longer current. */
  replaceConfigMap(namespace: string, name: string, configMap: V1ConfigMap): Promise<V1ConfigMap>;
}

export interface EnsureServingSecretOptions {
  /** Namespace of both the Secret and the webhook's Service. */
  readonly namespace: string;
  readonly secretName: string;
  /** Name of the webhook's Service: the certificate covers its four DNS names. */
  readonly service: string;
  /** The current time; validity is judged against it and new certificates start at it. */
  readonly now: Date;
  /** Renew when the certificate or the CA expires within this many milliseconds. Default 30 days. */
  readonly renewBefore?: number;
  /** More SANs for new serving certificates (not required of an existing one). */
  readonly extraDnsNames?: readonly string[];
  readonly extraIps?: readonly string[];
  /** Validity of new certificates; defaults from `generate.ts` (CA 10 years, serving 1 year). */
  readonly caValidityDays?: number;
  readonly validityDays?: number;
  /** Validities in ms instead of days (tests with certificates that live seconds). */
  readonly caValidityMs?: number;
  readonly validityMs?: number;
  readonly log?: Logger;
}

/** PEM text of a serving bundle. */
export interface ServingBundle {
  readonly caPem: string;
  readonly certPem: string;
  readonly keyPem: string;
  /** The CA's key, when the Secret keeps it. */
  readonly caKeyPem?: string;
}

export interface ServingSecretResult extends ServingBundle {
  /**
   * `created`: there was no Secret; `reused`: it was valid and left unchanged; `renewed`: it was
   * replaced by a new CA and certificate (see `reason`); `adopted`: another writer created or renewed
   * it while this one ran, and its valid content is used.
   */
  readonly outcome: "created" | "reused" | "renewed" | "adopted";
  /** Why the previous content could not be kept (for `renewed`). */
  readonly reason?: string;
  /** notAfter of the serving certificate. */
  readonly notAfter: Date;
}

/**
 * Makes sure `namespace/secretName` holds a valid serving bundle for `service` and returns it.
 *
 * - No Secret: generate a CA and a serving certificate and create it. If another replica created it
 *   first (409), read theirs and use it when valid.
 * - A Secret whose content is valid at `now` (see {@link inspectServingSecret}) is reused unchanged.
 * - A Secret whose only fault is a serving certificate within the renewal window, and which keeps
 *   the key of a CA that is not itself within it (`ca.key`), gets a new serving certificate from the
 *   same CA: the caBundle needs no change. A CA staged for rotation (`next-ca.*`) is kept.
 * - Otherwise everything is regenerated and the Secret replaced (its data then holds exactly
 *   `tls.crt`, `tls.key`, `ca.crt` and `ca.key`), guarded by resourceVersion; on a conflict, re-read
 *   and decide again.
 *
 * A Secret of another type than `kubernetes.io/tls` is an error: its type cannot be changed in place.
 */
export async function ensureServingSecret(
  api: CertsApi,
  opts: EnsureServingSecretOptions,
): Promise<ServingSecretResult> {
  const { namespace, secretName: name } = opts;
  const where = `Secret ${namespace}/${name}`;
  let fresh: ServingBundle | undefined;
  const generate = (): ServingBundle => (fresh ??= generateBundle(opts));
  let lostRace = false;

  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    const existing = await api.readSecret(namespace, name);
    if (existing === undefined) {
      const bundle = generate();
      try {
        await api.createSecret(namespace, secretFor(namespace, name, bundle));
        opts.log?.info({ secret: where, notAfter: certExpiry(bundle.certPem) }, "created the serving Secret");
        return result("created", bundle);
      } catch (e) {
        if (!isCode(e, "Conflict")) throw e;
        opts.log?.info({ secret: where }, "another writer created the Secret first; reading theirs");
        lostRace = true;
        continue;
      }
    }

    if ((existing.type ?? "Opaque") !== TLS_SECRET_TYPE)
      throw new AppError(
        "Conflict",
        `${where} exists with type "${existing.type ?? "Opaque"}", not "${TLS_SECRET_TYPE}"; delete it or choose another secret name`,
      );
    const verdict = inspectServingSecret(existing, opts);
    if (verdict.ok) {
      opts.log?.info(
        { secret: where, notAfter: verdict.notAfter },
        "the serving Secret is valid; reusing it",
      );
      return result(lostRace ? "adopted" : "reused", verdict.bundle);
    }

    const sameCa = verdict.servingOnly ? keptCa(existing, opts) : undefined;
    const bundle = sameCa !== undefined ? issueServing(opts, sameCa) : generate();
    opts.log?.info(
      { secret: where, reason: verdict.reason },
      sameCa !== undefined
        ? "renewing the serving certificate under the same CA"
        : "regenerating the CA and serving certificate",
    );
    const keep = sameCa !== undefined ? pickData(existing, [NEXT_CA_CERT_KEY, NEXT_CA_KEY_KEY]) : {};
    try {
      await api.replaceSecret(namespace, name, secretFor(namespace, name, bundle, existing, keep));
      return result("renewed", bundle, verdict.reason);
    } catch (e) {
      if (!isCode(e, "Conflict") && !isCode(e, "NotFound")) throw e;
      opts.log?.info({ secret: where }, "the Secret changed while renewing it; reading it again");
      lostRace = true;
    }
  }
  throw new AppError(
    "Conflict",
    `${where} kept changing while it was being written (${MAX_ATTEMPTS} attempts); is another bootstrap running in a loop?`,
  );
}

export type SecretVerdict =
  | { readonly ok: true; readonly bundle: ServingBundle; readonly notAfter: Date }
  | {
      readonly ok: false;
      readonly reason: string;
      /** True when the only fault is the serving certificate's expiry: the CA may issue another. */
      readonly servingOnly?: boolean;
    };

/**
 * Pure: whether a Secret's content can be kept at `now`. It must hold non-empty `tls.crt`, `tls.key`
 * and `ca.crt`; the key must belong to the certificate; the certificate must be issued by the CA and
 * cover every DNS name of the Service; neither the certificate nor the CA may expire within
 * `renewBefore`.
 */
export function inspectServingSecret(
  secret: Pick<V1Secret, "data">,
  opts: Pick<EnsureServingSecretOptions, "namespace" | "service" | "now" | "renewBefore">,
): SecretVerdict {
  const renewBefore = opts.renewBefore ?? DEFAULT_RENEW_BEFORE_MS;
  const read = readServingSecret(secret, opts);
  if (!read.ok) return read;
  const { bundle, notAfter } = read;
  if (needsRenewal(bundle.caPem, opts.now, renewBefore))
    return {
      ok: false,
      reason: `the CA expires at ${certExpiry(bundle.caPem).toISOString()}, within the renewal window`,
    };
  if (needsRenewal(bundle.certPem, opts.now, renewBefore))
    return {
      ok: false,
      reason: `the certificate expires at ${notAfter.toISOString()}, within the renewal window`,
      servingOnly: true,
    };
  return { ok: true, bundle, notAfter };
}

/**
 * Pure: {@link inspectServingSecret} without the times: the keys are there, the key belongs to the
 * certificate, the CA issued it and it covers the Service's names. The bundle includes `ca.key` when
 * the Secret holds a key that belongs to `ca.crt`.
 */
export function readServingSecret(
  secret: Pick<V1Secret, "data">,
  opts: Pick<EnsureServingSecretOptions, "namespace" | "service">,
): SecretVerdict {
  const data = secret.data ?? {};
  const missing = [TLS_CERT_KEY, TLS_KEY_KEY, CA_CERT_KEY].filter((k) => !data[k]);
  if (missing.length > 0) return { ok: false, reason: `missing keys: ${missing.join(", ")}` };
  const bundle: ServingBundle = {
    certPem: decode(data[TLS_CERT_KEY]),
    keyPem: decode(data[TLS_KEY_KEY]),
    caPem: decode(data[CA_CERT_KEY]),
  };
  let notAfter: Date;
  let dns: string[];
  try {
    notAfter = certExpiry(bundle.certPem);
    dns = certSubjectAltNames(bundle.certPem).dns;
    certExpiry(bundle.caPem);
  } catch (e) {
    return { ok: false, reason: `unparsable certificate: ${(e as Error).message}` };
  }
  if (!keyMatchesCert(bundle.certPem, bundle.keyPem))
    return { ok: false, reason: `${TLS_KEY_KEY} is not the key of ${TLS_CERT_KEY}` };
  if (!certMatchesCa(bundle.certPem, bundle.caPem))
    return { ok: false, reason: `${TLS_CERT_KEY} is not issued by ${CA_CERT_KEY}` };
  const uncovered = serviceDnsNames(opts.service, opts.namespace).filter((n) => !dns.includes(n));
  if (uncovered.length > 0)
    return { ok: false, reason: `the certificate does not cover ${uncovered.join(", ")}` };
  const caKeyPem = decode(data[CA_KEY_KEY]);
  const withKey =
    caKeyPem !== "" && keyMatchesCert(bundle.caPem, caKeyPem) ? { ...bundle, caKeyPem } : bundle;
  return { ok: true, bundle: withKey, notAfter };
}

export interface PatchCaBundleOptions {
  readonly webhookConfigName: string;
  /**
   * The CA (PEM) that the API server must trust when it calls the webhooks, or several (the current
   * CA and one staged for rotation), in the order they are to appear.
   */
  readonly caPem: string | readonly string[];
  /** For deciding which previously trusted CAs have expired. Default: now. */
  readonly now?: Date;
  readonly log?: Logger;
}

export interface PatchCaBundleResult {
  /** Names of the webhooks whose caBundle was set. */
  readonly patched: readonly string[];
  /** Names of the webhooks that already had it. */
  readonly unchanged: readonly string[];
}

/**
 * Sets `clientConfig.caBundle` (base64 of `caPem`) on every webhook of the MutatingWebhookConfiguration,
 * with one JSON patch, and only where it differs. Each change is guarded by a `test` of the webhook's
 * name at that index, so a concurrent edit of the list fails the patch, which is then recomputed.
 * Throws `NotFound` when the configuration does not exist.
 */
export async function patchCaBundle(api: CertsApi, opts: PatchCaBundleOptions): Promise<PatchCaBundleResult> {
  const name = opts.webhookConfigName;
  for (let attempt = 1; ; attempt++) {
    const config = await api.readMutatingWebhookConfiguration(name);
    if (config === undefined)
      throw new AppError(
        "NotFound",
        `MutatingWebhookConfiguration "${name}" not found; apply the webhook manifests first or check the name`,
      );
    const plan = caBundlePatch(config, opts.caPem, opts.now ?? new Date());
    if (plan.patch.length === 0) {
      opts.log?.info(
        { webhookConfiguration: name, unchanged: plan.unchanged },
        "caBundle already up to date",
      );
      return { patched: [], unchanged: plan.unchanged };
    }
    try {
      await api.patchMutatingWebhookConfiguration(name, plan.patch);
      opts.log?.info({ webhookConfiguration: name, patched: plan.patched }, "caBundle patched");
      return { patched: plan.patched, unchanged: plan.unchanged };
    } catch (e) {
      if (attempt >= MAX_ATTEMPTS || !(isCode(e, "Conflict") || isCode(e, "InvalidArgument"))) throw e;
      opts.log?.info({ webhookConfiguration: name }, "the configuration changed while patching it; retrying");
    }
  }
}

/**
 * Pure: the JSON patch that makes every webhook trust `caPem`. A webhook keeps the other CAs its
 * bundle already holds until they expire: after a renewal, the webhook pods that have not yet
 * restarted still serve a certificate from the previous CA, and the API server must go on
 * trusting them until they have (`rollout restart` replaces them one by one).
 */
export function caBundlePatch(
  config: V1MutatingWebhookConfiguration,
  caPem: string | readonly string[],
  now: Date = new Date(),
): { patch: JsonPatchOperation[]; patched: string[]; unchanged: string[] } {
  const patch: JsonPatchOperation[] = [];
  const patched: string[] = [];
  const unchanged: string[] = [];
  (config.webhooks ?? []).forEach((webhook, i) => {
    const have = webhook.clientConfig?.caBundle;
    const bundle = trustBundle(caPem, have === undefined ? undefined : decode(have), now);
    if (bundle.unchanged) {
      unchanged.push(webhook.name);
      return;
    }
    const want = Buffer.from(bundle.text, "utf8").toString("base64");
    patch.push({ op: "test", path: `/webhooks/${i}/name`, value: webhook.name });
    if (webhook.clientConfig === undefined)
      patch.push({ op: "add", path: `/webhooks/${i}/clientConfig`, value: { caBundle: want } });
    else
      patch.push({
        op: have === undefined ? "add" : "replace",
        path: `/webhooks/${i}/clientConfig/caBundle`,
        value: want,
      });
    patched.push(webhook.name);
  });
  return { patch, patched, unchanged };
}

/**
 * Pure: the PEM bundle that trusts `caPem` first (each of them, when several), then the other CAs of
 * `previous` (a PEM bundle) that have not expired at `now`; `unchanged` when `previous` holds exactly
 * those already. A single CA is kept as given (its line endings too).
 */
export function trustBundle(
  caPem: string | readonly string[],
  previous: string | undefined,
  now: Date,
): { text: string; unchanged: boolean } {
  const given = typeof caPem === "string" ? [caPem] : [...caPem];
  const first = given[0] ?? "";
  const required = [...new Set(given.map(normalizePem))];
  const have = pemCertificates(previous ?? "");
  const kept = have.filter((c) => !required.includes(c) && !expired(c, now));
  const unchanged = previous !== undefined && have.join("\n") === [...required, ...kept].join("\n");
  const rest = [...required.slice(1), ...kept];
  return { text: rest.length === 0 ? first : `${first.trimEnd()}\n${rest.join("\n")}\n`, unchanged };
}

/** True when every webhook of the configuration has a caBundle that verifies `certPem`. */
export function bundlesVerify(config: V1MutatingWebhookConfiguration, certPem: string): boolean {
  return (config.webhooks ?? []).every((w) => certMatchesCa(certPem, decode(w.clientConfig?.caBundle)));
}

/** True when the caBundle of every webhook of the configuration holds the CA `caPem`. */
export function bundlesHold(config: V1MutatingWebhookConfiguration, caPem: string): boolean {
  const ca = normalizePem(caPem);
  return (config.webhooks ?? []).every((w) => pemCertificates(decode(w.clientConfig?.caBundle)).includes(ca));
}

function normalizePem(pem: string): string {
  return pem.replace(/\r\n/g, "\n").trim();
}

/** The certificates of a PEM bundle, each normalized; anything else in it is dropped. */
function pemCertificates(bundle: string): string[] {
  return splitPemCertificates(normalizePem(bundle)).map(normalizePem);
}

/** True when the certificate has expired at `now`, or cannot be read (and so cannot be trusted usefully). */
function expired(pem: string, now: Date): boolean {
  try {
    return certExpiry(pem).getTime() <= now.getTime();
  } catch {
    return true;
  }
}

type CertificateOptions = Pick<
  EnsureServingSecretOptions,
  | "service"
  | "namespace"
  | "now"
  | "validityDays"
  | "validityMs"
  | "caValidityDays"
  | "caValidityMs"
  | "extraDnsNames"
  | "extraIps"
>;

/** A new CA for the Service, with its key. */
export function newCa(opts: CertificateOptions): CertificatePair {
  return generateCa({
    commonName: `${opts.service}.${opts.namespace}.svc CA`,
    validityDays: opts.caValidityDays,
    validityMs: opts.caValidityMs,
    now: opts.now,
  });
}

/** A new serving certificate from `ca`, as a bundle that keeps the CA's key. */
export function issueServing(opts: CertificateOptions, ca: CertificatePair): ServingBundle {
  const serving = generateServingCert({
    ca,
    service: opts.service,
    namespace: opts.namespace,
    validityDays: opts.validityDays,
    validityMs: opts.validityMs,
    extraDnsNames: opts.extraDnsNames,
    extraIps: opts.extraIps,
    now: opts.now,
  });
  return { caPem: ca.certPem, caKeyPem: ca.keyPem, certPem: serving.certPem, keyPem: serving.keyPem };
}

function generateBundle(opts: CertificateOptions): ServingBundle {
  return issueServing(opts, newCa(opts));
}

/**
 * The Secret's CA with its key, when it keeps a key that belongs to it and the CA is not itself
 * within the renewal window; undefined otherwise.
 */
export function keptCa(
  secret: Pick<V1Secret, "data">,
  opts: Pick<EnsureServingSecretOptions, "now" | "renewBefore">,
): CertificatePair | undefined {
  const certPem = decode(secret.data?.[CA_CERT_KEY]);
  const keyPem = decode(secret.data?.[CA_KEY_KEY]);
  if (keyPem === "" || !keyMatchesCert(certPem, keyPem)) return undefined;
  if (needsRenewal(certPem, opts.now, opts.renewBefore ?? DEFAULT_RENEW_BEFORE_MS)) return undefined;
  return { certPem, keyPem };
}

function pickData(secret: V1Secret, keys: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of keys) {
    const v = secret.data?.[k];
    if (v) out[k] = v;
  }
  return out;
}

/**
 * Metadata of an object the bootstrap writes: its labels and annotations kept, ours added, and the
 * resourceVersion it was read at, so that a replace loses no one else's concurrent change.
 */
export function managedMetadata(
  namespace: string,
  name: string,
  previous?: { metadata?: V1ObjectMeta },
): V1ObjectMeta {
  return {
    name,
    namespace,
    labels: { ...previous?.metadata?.labels, "app.kubernetes.io/managed-by": "dynamic-volumes-certs" },
    ...(previous?.metadata?.annotations ? { annotations: previous.metadata.annotations } : {}),
    ...(previous?.metadata?.resourceVersion ? { resourceVersion: previous.metadata.resourceVersion } : {}),
  };
}

/**
 * The Secret holding `bundle` (`tls.crt`, `tls.key`, `ca.crt`, and `ca.key` when the bundle has
 * it) plus `extra` data (base64 already), with the metadata of `previous` (see managedMetadata).
 */
export function secretFor(
  namespace: string,
  name: string,
  bundle: ServingBundle,
  previous?: V1Secret,
  extra: Record<string, string> = {},
): V1Secret {
  const b64 = (s: string): string => Buffer.from(s, "utf8").toString("base64");
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: managedMetadata(namespace, name, previous),
    type: TLS_SECRET_TYPE,
    data: {
      [TLS_CERT_KEY]: b64(bundle.certPem),
      [TLS_KEY_KEY]: b64(bundle.keyPem),
      [CA_CERT_KEY]: b64(bundle.caPem),
      ...(bundle.caKeyPem !== undefined ? { [CA_KEY_KEY]: b64(bundle.caKeyPem) } : {}),
      ...extra,
    },
  };
}

function result(
  outcome: ServingSecretResult["outcome"],
  bundle: ServingBundle,
  reason?: string,
): ServingSecretResult {
  return { outcome, ...bundle, notAfter: certExpiry(bundle.certPem), ...(reason ? { reason } : {}) };
}

export function decode(b64: string | undefined): string {
  return Buffer.from(b64 ?? "", "base64").toString("utf8");
}

export function isCode(e: unknown, code: AppError["code"]): boolean {
  return isAppError(e) && e.code === code;
}
