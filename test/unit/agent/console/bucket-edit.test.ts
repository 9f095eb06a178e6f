import { expect } from "chai";
import {
  hasBucketEntry,
  removeBucketEntry,
  upsertBucketEntry,
} from "../../../../agent/console/bucket-edit.js";
import { MAX_BUCKET_ENTRIES } from "../../../../shared/buckets.js";
import { ConsoleError } from "../../../../shared/protocol.js";

const entry = (name: string, bucket: string, prefix = "", readOnly = false) => ({
  name,
  bucket,
  prefix,
  readOnly,
});

describe("upsertBucketEntry", () => {
  const ok: Array<[string, string | undefined, ReturnType<typeof entry>, string, boolean]> = [
    ["adds to a missing annotation", undefined, entry("data", "bucket-a"), "data=bucket-a", false],
    [
      "appends, keeping others as written",
      "x=bucket-x:ro, ../bad",
      entry("bucket-a", "bucket-a"),
      "x=bucket-x:ro,../bad,bucket-a",
      false,
    ],
    [
      "replaces the entry with that name",
      "a=bucket-a,b=bucket-b",
      entry("a", "bucket-z", "p", true),
      "a=bucket-z/p:ro,b=bucket-b",
      false,
    ],
    [
      "replaces a malformed entry with that name",
      "a=bucket-a/-o,b=bucket-b",
      entry("a", "bucket-a"),
      "a=bucket-a,b=bucket-b",
      false,
    ],
    ["drops later duplicates", "a=bucket-a,a=bucket-b", entry("a", "bucket-c"), "a=bucket-c", false],
    [
      "sees an identical entry as unchanged",
      "a = bucket-a : ro",
      entry("a", "bucket-a", "", true),
      "a=bucket-a:ro",
      true,
    ],
  ];
  for (const [what, current, e, value, unchanged] of ok)
    it(`[ok] ${what}`, () => {
      const r = upsertBucketEntry(current, e);
      expect(r.value).to.equal(value);
      expect(r.unchanged).to.equal(unchanged);
    });

  it("[error] a pod that already has the maximum of entries", () => {
    const full = Array.from({ length: MAX_BUCKET_ENTRIES }, (_, i) => `m${i}=bucket-a`).join(",");
    expect(() => upsertBucketEntry(full, entry("one-more", "bucket-b"))).to.throw(
      ConsoleError,
      /more than 64/,
    );
  });
});

describe("removeBucketEntry and hasBucketEntry", () => {
  it("removes every entry of the name and nothing else", () => {
    expect(removeBucketEntry("a=bucket-a,b=bucket-b,a=bucket-c, -o x", "a")).to.deep.equal({
      value: "b=bucket-b,-o x",
      found: true,
    });
    expect(hasBucketEntry("a=bucket-a/-o", "a")).to.equal(true);
  });

  it("reports an absent name and leaves the value alone", () => {
    expect(removeBucketEntry("b=bucket-b", "a")).to.deep.equal({ value: "b=bucket-b", found: false });
    expect(removeBucketEntry(undefined, "a")).to.deep.equal({ value: "", found: false });
    expect(hasBucketEntry(undefined, "a")).to.equal(false);
  });
});
