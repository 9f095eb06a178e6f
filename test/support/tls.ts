/** Throwaway PKI for tests: a CA and a serving certificate for the webhook's Service and localhost. */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateCa, generateServingCert, type CertificatePair } from "../../certs/generate.js";

export interface TestPki {
  ca: CertificatePair;
  serving: CertificatePair;
  dir: string;
  caFile: string;
  certFile: string;
  keyFile: string;
}

export const TEST_SERVICE = "dynamic-volumes-webhook";
export const TEST_NAMESPACE = "dynamic-volumes";
/** The name the API server dials: `<svc>.<ns>.svc`. */
export const TEST_SERVER_NAME = `${TEST_SERVICE}.${TEST_NAMESPACE}.svc`;

export function makeServing(ca: CertificatePair): CertificatePair {
  return generateServingCert({
    ca,
    service: TEST_SERVICE,
    namespace: TEST_NAMESPACE,
    extraDnsNames: ["localhost"],
    extraIps: ["127.0.0.1"],
  });
}

/** Generates a CA and serving pair and writes them (keys 0600) to a fresh temp directory. */
export function makeTestPki(dir = mkdtempSync(join(tmpdir(), "dv-pki-"))): TestPki {
  const ca = generateCa({ commonName: "dynamic-volumes test CA" });
  return writePki(dir, ca, makeServing(ca));
}

/** The name dvctl checks an agent's certificate against after a port-forward. */
export const TEST_AGENT_SERVER_NAME = `dynamic-volumes-agent.${TEST_NAMESPACE}.svc`;

/** Like {@link makeTestPki}, for an agent: the certificate names the agents' headless Service. */
export function makeAgentTestPki(dir = mkdtempSync(join(tmpdir(), "dv-pki-"))): TestPki {
  const ca = generateCa({ commonName: "dynamic-volumes test CA" });
  const serving = generateServingCert({
    ca,
    service: "dynamic-volumes-agent",
    namespace: TEST_NAMESPACE,
    extraDnsNames: ["localhost"],
    extraIps: ["127.0.0.1"],
  });
  return writePki(dir, ca, serving);
}

function writePki(dir: string, ca: CertificatePair, serving: CertificatePair): TestPki {
  const pki = {
    ca,
    serving,
    dir,
    caFile: join(dir, "ca.crt"),
    certFile: join(dir, "tls.crt"),
    keyFile: join(dir, "tls.key"),
  };
  writeFileSync(pki.caFile, ca.certPem);
  writeFileSync(pki.certFile, serving.certPem);
  writeFileSync(pki.keyFile, serving.keyPem, { mode: 0o600 });
  return pki;
}
