import { expect } from "chai";
import { randomBytes, randomInt } from "node:crypto";
import { isPodId } from "../../../shared/names.js";

// The definition isPodId implements, kept here as the oracle.
const POD_ID_PATTERN = /^[0-9a-f]{32}$/;

describe("pod ids", () => {
  it("isPodId agrees with POD_ID_PATTERN on ids, near misses and random strings", () => {
    const cases = [
      "0123456789abcdef0123456789abcdef",
      "0123456789ABCDEF0123456789abcdef",
      "0123456789abcdef0123456789abcde",
      "0123456789abcdef0123456789abcdef0",
      "0123456789abcdeg0123456789abcdef",
      "/123456789abcdef0123456789abcdef",
      ":123456789abcdef0123456789abcdef",
      "`123456789abcdef0123456789abcdef",
      "",
    ];
    for (let i = 0; i < 2000; i++) {
      cases.push(randomBytes(16).toString("hex"));
      const chars = "0123456789abcdefgABCDEF/:`@ ";
      let s = "";
      const n = randomInt(30, 35);
      for (let j = 0; j < n; j++) s += chars[randomInt(chars.length)];
      cases.push(s);
    }
    let valid = 0;
    for (const c of cases) {
      expect(isPodId(c), c).to.equal(POD_ID_PATTERN.test(c));
      if (isPodId(c)) valid++;
    }
    expect(valid).to.be.at.least(2001);
  });
});
