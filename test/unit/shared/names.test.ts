import { expect } from "chai";
import { isPodDirName, isPodId, isPodUid, podDir } from "../../../shared/names.js";
import { mintPodId } from "../../../shared/signing.js";
import { randomUUID } from "node:crypto";

describe("isPodId", () => {
  const rows: Array<[string, string, boolean]> = [
    ["[ok] 32 lowercase hex digits", "0123456789abcdef0123456789abcdef", true],
    ["[ok] a minted id", mintPodId(), true],
    ["[error] upper case", "0123456789ABCDEF0123456789abcdef", false],
    ["[error] 31 digits", "0123456789abcdef0123456789abcde", false],
    ["[error] 33 digits", "0123456789abcdef0123456789abcdef0", false],
    ["[error] a letter past f", "0123456789abcdeg0123456789abcdef", false],
    ["[error] the characters around 0-9 and a-f", "/:`g/:`g/:`g/:`g/:`g/:`g/:`g/:`g", false],
    ["[error] a path", "../../etc/passwd/0123456789abcdef", false],
    ["[error] a trailing newline", "0123456789abcdef0123456789abcdef\n", false],
    ["[error] empty", "", false],
  ];
  for (const [label, s, ok] of rows)
    it(`${label}: ${JSON.stringify(s)}`, () => {
      expect(isPodId(s)).to.equal(ok);
    });
});

describe("isPodUid", () => {
  const rows: Array<[string, string, boolean]> = [
    ["[ok] a lowercase UUID", "3f2b8c1e-9d4a-4e6f-8a7b-0c1d2e3f4a5b", true],
    ["[ok] crypto.randomUUID()", randomUUID(), true],
    ["[error] upper case", "3F2B8C1E-9D4A-4E6F-8A7B-0C1D2E3F4A5B", false],
    ["[error] without dashes (that is a webhook id)", "3f2b8c1e9d4a4e6f8a7b0c1d2e3f4a5b", false],
    ["[error] braces", "{3f2b8c1e-9d4a-4e6f-8a7b-0c1d2e3f4a5b}", false],
    ["[error] a dash moved", "3f2b8c1e9-d4a-4e6f-8a7b-0c1d2e3f4a5b", false],
    ["[error] a path", "../3f2b8c1e-9d4a-4e6f-8a7b-0c1d2e3f4a5", false],
    ["[error] a trailing newline", "3f2b8c1e-9d4a-4e6f-8a7b-0c1d2e3f4a5b\n", false],
    ["[error] empty", "", false],
  ];
  for (const [what, s, ok] of rows)
    it(what, () => {
      expect(isPodUid(s)).to.equal(ok);
    });

  it("a pod id is never a pod uid, and isPodDirName accepts both", () => {
    const id = mintPodId();
    const uid = randomUUID();
    expect([isPodUid(id), isPodId(uid)]).to.deep.equal([false, false]);
    expect([isPodDirName(id), isPodDirName(uid), isPodDirName("agent"), isPodDirName("")]).to.deep.equal([
      true,
      true,
      false,
      false,
    ]);
  });
});

describe("podDir", () => {
  it("is <root>/pods/<id>, whatever trailing slashes the root has", () => {
    const id = "0123456789abcdef0123456789abcdef";
    for (const root of [
      "/var/lib/dynamic-volumes",
      "/var/lib/dynamic-volumes/",
      "/var/lib/dynamic-volumes//",
    ])
      expect(podDir(root, id)).to.equal(`/var/lib/dynamic-volumes/pods/${id}`);
  });
});
