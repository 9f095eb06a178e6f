import { expect } from "chai";
import { createHash, createHmac, randomBytes, randomInt } from "node:crypto";
import { hmacSha256Hex, sha256 } from "../../../shared/sha256.js";

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

describe("SHA-256 and HMAC-SHA256", () => {
  it("hashes the FIPS 180-4 examples", () => {
    expect(hex(sha256(Buffer.from("abc")))).to.equal(
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    );
    expect(hex(sha256(Buffer.from("")))).to.equal(
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    );
    expect(hex(sha256(Buffer.from("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")))).to.equal(
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    );
  });

  it("hashes like node:crypto for every length up to four blocks", () => {
    for (let n = 0; n <= 256; n++) {
      const bytes = randomBytes(n);
      expect(hex(sha256(bytes)), `${n} bytes`).to.equal(createHash("sha256").update(bytes).digest("hex"));
    }
  });

  it("gives the RFC 4231 HMAC-SHA256 test vectors", () => {
    // Test cases 1, 2 and 6 (a key longer than a block).
    expect(hmacSha256Hex(Buffer.alloc(20, 0x0b), "Hi There")).to.equal(
      "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    );
    expect(hmacSha256Hex(Buffer.from("Jefe"), "what do ya want for nothing?")).to.equal(
      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    );
    expect(
      hmacSha256Hex(Buffer.alloc(131, 0xaa), "Test Using Larger Than Block-Size Key - Hash Key First"),
    ).to.equal("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
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
      // Either side of the lengths where the padding needs another block (55/56 bytes, 119/120).
      "x".repeat(54),
      "x".repeat(56),
      "x".repeat(63),
      "x".repeat(119),
      "x".repeat(120),
      // Either side of the length that still fits the buffer kept for messages: 183 bytes and 9
      // of padding in 192, for ASCII copied character by character and for UTF-8 alike.
      "x".repeat(183),
      "x".repeat(184),
      "€".repeat(61),
      "€".repeat(62),
      "€".repeat(200),
      "😀".repeat(45),
      "😀".repeat(46),
      // Non-ASCII only at the end, after an ASCII prefix already copied.
      `${"a".repeat(50)}é`,
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

  it("matches createHmac over random keys and random Unicode messages", () => {
    const alphabet = ["a", "/", "-", "0", "é", "€", "😀", "\u0000"];
    for (let i = 0; i < 500; i++) {
      const key = randomBytes(randomInt(0, 100));
      let m = "";
      const n = randomInt(0, 120);
      for (let j = 0; j < n; j++) m += alphabet[randomInt(alphabet.length)]!;
      expect(hmacSha256Hex(key, m), JSON.stringify(m)).to.equal(
        createHmac("sha256", key).update(m, "utf8").digest("hex"),
      );
    }
  });
});
