import { expect } from "chai";
import {
  MAX_BUCKET_ENTRIES,
  formatBuckets,
  parseBuckets,
  type BucketEntry,
} from "../../../shared/buckets.js";

const e = (name: string, bucket: string, prefix = "", readOnly = false): BucketEntry => ({
  name,
  bucket,
  prefix,
  readOnly,
});

describe("parseBuckets", () => {
  const ok: Array<[string, BucketEntry[]]> = [
    ["imagenet", [e("imagenet", "imagenet")]],
    ["imagenet:ro", [e("imagenet", "imagenet", "", true)]],
    ["imagenet:rw", [e("imagenet", "imagenet")]],
    ["train=imagenet/2012/train:ro", [e("train", "imagenet", "2012/train", true)]],
    ["raw=my.bucket.v2", [e("raw", "my.bucket.v2")]],
    [" a = bucket-a / x / y : ro , b=bucket-b ", [e("a", "bucket-a", "x/y", true), e("b", "bucket-b")]],
    ["bucket-a/prefix/", [e("bucket-a", "bucket-a", "prefix")]],
    ["bucket-a,,", [e("bucket-a", "bucket-a")]],
    ["", []],
  ];
  for (const [input, entries] of ok)
    it(`[ok] ${JSON.stringify(input)}`, () => {
      const r = parseBuckets(input);
      expect(r.errors).to.deep.equal([]);
      expect(r.entries).to.deep.equal(entries);
    });

  const bad: Array<[string, RegExp]> = [
    ["../x", /not a valid bucket name/],
    ["bucket-a/../etc", /"\.\." segments/],
    ["bucket-a/./x", /"\." or "\.\."/],
    ["bucket-a//x", /empty path segment/],
    ["bucket-a/-o", /must not start with "-"/],
    ["-o allow_root", /not a valid bucket name/],
    ["Bucket", /not a valid bucket name/],
    ["ab", /not a valid bucket name/],
    ["a..b.c", /not a valid bucket name/],
    ["my.bucket", /give the entry a name/],
    ["Name=bucket-a", /DNS-1123/],
    ["x=bucket-a:rx", /access "rx"/],
    ["x=bucket-a:ro:rw", /only one/],
    ["x=y=bucket-a", /only one "="/],
    ["bucket-a/a;rm", /may contain only/],
    ["bucket-a/$(id)", /may contain only/],
    ["n=", /bucket name is empty/],
    [`${"a".repeat(70)}`, /not a valid bucket name/],
  ];
  for (const [input, message] of bad)
    it(`[error] ${JSON.stringify(input)}`, () => {
      const r = parseBuckets(input);
      expect(r.entries).to.deep.equal([]);
      expect(r.errors).to.have.length(1);
      expect(r.errors[0]!.message).to.match(message);
    });

  it("keeps the good entries around a bad one and reports the bad one's position", () => {
    const r = parseBuckets("a=bucket-a,../x,b=bucket-b:ro");
    expect(r.entries.map((x) => x.name)).to.deep.equal(["a", "b"]);
    expect(r.errors).to.have.length(1);
    expect(r.errors[0]).to.include({ index: 1, raw: "../x" });
  });

  it("keeps the first of two entries with the same name", () => {
    const r = parseBuckets("d=bucket-a,d=bucket-b");
    expect(r.entries).to.deep.equal([e("d", "bucket-a")]);
    expect(r.errors[0]!.message).to.match(/unique/);
  });

  it("names the failed entry when its name is valid, so status can key the failure", () => {
    expect(parseBuckets("data=../x").errors[0]!.name).to.equal("data");
    expect(parseBuckets("../x").errors[0]!.name).to.equal(undefined);
  });

  it(`reports entries beyond ${MAX_BUCKET_ENTRIES}`, () => {
    const value = Array.from({ length: MAX_BUCKET_ENTRIES + 2 }, (_, i) => `b${i}=bucket-${i}`).join(",");
    const r = parseBuckets(value);
    expect(r.entries).to.have.length(MAX_BUCKET_ENTRIES);
    expect(r.errors).to.have.length(2);
  });

  it("refuses an oversized annotation without reading it", () => {
    const r = parseBuckets("a,".repeat(20_000));
    expect(r.entries).to.have.length(0);
    expect(r.errors[0]!.message).to.match(/longer than/);
  });

  it("treats undefined and null as no entries", () => {
    expect(parseBuckets(undefined)).to.deep.equal({ entries: [], errors: [] });
    expect(parseBuckets(null)).to.deep.equal({ entries: [], errors: [] });
  });
});

describe("formatBuckets", () => {
  it("round-trips through parseBuckets in canonical form", () => {
    const value = "imagenet, train=imagenet/2012/train:ro, w=out-bucket:rw";
    const text = formatBuckets(parseBuckets(value).entries);
    expect(text).to.equal("imagenet,train=imagenet/2012/train:ro,w=out-bucket");
    expect(parseBuckets(text).entries).to.deep.equal(parseBuckets(value).entries);
  });
});
