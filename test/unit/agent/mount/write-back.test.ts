import { expect } from "chai";
import { join } from "node:path";
import { rclone } from "../../../../agent/mount/mounters/rclone.js";
import {
  CACHE_DIR_NAME,
  cacheVerdict,
  dirtyFlag,
  mayHaveLostWrites,
  objectPath,
  writeBackEvent,
  type CacheFile,
  type WriteBackReport,
} from "../../../../agent/mount/write-back.js";

/** rclone 1.60's metadata for a file, as it writes it. */
function meta(dirty: boolean): string {
  return JSON.stringify(
    {
      ModTime: "2026-12-02T16:30:58.942403294Z",
      ATime: "2026-12-02T16:30:58.942698869Z",
      Size: 16777216,
      Rs: [{ Pos: 0, Size: 16777216 }],
      Fingerprint: dirty ? "" : "16777216,2026-12-02 16:30:58.942403294 +0000 UTC,9e88dfea",
      Dirty: dirty,
    },
    null,
    "\t",
  );
}

const REMOTE = "dv{pyt6U}";
const data = (path: string): CacheFile => ({ path: `${REMOTE}/${path}`, tree: "data" });
const metaFile = (path: string, text: string | undefined): CacheFile =>
  text === undefined
    ? { path: `${REMOTE}/${path}`, tree: "meta" }
    : { path: `${REMOTE}/${path}`, tree: "meta", text };

describe("write-back", () => {
  describe("dirtyFlag", () => {
    const rows: Array<[string, string, boolean | undefined]> = [
      ["[ok] a dirty item", meta(true), true],
      ["[ok] an uploaded item", meta(false), false],
      ["[error] truncated JSON (a crash while rclone wrote it)", meta(true).slice(0, 40), undefined],
      ["[error] no Dirty field", JSON.stringify({ Size: 1 }), undefined],
      ["[error] Dirty that is not a boolean", JSON.stringify({ Dirty: "false" }), undefined],
      ["[error] not an object", "[true]", undefined],
      ["[error] empty", "", undefined],
    ];
    for (const [title, text, want] of rows) it(title, () => expect(dirtyFlag(text)).to.equal(want));
  });

  describe("objectPath", () => {
    it("drops the remote's name: what remains is the bucket and the key", () => {
      expect(objectPath(`${REMOTE}/outbox/dir/big.bin`)).to.equal("outbox/dir/big.bin");
      expect(objectPath("lonely")).to.equal("lonely");
    });
  });

  describe("cacheVerdict: pending or not, from the cache's own metadata", () => {
    const rows: Array<[string, CacheFile[], boolean, { dirty?: string[]; unsure?: string[] }]> = [
      ["[ok] no cache at all: nothing pending", [], false, {}],
      [
        "[ok] every item uploaded: nothing pending",
        [
          data("outbox/a"),
          metaFile("outbox/a", meta(false)),
          data("outbox/b"),
          metaFile("outbox/b", meta(false)),
        ],
        false,
        {},
      ],
      [
        "[ok] uploaded metadata without data: nothing pending",
        [metaFile("outbox/a", meta(false))],
        false,
        {},
      ],
      [
        "[pending] one dirty item among uploaded ones",
        [
          data("outbox/a"),
          metaFile("outbox/a", meta(false)),
          data("outbox/b"),
          metaFile("outbox/b", meta(true)),
        ],
        true,
        { dirty: ["outbox/b"] },
      ],
      [
        "[pending] dirty metadata whose data is gone still counts",
        [metaFile("outbox/b", meta(true))],
        true,
        { dirty: ["outbox/b"] },
      ],
      [
        "[pending] metadata that cannot be parsed",
        [data("outbox/a"), metaFile("outbox/a", "{")],
        true,
        { unsure: ["outbox/a"] },
      ],
      [
        "[pending] metadata that cannot be read",
        [data("outbox/a"), metaFile("outbox/a", undefined)],
        true,
        { unsure: ["outbox/a"] },
      ],
      ["[pending] data without metadata", [data("outbox/a")], true, { unsure: ["outbox/a"] }],
    ];
    for (const [title, files, pending, want] of rows)
      it(title, () => {
        const v = cacheVerdict({ files, complete: true });
        expect(v.pending).to.equal(pending);
        expect(v.dirty).to.deep.equal(want.dirty ?? []);
        expect(v.unsure).to.deep.equal(want.unsure ?? []);
        expect(v.incomplete).to.equal(false);
      });

    it("[pending] a cache that could not be read to the end, even if what was read is clean", () => {
      const v = cacheVerdict({
        files: [data("outbox/a"), metaFile("outbox/a", meta(false))],
        complete: false,
      });
      expect(v).to.include({ pending: true, incomplete: true });
    });

    it("sorts what it names and never names an object twice", () => {
      const v = cacheVerdict({
        files: [
          data("b/2"),
          metaFile("b/2", meta(true)),
          data("a/1"),
          metaFile("a/1", meta(true)),
          data("c/3"),
        ],
        complete: true,
      });
      expect(v.dirty).to.deep.equal(["a/1", "b/2"]);
      expect(v.unsure).to.deep.equal(["c/3"]);
    });
  });

  describe("keep or delete, by client", () => {
    it("the rclone builder's cache directory is the one the agent looks at", () => {
      const stateDir = "/var/lib/dynamic-volumes/agent/mounts/0123/out";
      const cmd = rclone.build({
        bucket: "outbox",
        prefix: "",
        readOnly: false,
        mountPoint: "/var/lib/dynamic-volumes/pods/0123/out",
        endpoint: "http://127.0.0.1:9000",
        region: "",
        credentials: { accessKeyID: "k", secretAccessKey: "s" },
        options: {},
        stateDir,
      });
      expect(cmd.cacheDir).to.equal(join(stateDir, CACHE_DIR_NAME));
    });

    const rows: Array<[string, Parameters<typeof mayHaveLostWrites>, boolean]> = [
      ["[lost] geesefs stopped after the grace", ["geesefs", "stopped"], true],
      ["[lost] geesefs died", ["geesefs", "died"], true],
      [
        "[ok] geesefs exited by itself after the unmount (its uploads were done)",
        ["geesefs", "exited"],
        false,
      ],
      ["[ok] geesefs not started by this agent: its end is not known", ["geesefs", "unknown"], false],
      ["[ok] s3fs stopped: close() had already uploaded or failed", ["s3fs", "stopped"], false],
      ["[ok] rclone died: its cache, not its memory, holds the writes", ["rclone", "died"], false],
      ["[ok] unknown client", [undefined, "died"], false],
    ];
    for (const [title, args, want] of rows)
      it(title, () => expect(mayHaveLostWrites(...args)).to.equal(want));
  });

  describe("writeBackEvent", () => {
    const kept = (over: Partial<Extract<WriteBackReport, { outcome: "kept" }>> = {}): WriteBackReport => ({
      outcome: "kept",
      mounter: "rclone",
      client: "stopped",
      graceMs: 60_000,
      stateDir: "/var/lib/dynamic-volumes/agent/mounts/0123/out",
      cacheDir: "/var/lib/dynamic-volumes/agent/mounts/0123/out/cache",
      verdict: { pending: true, dirty: ["outbox/big.bin"], unsure: [], incomplete: false },
      ...over,
    });

    it("an entry removed while S3 was unreachable: names the mount, the object, the cache and what to do", () => {
      const e = writeBackEvent("out", kept(), "removed", "out=outbox:rw");
      expect(e.reason).to.equal("WriteBackPending");
      expect(e.message).to.equal(
        "out: 1 file written through this mount is not in S3 yet (outbox/big.bin): rclone had not finished " +
          "uploading 60 s after the unmount (is the S3 endpoint reachable?) and was stopped. The cache is kept in " +
          '/var/lib/dynamic-volumes/agent/mounts/0123/out/cache; add "out=outbox:rw" back to dynamic-volumes/buckets ' +
          "(same Secret) to upload them.",
      );
    });

    it("a client that died: the remount uploads them", () => {
      const e = writeBackEvent("out", kept({ client: "died" }), "remount", "out=outbox:rw");
      expect(e.message).to.match(
        /rclone died before uploading them\. The cache is kept in \S+ and the new mount of out uploads them once S3 answers\.$/,
      );
    });

    it("a finished pod: an operator must act", () => {
      const e = writeBackEvent("out", kept(), "pod-done", undefined);
      expect(e.message).to.include("no mount will upload them");
      expect(e.message).to.include("docs/troubleshooting.md");
    });

    it("a changed entry: only the previous kind of mount uploads them", () => {
      const e = writeBackEvent("out", kept(), "changed", "out=outbox:rw");
      expect(e.message).to.include('set the entry back to "out=outbox:rw"');
    });

    it("stays within 1024 characters however many objects there are, keeping the path and the advice", () => {
      const many = Array.from({ length: 500 }, (_, i) => `outbox/${"d".repeat(40)}/file-${i}.bin`);
      const e = writeBackEvent(
        "out",
        kept({ verdict: { pending: true, dirty: many, unsure: [], incomplete: false } }),
        "removed",
        "out=outbox:rw",
      );
      expect(e.message.length).to.be.at.most(1024);
      expect(e.message).to.match(/^out: 500 files written through this mount are not in S3 yet/);
      expect(e.message).to.include("/var/lib/dynamic-volumes/agent/mounts/0123/out/cache");
      expect(e.message).to.match(/to upload them\.$/);
    });

    it("a geesefs client stopped with writes in memory: WriteBackLost", () => {
      const e = writeBackEvent(
        "out",
        { outcome: "maybe-lost", mounter: "geesefs", client: "stopped", graceMs: 60_000 },
        "removed",
        "out=outbox:rw",
      );
      expect(e.reason).to.equal("WriteBackLost");
      expect(e.message).to.match(
        /^out: geesefs had not finished uploading 60 s after the unmount and was stopped; .* may be lost/,
      );
    });
  });
});
