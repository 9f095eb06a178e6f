/**
 * A throwaway CA and a serving certificate for 127.0.0.1 and localhost, written to a fresh temporary
 * directory (key 0600) for `startHttpsServer`, which reads files. Generated with `certs/generate.ts`,
 * the same code that makes the webhook's real certificates.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateCa, generateServingCert } from "../certs/generate.js";

export interface BenchPki {
  /** PEM of the CA: the only certificate the load generator trusts. */
  readonly caPem: string;
  readonly certFile: string;
  readonly keyFile: string;
  /** Removes the directory; safe to call twice. */
  readonly remove: () => void;
}

export function makeBenchPki(): BenchPki {
  const ca = generateCa({ commonName: "dynamic-volumes bench CA" });
  const serving = generateServingCert({
    ca,
    service: "dynamic-volumes-webhook",
    namespace: "dynamic-volumes",
    extraDnsNames: ["localhost"],
    extraIps: ["127.0.0.1"],
  });
  const dir = mkdtempSync(join(tmpdir(), "dv-bench-pki-"));
  const certFile = join(dir, "tls.crt");
  const keyFile = join(dir, "tls.key");
  writeFileSync(certFile, serving.certPem);
  writeFileSync(keyFile, serving.keyPem, { mode: 0o600 });
  return {
    caPem: ca.certPem,
    certFile,
    keyFile,
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
