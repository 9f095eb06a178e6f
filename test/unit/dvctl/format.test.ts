import { expect } from "chai";
import {
  WatchTable,
  formatAge,
  formatJson,
  formatJsonLine,
  formatList,
  formatMountResult,
  formatProgress,
  formatStatus,
  formatTable,
  formatUnmountResult,
  printable,
} from "../../../dvctl/format.js";
import type { ListResult, PodSummary, StateEvent } from "../../../shared/protocol.js";

const NOW = new Date("2025-06-01T12:00:00Z");
const ago = (seconds: number): string => new Date(NOW.getTime() - seconds * 1000).toISOString();

const trainer: PodSummary = {
  namespace: "team-a",
  pod: "trainer-0",
  node: "node-1",
  mountPath: "/datasets",
  mounts: [
    {
      name: "imagenet",
      state: "mounted",
      bucket: "datasets",
      prefix: "imagenet/2012",
      readOnly: true,
      path: "/datasets/imagenet",
      since: ago(45),
    },
    {
      name: "out",
      state: "failed",
      bucket: "results",
      prefix: "",
      readOnly: false,
      path: "/datasets/out",
      since: ago(3 * 3600 + 600),
      error: "s3fs exited: bucket results does not exist",
    },
    { name: "new", state: "pending", bucket: "scratch", prefix: "", readOnly: false, path: "/datasets/new" },
  ],
};
const idle: PodSummary = { namespace: "team-b", pod: "idle", node: "node-1", mountPath: "/data", mounts: [] };
const list: ListResult = { node: "node-1", pods: [trainer, idle] };

describe("formatAge", () => {
  const rows: Array<[string, string | undefined, string]> = [
    ["[ok] no time (pending)", undefined, "-"],
    ["[ok] just now", ago(0), "0s"],
    ["[ok] a second in the future is clock skew, shown as 0s", ago(-1), "0s"],
    ["[ok] seconds below two minutes", ago(119), "119s"],
    ["[ok] minutes and seconds below ten minutes", ago(190), "3m10s"],
    ["[ok] whole minutes drop the seconds", ago(240), "4m"],
    ["[ok] minutes below three hours", ago(179 * 60), "179m"],
    ["[ok] hours and minutes below eight hours", ago(5 * 3600 + 7 * 60), "5h7m"],
    ["[ok] hours below two days", ago(30 * 3600), "30h"],
    ["[ok] days and hours below eight days", ago(2 * 86400 + 3 * 3600), "2d3h"],
    ["[ok] days below two years", ago(400 * 86400), "400d"],
    ["[ok] years and days", ago((3 * 365 + 10) * 86400), "3y10d"],
    ["[ok] years beyond eight", ago(9 * 365 * 86400), "9y"],
    ["[error] far in the future", ago(-120), "<invalid>"],
    ["[error] not a time", "yesterday", "<unknown>"],
  ];
  for (const [name, since, want] of rows)
    it(name, () => {
      expect(formatAge(since, NOW)).to.equal(want);
    });
});

describe("formatTable", () => {
  it("aligns columns three spaces apart and trims trailing blanks", () => {
    expect(formatTable(["A", "LONGER", "C"], [["xx", "y", "z"]])).to.equal(
      "A    LONGER   C\nxx   y        z\n",
    );
  });
  it("leaves out a last column that is empty in every row", () => {
    expect(formatTable(["A", "MESSAGE"], [["x", ""]])).to.equal("A\nx\n");
  });
  it("puts control characters and newlines from the agent on one printable line", () => {
    expect(formatTable(["A"], [["evil\u001b[2Jtext\nmore"]])).to.equal("A\nevil?[2Jtext more\n");
  });
});

describe("formatList", () => {
  it("shows one row per mount with STATE and AGE, and dashes for a pod without mounts", () => {
    expect(formatList(list, NOW).table).to.equal(
      [
        "NAMESPACE   POD         NAME       STATE     SOURCE                   ACCESS   AGE     MESSAGE",
        "team-a      trainer-0   imagenet   mounted   datasets/imagenet/2012   ro       45s",
        "team-a      trainer-0   out        failed    results                  rw       3h10m   s3fs exited: bucket results does not exist",
        "team-a      trainer-0   new        pending   scratch                  rw       -",
        "team-b      idle        -          -         -                        -        -",
        "",
      ].join("\n"),
    );
  });
  it("says so, for stderr, when the node serves no pod", () => {
    expect(formatList({ node: "node-1", pods: [] }, NOW)).to.deep.equal({
      empty: "No pods with a dynamic-volumes volume on node node-1.\n",
    });
  });
  it("shows a pod's problem in MESSAGE", () => {
    const refused = { ...idle, problem: "the id signature does not verify" };
    expect(formatList({ node: "n", pods: [refused] }, NOW).table).to.include(
      "the id signature does not verify",
    );
  });
});

describe("formatStatus", () => {
  it("shows the pod, node and mount path, then its mounts with PATH", () => {
    const text = formatStatus(trainer, NOW);
    expect(text).to.match(/^Pod: {9}team-a\/trainer-0\nNode: {8}node-1\nMount path: {2}\/datasets\n\n/);
    expect(text).to.include(
      "NAME       STATE     SOURCE                   ACCESS   PATH                 AGE",
    );
    expect(text).to.include(
      "imagenet   mounted   datasets/imagenet/2012   ro       /datasets/imagenet   45s",
    );
  });
  it("says <none> for a pod without mounts and shows its problem", () => {
    expect(formatStatus({ ...idle, problem: "forged" }, NOW)).to.equal(
      "Pod:         team-b/idle\nNode:        node-1\nMount path:  /data\nProblem:     forged\nMounts:      <none>\n",
    );
  });
});

describe("one-line results", () => {
  it("formats a mounted and a failed mount", () => {
    expect(formatMountResult({ namespace: "team-a", pod: "p", mount: trainer.mounts[0]! })).to.equal(
      "team-a/p: imagenet mounted at /datasets/imagenet (datasets/imagenet/2012, ro)\n",
    );
    expect(formatMountResult({ namespace: "team-a", pod: "p", mount: trainer.mounts[1]! })).to.equal(
      "team-a/p: out failed: s3fs exited: bucket results does not exist\n",
    );
  });
  it("shows a failure's cause and fix and how to remove the entry, once; the client's output only with -v", () => {
    const error = [
      'bucket "nosuch" was not found at http://s3:9000: check the bucket\'s name in the annotation, or create the bucket.',
      's3fs could not mount bucket "nosuch" on /var/lib/dynamic-volumes/pods/1/x: the client exited. Client output:',
      "[CRT] s3fs.cpp:s3fs_check_service(3593): bucket or key not found",
      "The entry stays in the pod's buckets annotation and is retried with backoff; remove it with: dvctl umount a/p x",
    ].join("\n");
    const mount = { ...trainer.mounts[1]!, name: "x", error };
    const plain = formatMountResult({ namespace: "a", pod: "p", mount });
    expect(plain).to.equal(
      'a/p: x failed: bucket "nosuch" was not found at http://s3:9000: check the bucket\'s name in the annotation, or create the bucket.\n' +
        "  The entry stays in the pod's buckets annotation and is retried with backoff; remove it with: dvctl umount a/p x\n" +
        "  (-v shows the client's output)\n",
    );
    expect(plain).to.not.include("s3fs_check_service");
    const verbose = formatMountResult({ namespace: "a", pod: "p", mount }, true);
    expect(verbose).to.include("s3fs_check_service");
    expect(verbose.split('bucket "nosuch" was not found')).to.have.length(2);
    expect(formatProgress("a/p", { name: "x", state: "failed", error })).to.equal("a/p x: failed\n");
  });

  it("formats an unmount and progress", () => {
    expect(formatUnmountResult({ namespace: "a", pod: "p", name: "x", state: "removed" })).to.equal(
      "a/p: x removed\n",
    );
    expect(
      formatProgress("a/p", { name: "x", state: "mounting", bucket: "b", prefix: "k", readOnly: false }),
    ).to.equal("a/p x: mounting (b/k, rw)\n");
    expect(formatProgress("a/p", { name: "x", state: "removed" })).to.equal("a/p x: removed\n");
  });
});

describe("WatchTable", () => {
  /** Where each column of a table line starts: after the three spaces that separate columns. */
  const starts = (line: string): number[] => [
    0,
    ...[...line.matchAll(/ {3,}(?=\S)/g)].map((m) => m.index + m[0].length),
  ];
  const event = (name: string, pod = "trainer-0"): StateEvent => ({
    event: "state",
    watch: 1,
    namespace: "team-a",
    pod,
    name,
    state: "mounting",
    bucket: "b",
    prefix: "",
    readOnly: true,
  });

  it("streams rows under the header's columns, with room for longer names than the snapshot's", () => {
    const t = new WatchTable(list, NOW);
    const header = t.header.trimEnd();
    for (const line of t.snapshotRows.trimEnd().split("\n"))
      expect(starts(line)).to.deep.equal(starts(header).slice(0, starts(line).length));
    const row = t.row(event("a-longer-name", "trainer-with-a-long-name"));
    expect(row.split("\n")).to.have.length(2);
    expect(starts(row.trimEnd())).to.deep.equal(starts(header).slice(0, 7));
    const empty = new WatchTable({ node: "n", pods: [] }, NOW);
    expect(starts(empty.row(event("data", "p")).trimEnd())).to.deep.equal(
      starts(empty.header.trimEnd()).slice(0, 7),
    );
  });

  it("a row wider than the columns widens them and prints the header again above it, never cut", () => {
    const t = new WatchTable(list, NOW);
    const long = "a-mount-name-longer-than-sixteen";
    const out = t.row(event(long)).trimEnd().split("\n");
    expect(out).to.have.length(2);
    expect(out[0]).to.match(/^NAMESPACE\s+POD\s+NAME\s+STATE/);
    expect(out[1]).to.include(long);
    expect(starts(out[1]!)).to.deep.equal(starts(out[0]!).slice(0, 7));
    // The next row keeps the widened columns, without another header.
    const next = t.row(event("x")).trimEnd().split("\n");
    expect(next).to.have.length(1);
    expect(starts(next[0]!)).to.deep.equal(starts(out[0]!).slice(0, 7));
  });
});

describe("JSON output", () => {
  it("prints the result as it came, indented, and streams as one document per line", () => {
    expect(JSON.parse(formatJson(list))).to.deep.equal(list);
    expect(formatJson({ a: 1 })).to.equal('{\n  "a": 1\n}\n');
    expect(formatJsonLine({ a: 1 })).to.equal('{"a":1}\n');
  });
  it("escapes control characters, so JSON needs no other filtering", () => {
    expect(formatJsonLine({ e: "\u001b[2J" })).to.equal('{"e":"\\u001b[2J"}\n');
  });
});

describe("printable", () => {
  it("keeps tabs and newlines and replaces other control characters", () => {
    expect(printable("a\tb\nc\u0007d\u009be")).to.equal("a\tb\nc?d?e");
  });
});
