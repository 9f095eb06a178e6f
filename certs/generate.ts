/**
 * Certificates for the webhook (docs/design.md "Webhook", "Certificates"): a self-signed CA and a serving
 * certificate for the webhook's Service, as PEM text, plus the checks the bootstrap uses to decide
 * whether an existing pair can be kept.
 *
 * Pure apart from CPU and randomness: no files, no network, no logging. Functions that depend on the
 * time take it as an argument (`now`); RSA keys come from node's native generator, which is much
 * faster than node-forge's pure-JavaScript one, and node-forge builds and signs the certificates.
 */
import { X509Certificate, createPrivateKey, generateKeyPairSync, randomBytes } from "node:crypto";
import { isIP } from "node:net";
import forge from "node-forge";
import { AppError } from "../shared/errors.js";

/** A certificate and its private key, both PEM. */
export interface CertificatePair {
  /** PEM `CERTIFICATE`. */
  readonly certPem: string;
  /** PEM `PRIVATE KEY` (PKCS#8, RSA 2048). */
  readonly keyPem: string;
}

export interface CaOptions {
  readonly commonName: string;
  /** Default {@link DEFAULT_CA_VALIDITY_DAYS} (10 years). */
  readonly validityDays?: number;
  /** Validity in milliseconds instead of days (tests with certificates that live seconds). */
  readonly validityMs?: number;
  /** Start of validity; default the current time. The certificate is backdated by {@link BACKDATE_MS}. */
  readonly now?: Date;
}

export interface ServingCertOptions {
  /** The CA that signs the certificate (its key is needed). */
  readonly ca: CertificatePair;
  /** Name of the Kubernetes Service in front of the webhook. */
  readonly service: string;
  readonly namespace: string;
  /**
   * Default {@link DEFAULT_SERVING_VALIDITY_DAYS} (1 year). The certificate never outlives its CA:
   * notAfter is at most the CA's.
   */
  readonly validityDays?: number;
  /** Validity in milliseconds instead of days (tests with certificates that live seconds). */
  readonly validityMs?: number;
  /** DNS SANs added after the Service names, e.g. `localhost`. */
  readonly extraDnsNames?: readonly string[];
  /** IP SANs, e.g. `127.0.0.1`. */
  readonly extraIps?: readonly string[];
  /** Start of validity; default the current time. The certificate is backdated by {@link BACKDATE_MS}. */
  readonly now?: Date;
}

export const DEFAULT_CA_VALIDITY_DAYS = 3650;
export const DEFAULT_SERVING_VALIDITY_DAYS = 365;
/** notBefore is set this far in the past, so that a peer whose clock lags a little accepts a new certificate. */
export const BACKDATE_MS = 5 * 60 * 1000;
/** Renew a certificate this long before it expires (30 days). */
export const DEFAULT_RENEW_BEFORE_MS = 30 * 24 * 60 * 60 * 1000;

const DAY_MS = 24 * 60 * 60 * 1000;
const RSA_BITS = 2048;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_NAME = /^(?=.{1,253}$)(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/i;

/**
 * The DNS names the API server may use to reach a Service, in this order:
 * `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc`, `<svc>.<ns>.svc.cluster.local`.
 */
export function serviceDnsNames(service: string, namespace: string): string[] {
  return [
    service,
    `${service}.${namespace}`,
    `${service}.${namespace}.svc`,
    `${service}.${namespace}.svc.cluster.local`,
  ];
}

/** Generates a self-signed CA (basicConstraints cA, keyCertSign + cRLSign). */
export function generateCa(opts: CaOptions): CertificatePair {
  if (opts.commonName.trim() === "")
    throw new AppError("InvalidArgument", "the CA common name must not be empty");
  const ms = validityMs(opts, DEFAULT_CA_VALIDITY_DAYS);
  const key = generateRsaKey();
  const cert = newCertificate(key.publicKey, opts.now ?? new Date(), ms);
  const subject = [{ name: "commonName", value: opts.commonName }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: "basicConstraints", cA: true, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
    { name: "subjectKeyIdentifier" },
  ]);
  cert.sign(key.privateKey, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem: key.pem };
}

/**
 * Generates a serving certificate signed by `ca`. SANs: exactly {@link serviceDnsNames}, then
 * `extraDnsNames`, then `extraIps`. keyUsage digitalSignature + keyEncipherment, extKeyUsage
 * serverAuth, basicConstraints cA false.
 */
export function generateServingCert(opts: ServingCertOptions): CertificatePair {
  validateServingNames(opts);
  const extraDns = opts.extraDnsNames ?? [];
  const extraIps = opts.extraIps ?? [];
  const ms = validityMs(opts, DEFAULT_SERVING_VALIDITY_DAYS);
  const ca = parseCa(opts.ca);
  const key = generateRsaKey();
  const cert = newCertificate(key.publicKey, opts.now ?? new Date(), ms);
  // A certificate that outlives its CA stops verifying when the CA expires, whatever it says.
  if (cert.validity.notAfter.getTime() > ca.cert.validity.notAfter.getTime())
    cert.validity.notAfter = new Date(ca.cert.validity.notAfter.getTime());
  const dnsNames = unique([...serviceDnsNames(opts.service, opts.namespace), ...extraDns]);
  cert.setSubject([{ name: "commonName", value: `${opts.service}.${opts.namespace}.svc` }]);
  cert.setIssuer(ca.cert.subject.attributes);
  cert.setExtensions([
    { name: "basicConstraints", cA: false, critical: true },
    { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
    { name: "extKeyUsage", serverAuth: true },
    {
      name: "subjectAltName",
      altNames: [
        ...dnsNames.map((value) => ({ type: 2, value })),
        ...unique(extraIps).map((ip) => ({ type: 7, ip })),
      ],
    },
    { name: "subjectKeyIdentifier" },
    { name: "authorityKeyIdentifier", keyIdentifier: subjectKeyId(ca.cert) },
  ]);
  cert.sign(ca.key, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem: key.pem };
}

/**
 * Throws InvalidArgument, naming the value, unless `service` and `namespace` are DNS-1123 labels,
 * every extra DNS name is a valid DNS name and every extra IP an IPv4 or IPv6 address.
 */
export function validateServingNames(
  opts: Pick<ServingCertOptions, "service" | "namespace" | "extraDnsNames" | "extraIps">,
): void {
  for (const [what, value] of [
    ["service", opts.service],
    ["namespace", opts.namespace],
  ] as const) {
    if (!DNS1123_LABEL.test(value))
      throw new AppError(
        "InvalidArgument",
        `${what} "${value}" is not a valid Kubernetes name (a DNS-1123 label)`,
      );
  }
  for (const name of opts.extraDnsNames ?? []) {
    if (!DNS_NAME.test(name))
      throw new AppError("InvalidArgument", `"${name}" is not a valid DNS name for a SAN`);
  }
  for (const ip of opts.extraIps ?? []) {
    if (isIP(ip) === 0) throw new AppError("InvalidArgument", `"${ip}" is not an IPv4 or IPv6 address`);
  }
}

/** The notAfter of the first certificate in `pem`. Throws InvalidArgument when it cannot be read. */
export function certExpiry(pem: string): Date {
  return readCertificate(pem).validity.notAfter;
}

/** notBefore and notAfter of the first certificate in `pem`. Throws InvalidArgument when it cannot be read. */
export function certValidity(pem: string): { notBefore: Date; notAfter: Date } {
  const v = readCertificate(pem).validity;
  return { notBefore: v.notBefore, notAfter: v.notAfter };
}

/**
 * True when the certificate must be replaced at `now`: it expires within `renewBeforeMs`
 * (default 30 days), is not yet valid (notBefore more than {@link BACKDATE_MS} ahead), or cannot be read.
 */
export function needsRenewal(
  pem: string,
  now: Date,
  renewBeforeMs: number = DEFAULT_RENEW_BEFORE_MS,
): boolean {
  let cert: forge.pki.Certificate;
  try {
    cert = readCertificate(pem);
  } catch {
    return true;
  }
  const t = now.getTime();
  return (
    cert.validity.notAfter.getTime() - renewBeforeMs <= t ||
    cert.validity.notBefore.getTime() > t + BACKDATE_MS
  );
}

/** DNS and IP SANs of the first certificate in `pem`. Throws InvalidArgument when it cannot be read. */
export function certSubjectAltNames(pem: string): { dns: string[]; ips: string[] } {
  const ext: { altNames?: { type: number; value?: string; ip?: string }[] } | undefined =
    readCertificate(pem).getExtension("subjectAltName");
  const dns: string[] = [];
  const ips: string[] = [];
  for (const n of ext?.altNames ?? []) {
    if (n.type === 2 && n.value !== undefined) dns.push(n.value);
    else if (n.type === 7 && n.ip !== undefined) ips.push(n.ip);
  }
  return { dns, ips };
}

/**
 * True when `certPem` was issued by (one of the certificates in) `caPem`: the issuer name matches the
 * CA's subject and the signature verifies with the CA's public key. False for unreadable input.
 */
export function certMatchesCa(certPem: string, caPem: string): boolean {
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(certPem);
  } catch {
    return false;
  }
  for (const pem of splitPemCertificates(caPem)) {
    try {
      const ca = new X509Certificate(pem);
      if (leaf.checkIssued(ca) && leaf.verify(ca.publicKey)) return true;
    } catch {
      // an unreadable certificate in a bundle is simply not a match
    }
  }
  return false;
}

/** True when `keyPem` is the private key of the certificate `certPem`. False for unreadable input. */
export function keyMatchesCert(certPem: string, keyPem: string): boolean {
  try {
    return new X509Certificate(certPem).checkPrivateKey(createPrivateKey(keyPem));
  } catch {
    return false;
  }
}

/** The `CERTIFICATE` blocks of a PEM bundle, in order. */
export function splitPemCertificates(pem: string): string[] {
  return (
    pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)?.map((b) => `${b}\n`) ?? []
  );
}

function readCertificate(pem: string): forge.pki.Certificate {
  const first = splitPemCertificates(pem)[0];
  if (first === undefined) throw new AppError("InvalidArgument", "no PEM CERTIFICATE block found");
  try {
    return forge.pki.certificateFromPem(first);
  } catch (e) {
    throw new AppError("InvalidArgument", `the certificate cannot be parsed: ${(e as Error).message}`, {
      cause: e,
    });
  }
}

function parseCa(ca: CertificatePair): { cert: forge.pki.Certificate; key: forge.pki.rsa.PrivateKey } {
  const cert = readCertificate(ca.certPem);
  let key: forge.pki.rsa.PrivateKey;
  try {
    // node-forge reads PKCS#1 only; go through node to accept PKCS#1, PKCS#8 and SEC1 alike.
    const pkcs1 = createPrivateKey(ca.keyPem).export({ type: "pkcs1", format: "pem" }).toString();
    key = forge.pki.privateKeyFromPem(pkcs1);
  } catch (e) {
    throw new AppError(
      "InvalidArgument",
      "the CA private key cannot be parsed (an RSA key in PEM is needed)",
      {
        cause: e,
      },
    );
  }
  if (!keyMatchesCert(ca.certPem, ca.keyPem))
    throw new AppError("InvalidArgument", "the CA private key does not belong to the CA certificate");
  const basic: { cA?: boolean } | undefined = cert.getExtension("basicConstraints");
  if (basic?.cA !== true)
    throw new AppError("InvalidArgument", "the CA certificate is not a CA (basicConstraints cA is not true)");
  return { cert, key };
}

function subjectKeyId(cert: forge.pki.Certificate): string {
  const ext: { subjectKeyIdentifier?: string } | undefined = cert.getExtension("subjectKeyIdentifier");
  return ext?.subjectKeyIdentifier !== undefined
    ? forge.util.hexToBytes(ext.subjectKeyIdentifier)
    : cert.generateSubjectKeyIdentifier().getBytes();
}

function generateRsaKey(): {
  publicKey: forge.pki.rsa.PublicKey;
  privateKey: forge.pki.rsa.PrivateKey;
  pem: string;
} {
  const { publicKey, privateKey } = generateKeyPairSync("rsa", {
    modulusLength: RSA_BITS,
    publicKeyEncoding: { type: "spki", format: "pem" },
    privateKeyEncoding: { type: "pkcs1", format: "pem" },
  });
  return {
    publicKey: forge.pki.publicKeyFromPem(publicKey),
    privateKey: forge.pki.privateKeyFromPem(privateKey),
    pem: createPrivateKey(privateKey).export({ type: "pkcs8", format: "pem" }).toString(),
  };
}

function newCertificate(publicKey: forge.pki.rsa.PublicKey, now: Date, ms: number): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  cert.serialNumber = randomSerial();
  cert.validity.notBefore = new Date(now.getTime() - BACKDATE_MS);
  cert.validity.notAfter = new Date(now.getTime() + ms);
  return cert;
}

/**
 * 128 random bits as a positive DER INTEGER: the top bit is cleared (not negative) and the next one
 * set (no leading zero octet, which strict parsers such as Go's reject as non-minimal).
 */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x40;
  return bytes.toString("hex");
}

/** The validity in ms: `validityMs` when given (a positive whole number), else `validityDays` (checked). */
function validityMs(opts: { validityDays?: number; validityMs?: number }, fallbackDays: number): number {
  if (opts.validityMs !== undefined) {
    if (!Number.isSafeInteger(opts.validityMs) || opts.validityMs < 1000)
      throw new AppError(
        "InvalidArgument",
        `validity of ${opts.validityMs} ms must be a whole number of at least 1000`,
      );
    return opts.validityMs;
  }
  return validityDays(opts.validityDays, fallbackDays) * DAY_MS;
}

function validityDays(value: number | undefined, fallback: number): number {
  const days = value ?? fallback;
  if (!Number.isInteger(days) || days <= 0 || days > 36500)
    throw new AppError("InvalidArgument", `validity of ${days} days must be a whole number from 1 to 36500`);
  return days;
}

function unique<T>(values: readonly T[]): T[] {
  return [...new Set(values)];
}
