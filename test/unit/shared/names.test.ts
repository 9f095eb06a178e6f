import { expect } from "chai";
import { isPodId, podDir } from "../../../shared/names.js";
import { mintPodId } from "../../../shared/signing.js";

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
