import { expect } from "chai";
import { KeyObject } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { option, readSigningKey } from "../../../shared/config.js";
import { ConfigError } from "../../../shared/errors.js";
import {
  hmacSha256Hex,
  mintPodId,
  signPodId,
  signingKeyFromText,
  signingKeyObject,
  verifyPodId,
} from "../../../shared/signing.js";

describe("pod id signing", () => {
  const key = signingKeyObject(signingKeyFromText("  s3cret-key-for-tests \n"));

  it("mints 128-bit lowercase hex ids, different each time", () => {
    const ids = new Set(Array.from({ length: 600 }, mintPodId));
    expect(ids.size).to.equal(600);
    for (const id of ids) expect(id).to.match(/^[0-9a-f]{32}$/);
  });

  it("gives the RFC 4231 HMAC-SHA256 test vectors", () => {
    // Test cases 1, 2 and 6 (a key longer than a block), each as raw bytes and as a KeyObject.
    const cases: Array<[Buffer, string, string]> = [
      [
        Buffer.alloc(20, 0x0b),
        "Hi There",
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
      ],
      [
        Buffer.from("Jefe"),
        "what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
      ],
      [
        Buffer.alloc(131, 0xaa),
        "Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
      ],
    ];
    for (const [bytes, message, want] of cases) {
      expect(hmacSha256Hex(bytes, message)).to.equal(want);
      expect(hmacSha256Hex(signingKeyObject(bytes), message)).to.equal(want);
    }
  });

  // Fixed signatures, so that the webhook and agents of every version agree on them (the values were
  // computed once, and agree with `openssl dgst -sha256 -hmac KEY`).
  const vectors: Array<[string, string, string, string]> = [
    [
      "  s3cret-key-for-tests \n",
      "team-a",
      "0123456789abcdef0123456789abcdef",
      "80135576f0ea205e5308272cd9f16f0e30e03ea4f7489fe653da5b9496dbdd76",
    ],
    [
      "\tключ-🔑-0123456789\n",
      "team-b",
      "ffffffffffffffffffffffffffffffff",
      "ee4b6a8da543a9cecf5c56b9dac7cbc0cbfc6f4fbc86b96f977afde00f14fa14",
    ],
    [
      "dynamic-volumes-".repeat(5),
      "a-namespace-name-of-the-longest-length-allowed-sixty-three-char",
      "00000000000000000000000000000000",
      "c7a83a81d31b783692f48bfdca2be638a8c3881cf0af2d72f3cb2d2ff389738d",
    ],
  ];
  for (const [text, namespace, id, want] of vectors)
    it(`signs ${namespace}/${id} under a key of ${text.trim().length} characters as docs/design.md specifies`, () => {
      const bytes = signingKeyFromText(text);
      expect(signPodId(signingKeyObject(bytes), namespace, id)).to.equal(want);
      expect(signPodId(bytes, namespace, id), "raw key bytes").to.equal(want);
      expect(verifyPodId(signingKeyObject(bytes), namespace, id, want)).to.equal(true);
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
    expect(verifyPodId(key, "team-a", id, sig.toUpperCase())).to.be.false;
    expect(verifyPodId(key, "team-a", "../../etc", sig)).to.be.false;
  });
});

describe("readSigningKey", () => {
  const spec = option("signing-key-file", "file holding the id-signing key");
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), "dv-signing-"))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("loads the trimmed UTF-8 key as a secret KeyObject", () => {
    const file = join(dir, "key");
    writeFileSync(file, "  s3cret-key-for-tests \n");
    const key = readSigningKey(spec, file);
    expect(key).to.be.instanceOf(KeyObject);
    expect(key.type).to.equal("secret");
    expect(key.export().toString("utf8")).to.equal("s3cret-key-for-tests");
    expect(signPodId(key, "team-a", "0123456789abcdef0123456789abcdef")).to.equal(
      "80135576f0ea205e5308272cd9f16f0e30e03ea4f7489fe653da5b9496dbdd76",
    );
  });

  it("[error] refuses a key shorter than 16 bytes, naming the file", () => {
    const file = join(dir, "short");
    writeFileSync(file, " short \n");
    expect(() => readSigningKey(spec, file))
      .to.throw(ConfigError, /5 bytes; use at least 16/)
      .with.property("message")
      .that.includes(file);
  });
});
