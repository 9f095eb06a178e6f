import { expect } from "chai";
import { createHmac } from "node:crypto";
import { mintPodId, signPodId, signingKeyFromText, verifyPodId } from "../../../shared/signing.js";

describe("pod id signing", () => {
  const key = signingKeyFromText("  s3cret-key-for-tests \n");

  it("mints 128-bit lowercase hex ids, different each time, across batches", () => {
    const ids = new Set(Array.from({ length: 600 }, mintPodId));
    expect(ids.size).to.equal(600);
    for (const id of ids) expect(id).to.match(/^[0-9a-f]{32}$/);
  });

  it("signs HMAC-SHA256 of <namespace>/<id> with the trimmed UTF-8 key, as DESIGN.md specifies", () => {
    const id = "0123456789abcdef0123456789abcdef";
    const want = createHmac("sha256", "s3cret-key-for-tests").update(`team-a/${id}`).digest("hex");
    expect(signPodId(key, "team-a", id)).to.equal(want);
  });

  it("verifies only the namespace and id that were signed", () => {
    const id = mintPodId();
    const sig = signPodId(key, "team-a", id);
    expect(verifyPodId(key, "team-a", id, sig)).to.be.true;
    expect(verifyPodId(key, "team-b", id, sig)).to.be.false;
    expect(verifyPodId(key, "team-a", mintPodId(), sig)).to.be.false;
    expect(verifyPodId(Buffer.from("other-key-0123456789"), "team-a", id, sig)).to.be.false;
  });

  it("rejects malformed ids and signatures without throwing", () => {
    const id = mintPodId();
    const sig = signPodId(key, "team-a", id);
    expect(verifyPodId(key, "team-a", id.toUpperCase(), sig)).to.be.false;
    expect(verifyPodId(key, "team-a", id, sig.slice(2))).to.be.false;
    expect(verifyPodId(key, "team-a", id, "zz" + sig.slice(2))).to.be.false;
    expect(verifyPodId(key, "team-a", "../../etc", sig)).to.be.false;
  });
});
