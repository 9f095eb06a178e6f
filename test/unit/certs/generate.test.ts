import { expect } from "chai";
import { X509Certificate, createPrivateKey, createPublicKey } from "node:crypto";
import forge from "node-forge";
import {
  BACKDATE_MS,
  certExpiry,
  certMatchesCa,
  certSubjectAltNames,
  generateCa,
  generateServingCert,
  keyMatchesCert,
  needsRenewal,
  serviceDnsNames,
  splitPemCertificates,
  type CertificatePair,
} from "../../../certs/generate.js";
import { AppError } from "../../../shared/errors.js";

const DAY = 24 * 60 * 60 * 1000;
const NOW = new Date("2030-01-15T12:00:00Z");

function extension<T>(pem: string, name: string): T | undefined {
  return forge.pki.certificateFromPem(pem).getExtension(name) as T | undefined;
}

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error("expected a throw");
}

describe("certificate generation", () => {
  let ca: CertificatePair;
  let otherCa: CertificatePair;
  let serving: CertificatePair;

  before(() => {
    ca = generateCa({ commonName: "dv test CA", now: NOW });
    otherCa = generateCa({ commonName: "someone else's CA", now: NOW });
    serving = generateServingCert({
      ca,
      service: "dv-webhook",
      namespace: "dynamic-volumes",
      extraDnsNames: ["localhost"],
      extraIps: ["127.0.0.1"],
      now: NOW,
    });
  });

  describe("generateCa", () => {
    it("is a self-signed CA with basicConstraints cA and keyCertSign + cRLSign", () => {
      const x = new X509Certificate(ca.certPem);
      expect(x.ca).to.equal(true);
      expect(x.checkIssued(x)).to.equal(true);
      expect(x.verify(x.publicKey)).to.equal(true);
      expect(extension(ca.certPem, "basicConstraints")).to.include({ cA: true, critical: true });
      expect(extension(ca.certPem, "keyUsage")).to.include({
        keyCertSign: true,
        cRLSign: true,
        digitalSignature: false,
        keyEncipherment: false,
      });
    });

    it("is valid for 10 years from now, backdated 5 minutes", () => {
      const x = new X509Certificate(ca.certPem);
      expect(new Date(x.validFrom).getTime()).to.equal(NOW.getTime() - BACKDATE_MS);
      expect(new Date(x.validTo).getTime()).to.equal(NOW.getTime() + 3650 * DAY);
    });

    it("has an RSA 2048 key in PKCS#8 PEM that belongs to the certificate", () => {
      expect(ca.keyPem).to.match(/^-----BEGIN PRIVATE KEY-----\n/);
      expect(createPublicKey(ca.keyPem).asymmetricKeyDetails?.modulusLength).to.equal(2048);
      expect(keyMatchesCert(ca.certPem, ca.keyPem)).to.equal(true);
      expect(keyMatchesCert(ca.certPem, otherCa.keyPem)).to.equal(false);
    });

    it("uses a random positive serial without a leading zero octet", () => {
      const serials = [ca, otherCa, serving].map((p) => new X509Certificate(p.certPem).serialNumber);
      expect(new Set(serials).size).to.equal(3);
      for (const s of serials) {
        expect(s).to.have.length(32);
        expect(parseInt(s.slice(0, 2), 16)).to.be.within(0x40, 0x7f);
      }
    });
  });

  describe("generateServingCert", () => {
    it("has exactly the four Service names, then the extra DNS names and IPs, as SANs", () => {
      expect(certSubjectAltNames(serving.certPem)).to.deep.equal({
        dns: [
          "dv-webhook",
          "dv-webhook.dynamic-volumes",
          "dv-webhook.dynamic-volumes.svc",
          "dv-webhook.dynamic-volumes.svc.cluster.local",
          "localhost",
        ],
        ips: ["127.0.0.1"],
      });
      expect(new X509Certificate(serving.certPem).subjectAltName).to.equal(
        "DNS:dv-webhook, DNS:dv-webhook.dynamic-volumes, DNS:dv-webhook.dynamic-volumes.svc, " +
          "DNS:dv-webhook.dynamic-volumes.svc.cluster.local, DNS:localhost, IP Address:127.0.0.1",
      );
    });

    it("without extras, has only the Service names", () => {
      const plain = generateServingCert({ ca, service: "svc", namespace: "ns", now: NOW });
      expect(certSubjectAltNames(plain.certPem)).to.deep.equal({
        dns: serviceDnsNames("svc", "ns"),
        ips: [],
      });
    });

    it("is a leaf for server authentication only", () => {
      const x = new X509Certificate(serving.certPem);
      expect(x.ca).to.equal(false);
      expect(x.keyUsage).to.deep.equal(["1.3.6.1.5.5.7.3.1"]);
      expect(extension(serving.certPem, "basicConstraints")).to.include({ cA: false });
      expect(extension(serving.certPem, "keyUsage")).to.include({
        digitalSignature: true,
        keyEncipherment: true,
        keyCertSign: false,
        cRLSign: false,
      });
      const eku = extension<{ serverAuth?: boolean; clientAuth?: boolean }>(serving.certPem, "extKeyUsage");
      expect(eku?.serverAuth).to.equal(true);
      expect(eku?.clientAuth).to.not.equal(true);
    });

    it("chains to the CA by node-forge's verifier", () => {
      const store = forge.pki.createCaStore([ca.certPem]);
      const leaf = forge.pki.certificateFromPem(serving.certPem);
      // Verify at a time inside the validity window: the certificates start at NOW, in the future.
      expect(forge.pki.verifyCertificateChain(store, [leaf], { validityCheckDate: NOW })).to.equal(true);
      const wrongStore = forge.pki.createCaStore([otherCa.certPem]);
      expect(() =>
        forge.pki.verifyCertificateChain(wrongStore, [leaf], { validityCheckDate: NOW }),
      ).to.throw();
    });

    it("chains to the CA by node:crypto's X509Certificate, and not to another CA", () => {
      const leaf = new X509Certificate(serving.certPem);
      const issuer = new X509Certificate(ca.certPem);
      const stranger = new X509Certificate(otherCa.certPem);
      expect(leaf.checkIssued(issuer)).to.equal(true);
      expect(leaf.verify(issuer.publicKey)).to.equal(true);
      expect(leaf.verify(stranger.publicKey)).to.equal(false);
      expect(leaf.verify(leaf.publicKey)).to.equal(false);
    });

    it("names the CA's key in authorityKeyIdentifier", () => {
      const aki = forge.pki.certificateFromPem(serving.certPem).getExtension("authorityKeyIdentifier") as {
        value: string;
      };
      const ski = extension<{ subjectKeyIdentifier: string }>(ca.certPem, "subjectKeyIdentifier")!;
      expect(forge.util.bytesToHex(aki.value)).to.include(ski.subjectKeyIdentifier);
    });

    it("is valid for 1 year by default, or the given number of days, backdated 5 minutes", () => {
      const x = new X509Certificate(serving.certPem);
      expect(new Date(x.validFrom).getTime()).to.equal(NOW.getTime() - BACKDATE_MS);
      expect(certExpiry(serving.certPem).getTime()).to.equal(NOW.getTime() + 365 * DAY);
      const short = generateServingCert({ ca, service: "s", namespace: "n", validityDays: 7, now: NOW });
      expect(certExpiry(short.certPem).getTime()).to.equal(NOW.getTime() + 7 * DAY);
    });

    it("accepts a CA key in PKCS#1 PEM", () => {
      const pkcs1 = createPrivateKey(ca.keyPem).export({ type: "pkcs1", format: "pem" }).toString();
      expect(pkcs1).to.match(/^-----BEGIN RSA PRIVATE KEY-----/);
      const leaf = generateServingCert({
        ca: { certPem: ca.certPem, keyPem: pkcs1 },
        service: "s",
        namespace: "n",
      });
      expect(certMatchesCa(leaf.certPem, ca.certPem)).to.equal(true);
    });

    const bad: [string, Partial<Parameters<typeof generateServingCert>[0]>, RegExp][] = [
      ["a service with capitals", { service: "Webhook" }, /service "Webhook"/],
      ["a service with a dot", { service: "a.b" }, /service "a.b"/],
      ["an empty namespace", { namespace: "" }, /namespace ""/],
      [
        "an extra DNS name with a space",
        { extraDnsNames: ["bad name"] },
        /"bad name" is not a valid DNS name/,
      ],
      [
        "an extra IP that is not an address",
        { extraIps: ["localhost"] },
        /"localhost" is not an IPv4 or IPv6/,
      ],
      ["zero validity days", { validityDays: 0 }, /validity of 0 days/],
    ];
    for (const [what, override, message] of bad) {
      it(`[error] ${what}`, () => {
        const e = thrown(() => generateServingCert({ ca, service: "svc", namespace: "ns", ...override }));
        expect(e).to.be.instanceOf(AppError);
        expect((e as AppError).code).to.equal("InvalidArgument");
        expect((e as AppError).message).to.match(message);
      });
    }

    it("[error] a CA whose key is not its own", () => {
      const e = thrown(() =>
        generateServingCert({
          ca: { certPem: ca.certPem, keyPem: otherCa.keyPem },
          service: "s",
          namespace: "n",
        }),
      );
      expect((e as AppError).message).to.match(/does not belong to the CA certificate/);
    });

    it("[error] a CA that is not a CA", () => {
      const e = thrown(() => generateServingCert({ ca: serving, service: "s", namespace: "n" }));
      expect((e as AppError).message).to.match(/not a CA/);
    });
  });

  describe("needsRenewal", () => {
    const expiry = () => NOW.getTime() + 365 * DAY;
    const cases: [string, () => Date, number | undefined, boolean][] = [
      ["right after issue", () => NOW, undefined, false],
      ["31 days before expiry, default 30-day window", () => new Date(expiry() - 31 * DAY), undefined, false],
      ["29 days before expiry, default 30-day window", () => new Date(expiry() - 29 * DAY), undefined, true],
      ["exactly at the window edge", () => new Date(expiry() - 30 * DAY), undefined, true],
      ["after expiry", () => new Date(expiry() + DAY), undefined, true],
      ["29 days before expiry, 7-day window", () => new Date(expiry() - 29 * DAY), 7 * DAY, false],
      ["6 days before expiry, 7-day window", () => new Date(expiry() - 6 * DAY), 7 * DAY, true],
      ["within the 5-minute backdating", () => new Date(NOW.getTime() - 4 * 60 * 1000), undefined, false],
      ["a day before notBefore (a clock far behind)", () => new Date(NOW.getTime() - DAY), undefined, true],
    ];
    for (const [what, now, window, want] of cases) {
      it(`${want ? "renews" : "keeps"} ${what}`, () => {
        expect(needsRenewal(serving.certPem, now(), window)).to.equal(want);
      });
    }

    it("renews what it cannot read", () => {
      expect(needsRenewal("not a certificate", NOW)).to.equal(true);
      expect(needsRenewal("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", NOW)).to.equal(
        true,
      );
    });
  });

  describe("certExpiry", () => {
    it("[error] throws InvalidArgument for text without a certificate", () => {
      const e = thrown(() => certExpiry("hello"));
      expect((e as AppError).code).to.equal("InvalidArgument");
    });
  });

  describe("certMatchesCa", () => {
    it("is true for the issuing CA, also inside a bundle", () => {
      expect(certMatchesCa(serving.certPem, ca.certPem)).to.equal(true);
      expect(certMatchesCa(serving.certPem, otherCa.certPem + ca.certPem)).to.equal(true);
      expect(splitPemCertificates(otherCa.certPem + ca.certPem)).to.have.length(2);
    });

    it("is false for another CA, for the leaf itself and for garbage", () => {
      expect(certMatchesCa(serving.certPem, otherCa.certPem)).to.equal(false);
      expect(certMatchesCa(serving.certPem, serving.certPem)).to.equal(false);
      expect(certMatchesCa("garbage", ca.certPem)).to.equal(false);
      expect(certMatchesCa(serving.certPem, "garbage")).to.equal(false);
    });
  });
});
