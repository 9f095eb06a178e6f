/**
 * The soak's pure core: its seeded streams, its command line, and the check that decides when a pod
 * matches its annotation (scripts/soak/catalog.ts). The soak itself runs with `npm run soak`.
 */
import { expect } from "chai";
import type { MountInfo } from "../../../agent/mount/mountinfo.js";
import type { PodStatus } from "../../../agent/reconcile/status.js";
import {
  expectedOf,
  mismatch,
  percentile,
  randomBuckets,
  recordMismatch,
} from "../../../scripts/soak/catalog.js";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { keptObjects } from "../../../scripts/lib/kept-cache.js";
import { Ledger } from "../../../scripts/soak/ledger.js";
import { servedPath } from "../../../scripts/soak/observe.js";
import { parseOptions, PROFILES, UsageError } from "../../../scripts/soak/options.js";
import { Prng } from "../../../scripts/soak/prng.js";
import { renderReport } from "../../../scripts/soak/report.js";

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

  it("servedPath: a client's staging directory stands for the pod mount point it is moved to", function () {
    expect(servedPath("/r/agent/staging/pods.0123abcd.out-1")).to.equal("/r/pods/0123abcd/out-1");
    expect(servedPath("/r/pods/0123abcd/out")).to.equal("/r/pods/0123abcd/out");
    expect(servedPath("--allow-other")).to.equal("--allow-other");
  });

  describe("write-back", function () {
    it("both profiles give the agent an upload grace well under its 60 s default, so the faults stay short", function () {
      for (const p of Object.values(PROFILES)) expect(p.uploadGraceSeconds).to.be.within(1, 15);
    });

    it("the report counts the two write-back faults and what became of their writes", function () {
      const L = new Ledger(() => undefined);
      L.count("faults.writeBack.removedWhileUnreachable");
      L.count("faults.writeBack.clientKilled");
      L.count("writeBack.remove.pendingConfirmed");
      L.count("writeBack.writesAcknowledged", 2);
      L.count("writeBack.faultWritesVerified", 2);
      L.checked("writeBack", 5);
      const text = renderReport({
        command: "npm run soak -- --profile short --seed 1",
        seed: 1,
        profile: "short",
        date: "2026-01-01T00:00:00Z",
        host: "test",
        revision: "commit abc",
        loadSeconds: 90,
        totalSeconds: 100,
        ledger: L,
        converged: [],
        cleanups: [],
        final: {
          settledMs: 100,
          livePods: 0,
          mountsChecked: 0,
          writes: { acknowledged: 0, verified: 0, lost: 0, corrupted: 0, misplaced: 0, recovered: 0 },
          resources: [],
          logErrors: new Map(),
        },
        cleanup: [],
        fatal: undefined,
        livePodsRange: [5, 8],
        maxLive: 5,
        boundSeconds: 60,
        uploadGraceSeconds: 5,
      });
      expect(text).to.include(
        "S3 unreachable (frozen) while an entry with pending writes is removed 1×; client killed with pending writes 1×",
      );
      expect(text).to.include("| write-back: writes an unmount could not upload are kept and announced");
      expect(text).to.include(
        "| … in S3 with their SHA-256 at the end, uploaded by the mount made again | 2 |",
      );
      expect(text).to.include("upload grace, 5 s here");
    });

    it("the operator's recovery takes the files rclone has not marked uploaded, with their bucket and key", async function () {
      const dir = await mkdtemp(join(tmpdir(), "dv-kept-"));
      try {
        const put = async (tree: string, path: string, content: string): Promise<void> => {
          const file = join(dir, "cache", tree, "dv{a1B2c}", path);
          await mkdir(join(file, ".."), { recursive: true });
          await writeFile(file, content);
        };
        await put("vfs", "outbox/p/dirty.bin", "1");
        await put("vfsMeta", "outbox/p/dirty.bin", JSON.stringify({ Dirty: true }));
        await put("vfs", "outbox/clean.bin", "2");
        await put("vfsMeta", "outbox/clean.bin", JSON.stringify({ Dirty: false }));
        await put("vfs", "outbox/torn.bin", "3");
        await put("vfsMeta", "outbox/torn.bin", "{");
        await put("vfsMeta", "outbox/no-data.bin", JSON.stringify({ Dirty: true }));
        const objects = (await keptObjects(dir)).map((o) => [o.bucket, o.key, o.file.slice(dir.length)]);
        expect(objects.sort()).to.deep.equal([
          ["outbox", "p/dirty.bin", "/cache/vfs/dv{a1B2c}/outbox/p/dirty.bin"],
          ["outbox", "torn.bin", "/cache/vfs/dv{a1B2c}/outbox/torn.bin"],
        ]);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
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
