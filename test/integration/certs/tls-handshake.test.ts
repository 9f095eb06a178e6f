import { expect } from "chai";
import type { AddressInfo } from "node:net";
import { connect, createServer, type Server } from "node:tls";
import { generateCa, generateServingCert, type CertificatePair } from "../../../certs/generate.js";

/** Connects with `ca` as the only trusted root; resolves with the peer's subject CN or rejects with the TLS error. */
function handshake(port: number, ca: string, servername: string, host = "127.0.0.1"): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, ca, servername }, () => {
      const cn = socket.getPeerCertificate().subject.CN;
      const authorized = socket.authorized;
      socket.end();
      if (authorized) resolve(String(cn));
      else reject(socket.authorizationError ?? new Error("not authorized"));
    });
    socket.once("error", reject);
  });
}

describe("a TLS server using a generated serving certificate", () => {
  let ca: CertificatePair;
  let server: Server;
  let port: number;

  before(async () => {
    ca = generateCa({ commonName: "handshake CA" });
    const serving = generateServingCert({
      ca,
      service: "dv-webhook",
      namespace: "dynamic-volumes",
      extraDnsNames: ["localhost"],
      extraIps: ["127.0.0.1"],
    });
    server = createServer({ cert: serving.certPem, key: serving.keyPem }, (s) => s.end("ok"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  });

  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it("completes a handshake with a client that trusts only the generated CA, for localhost", async () => {
    expect(await handshake(port, ca.certPem, "localhost")).to.equal("dv-webhook.dynamic-volumes.svc");
  });

  it("is accepted for each Service DNS name", async () => {
    for (const name of ["dv-webhook.dynamic-volumes.svc", "dv-webhook.dynamic-volumes.svc.cluster.local"])
      expect(await handshake(port, ca.certPem, name)).to.equal("dv-webhook.dynamic-volumes.svc");
  });

  it("is refused by a client that trusts another CA (negative control)", async () => {
    const other = generateCa({ commonName: "other CA" });
    const e = (await handshake(port, other.certPem, "localhost").catch(
      (err: unknown) => err,
    )) as NodeJS.ErrnoException;
    expect(e).to.be.instanceOf(Error);
    expect(e.code).to.equal("UNABLE_TO_VERIFY_LEAF_SIGNATURE");
  });

  it("is refused for a name that is not in the SANs", async () => {
    const e = (await handshake(port, ca.certPem, "evil.example").catch(
      (err: unknown) => err,
    )) as NodeJS.ErrnoException;
    expect(e).to.be.instanceOf(Error);
    expect(e.code).to.equal("ERR_TLS_CERT_ALTNAME_INVALID");
  });
});
