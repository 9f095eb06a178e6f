/**
 * The soak's pure core: its seeded streams, its command line, and the check that decides when a pod
 * matches its annotation (scripts/soak/catalog.ts). The soak itself runs with `npm run soak`.
 */
import { expect } from "chai";
import type { MountInfo } from "../../../agent/mountinfo.js";
import type { PodStatus } from "../../../agent/status.js";
import {
  expectedOf,
  mismatch,
  percentile,
  randomBuckets,
  recordMismatch,
} from "../../../scripts/soak/catalog.js";
import { parseOptions, UsageError } from "../../../scripts/soak/options.js";
import { Prng } from "../../../scripts/soak/prng.js";

const DIR = "/r/pods/0123";

function fuse(name: string, ro = false): MountInfo {
  return {
    mountId: 1,
    parentId: 1,
    major: 0,
    minor: 50,
    root: "/",
    mountPoint: `${DIR}/${name}`,
    mountOptions: [ro ? "ro" : "rw", "nosuid"],
    optionalFields: ["shared:7"],
    sharedGroup: 7,
    fsType: "fuse.s3fs",
    source: "s3fs",
    superOptions: ["rw"],
  };
}

function mounted(bucket: string, prefix = "", readOnly = false): PodStatus[string] {
  return { state: "mounted", bucket, prefix, readOnly, since: "2026-01-01T00:00:00Z" };
}

describe("soak", function () {
  describe("Prng", function () {
    it("gives the same sequence for the same seed and stream, another for another stream", function () {
      const a = new Prng(7, "flipper");
      const b = new Prng(7, "flipper");
      const c = new Prng(7, "churn");
      const xs = Array.from({ length: 5 }, () => a.next());
      expect(Array.from({ length: 5 }, () => b.next())).to.deep.equal(xs);
      expect(Array.from({ length: 5 }, () => c.next())).to.not.deep.equal(xs);
      for (const x of xs) expect(x).to.be.within(0, 1);
    });

    it("draws annotations that the agent's grammar reads back", function () {
      const rng = new Prng(1, "t");
      for (let i = 0; i < 200; i++) {
        const { value, bad } = randomBuckets(rng, 0.3);
        const e = expectedOf(value);
        expect(e.failed.length, value).to.equal(bad === undefined ? 0 : 1);
        expect(e.valid.length).to.be.at.most(3);
      }
    });
  });

  describe("parseOptions", function () {
    const rows: Array<[string, string[], string | RegExp]> = [
      ["[ok] defaults to the long profile", [], "long"],
      ["[ok] short profile", ["--profile", "short", "--seed", "42"], "short"],
      ["[error] unknown profile", ["--profile", "medium"], /short or long/],
      ["[error] bad seed", ["--seed", "-1"], /--seed/],
      ["[error] minutes out of range", ["--minutes", "0.1"], /--minutes/],
      ["[error] unknown flag", ["--fast"], /fast/],
    ];
    for (const [title, argv, want] of rows)
      it(title, function () {
        if (typeof want === "string") {
          const o = parseOptions(argv);
          expect(o).to.not.equal("help");
          if (o === "help") return;
          expect(o.profile.name).to.equal(want);
          expect(o.command).to.include(`--seed ${o.seed}`);
        } else expect(() => parseOptions(argv)).to.throw(UsageError, want);
      });
  });

  describe("mismatch", function () {
    const expected = expectedOf("a=alpha/p1, b=beta:ro, ../x");
    const status: PodStatus = {
      a: mounted("alpha", "p1"),
      b: mounted("beta", "", true),
      "#3": { state: "failed", bucket: "", prefix: "", readOnly: false, since: "x", error: "bad" },
    };
    it("[ok] status, mounts and ro/rw all match", function () {
      expect(mismatch(expected, DIR, status, [fuse("a"), fuse("b", true)])).to.equal(undefined);
    });
    it("[error] a desired mount still mounting", function () {
      const s = { ...status, a: { ...mounted("alpha", "p1"), state: "mounting" as const } };
      expect(mismatch(expected, DIR, s, [fuse("a"), fuse("b", true)])).to.match(/a is mounting/);
    });
    it("[error] a mount nobody wants", function () {
      expect(mismatch(expected, DIR, status, [fuse("a"), fuse("b", true), fuse("z")])).to.match(
        /z is mounted/,
      );
    });
    it("[error] two mounts stacked on one name", function () {
      expect(mismatch(expected, DIR, status, [fuse("a"), fuse("a"), fuse("b", true)])).to.match(/stacked/);
    });
    it("[error] rw where ro was asked for", function () {
      expect(mismatch(expected, DIR, status, [fuse("a"), fuse("b")])).to.match(/b is mounted rw/);
    });
    it("[error] the agent's record shows another prefix", function () {
      const records = new Map([
        ["a", { bucket: "alpha", prefix: "p2", readOnly: false }],
        ["b", { bucket: "beta", prefix: "", readOnly: true }],
      ]);
      expect(recordMismatch(expected, records)).to.match(/a was made from alpha:p2:rw/);
    });
  });

  it("percentile uses the nearest rank", function () {
    expect(percentile([], 99)).to.equal(undefined);
    expect(percentile([5, 1, 3, 2, 4], 50)).to.equal(3);
    expect(
      percentile(
        Array.from({ length: 100 }, (_, i) => i + 1),
        99,
      ),
    ).to.equal(99);
  });
});
