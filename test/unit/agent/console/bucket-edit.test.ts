import { expect } from "chai";
import {
  hasBucketEntry,
  removeBucketEntry,
  upsertBucketEntry,
} from "../../../../agent/console/bucket-edit.js";
import { MAX_BUCKET_ENTRIES, formatBucketEntry } from "../../../../shared/buckets.js";
import { AppError } from "../../../../shared/errors.js";
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
  // Replacing an entry of the same name takes `replace`; an identical entry needs none.
  const replacing = new Set([
    "replaces the entry with that name",
    "replaces a malformed entry with that name",
    "drops later duplicates",
  ]);
  for (const [what, current, e, value, unchanged] of ok)
    it(`[ok] ${what}`, () => {
      const r = upsertBucketEntry(current, e, { replace: replacing.has(what) });
      expect(r.value).to.equal(value);
      expect(r.unchanged).to.equal(unchanged);
    });

  const refusals: Array<[string, string, ReturnType<typeof entry>, string]> = [
    ["another bucket", "a=bucket-a,b=bucket-b", entry("a", "bucket-z"), "a=bucket-a"],
    ["another prefix", "a=bucket-a/x", entry("a", "bucket-a", "y"), "a=bucket-a/x"],
    ["another access", "bucket-a:ro", entry("bucket-a", "bucket-a"), "bucket-a:ro"],
    ["a malformed entry", "a=bucket-a/-o", entry("a", "bucket-a"), "a=bucket-a/-o"],
    ["the first of duplicates", " a = bucket-b : ro ,a=bucket-c", entry("a", "bucket-c"), "a=bucket-b:ro"],
  ];
  for (const [what, current, e, shown] of refusals)
    it(`[error] refuses a name taken by ${what} with a Conflict that shows it, unless replace`, () => {
      let err: unknown;
      try {
        upsertBucketEntry(current, e, { pod: "team-a/trainer" });
      } catch (x) {
        err = x;
      }
      expect(err).to.be.instanceOf(AppError);
      expect((err as AppError).code).to.equal("Conflict");
      const message = (err as AppError).message;
      expect(message).to.include(`pod team-a/trainer already has a mount named "${e.name}": ${shown}.`);
      expect(message).to.include(`dvctl umount team-a/trainer ${e.name}`);
      expect(message).to.include("replace");
      // Without options the default is the same refusal.
      expect(() => upsertBucketEntry(current, e)).to.throw(AppError, /already has a mount named/);
      const r = upsertBucketEntry(current, e, { replace: true });
      expect(r.value.split(",")).to.include(formatBucketEntry(e));
      expect(r.unchanged).to.equal(false);
    });

  it("[ok] an identical entry is no conflict, with or without replace", () => {
    for (const replace of [false, true]) {
      const r = upsertBucketEntry("x=bucket-x,a=bucket-a/p:ro", entry("a", "bucket-a", "p", true), {
        replace,
      });
      expect(r).to.deep.include({ value: "x=bucket-x,a=bucket-a/p:ro", unchanged: true });
      expect(r.previous).to.deep.equal(entry("a", "bucket-a", "p", true));
    }
  });

  it("[ok] another name is added next to the existing entries without replace", () => {
    const r = upsertBucketEntry("a=bucket-a", entry("extra", "bucket-a"));
    expect(r).to.deep.include({ value: "a=bucket-a,extra=bucket-a", unchanged: false, previous: undefined });
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
