import { expect } from "chai";
import { createHmac, randomBytes } from "node:crypto";
import {
  hmacSha256Hex,
  mintPodId,
  signPodId,
  signingKeyFromText,
  verifyPodId,
} from "../../../shared/signing.js";

describe("pod id signing", () => {
  const key = signingKeyFromText("  s3cret-key-for-tests \n");

  it("mints 128-bit lowercase hex ids, different each time", () => {
    const ids = new Set(Array.from({ length: 100 }, mintPodId));
    expect(ids.size).to.equal(100);
    for (const id of ids) expect(id).to.match(/^[0-9a-f]{32}$/);
  });

  it("signs HMAC-SHA256 of <namespace>/<id> with the trimmed UTF-8 key, as DESIGN.md specifies", () => {
    const id = "0123456789abcdef0123456789abcdef";
    const want = createHmac("sha256", "s3cret-key-for-tests").update(`team-a/${id}`).digest("hex");
    expect(signPodId(key, "team-a", id)).to.equal(want);
  });

  it("computes the same HMAC-SHA256 as createHmac for keys shorter than, equal to and longer than a block", () => {
    const keyLengths = [0, 1, 31, 32, 63, 64, 65, 127, 128, 500];
    const messages = [
      "",
      "a",
      "team-a/0123456789abcdef0123456789abcdef",
      "ü€😀/x",
      "x".repeat(55),
      "y".repeat(64),
      "z".repeat(1000),
      // Either side of the length that still fits the buffer kept with the pads (256 bytes).
      "x".repeat(85),
      "x".repeat(86),
      "€".repeat(85),
      "€".repeat(86),
      "€".repeat(200),
      "😀".repeat(42),
      "😀".repeat(43),
      // A short message right after a long one: nothing of the longer one may be hashed.
      "b",
    ];
    let checked = 0;
    for (const n of keyLengths)
      for (let round = 0; round < 5; round++) {
        const k = randomBytes(n);
        for (const m of messages) {
          expect(hmacSha256Hex(k, m), `key ${n} bytes, message ${m.length} chars`).to.equal(
            createHmac("sha256", k).update(m, "utf8").digest("hex"),
          );
          checked++;
        }
      }
    expect(checked).to.equal(keyLengths.length * 5 * messages.length);
  });

  it("keeps per-key state apart: two keys used in turn each give their own HMAC", () => {
    const a = randomBytes(32);
    const b = randomBytes(32);
    for (let i = 0; i < 3; i++) {
      expect(hmacSha256Hex(a, "m")).to.equal(createHmac("sha256", a).update("m").digest("hex"));
      expect(hmacSha256Hex(b, "m")).to.equal(createHmac("sha256", b).update("m").digest("hex"));
    }
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
