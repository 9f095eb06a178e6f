import { expect } from "chai";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { complete, completionDataOf } from "../../../dvctl/completion.js";
import { loadHistory, saveHistory } from "../../../dvctl/history.js";
import type { ListResult } from "../../../shared/protocol.js";

const list: ListResult = {
  node: "n",
  pods: [
    {
      namespace: "team-a",
      pod: "trainer-0",
      node: "n",
      mountPath: "/d",
      mounts: [
        { name: "data", state: "mounted", bucket: "b", prefix: "", readOnly: false, path: "/d/data" },
        { name: "models", state: "mounted", bucket: "m", prefix: "", readOnly: true, path: "/d/models" },
      ],
    },
    { namespace: "team-a", pod: "trainer-1", node: "n", mountPath: "/d", mounts: [] },
    { namespace: "team-b", pod: "web", node: "n", mountPath: "/d", mounts: [] },
  ],
};
const data = completionDataOf(list);

describe("console completion", () => {
  const rows: Array<[string, string, [string[], string]]> = [
    ["commands", "", [["exit", "help", "ls", "mount", "quit", "status", "umount", "watch"], ""]],
    ["a command prefix", "st", [["status"], "st"]],
    ["ns/pod for status", "status team-a/", [["team-a/trainer-0", "team-a/trainer-1"], "team-a/"]],
    ["ns/pod for mount", "mount t", [["team-a/trainer-0", "team-a/trainer-1", "team-b/web"], "t"]],
    ["nothing for the bucket", "mount team-a/trainer-0 x", [[], "x"]],
    ["mount flags", "mount team-a/trainer-0 alpha --", [["--name", "--replace", "--ro", "--timeout"], "--"]],
    ["nothing after a flag that takes a value", "mount a/b c --name ", [[], ""]],
    ["mount names of the pod for umount", "umount team-a/trainer-0 ", [["data", "models"], ""]],
    ["mount names by prefix", "umount team-a/trainer-0 m", [["models"], "m"]],
    ["no mount names for an unknown pod", "umount team-z/x ", [[], ""]],
    ["namespaces after -n", "ls -n team-", [["team-a", "team-b"], "team-"]],
    [
      "pods for watch after -n NS",
      "watch -n team-b ",
      [["team-a/trainer-0", "team-a/trainer-1", "team-b/web"], ""],
    ],
    ["nothing for an unknown command", "frob ", [[], ""]],
    ["nothing past the last argument", "status team-a/trainer-0 ", [[], ""]],
  ];
  for (const [name, line, want] of rows) it(name, () => expect(complete(line, data)).to.deep.equal(want));
});

describe("console history file", () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), "dvctl-history-"))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("keeps the newest entries, oldest first on disk, readable by the owner only", () => {
    const file = join(dir, ".dvctl_history");
    // readline's history is newest first.
    saveHistory(file, ["c", "b", "a"], 2);
    expect(readFileSync(file, "utf8")).to.equal("b\nc\n");
    expect(statSync(file).mode & 0o777).to.equal(0o600);
    expect(loadHistory(file)).to.deep.equal(["c", "b"]);
  });

  it("loads at most the bound, and nothing from a missing file", () => {
    const file = join(dir, "h");
    writeFileSync(file, Array.from({ length: 20 }, (_, i) => `ls ${i}`).join("\n") + "\n\n");
    expect(loadHistory(file, 3)).to.deep.equal(["ls 19", "ls 18", "ls 17"]);
    expect(loadHistory(join(dir, "none"))).to.deep.equal([]);
  });

  it("ignores a directory it cannot write", () => {
    expect(() => saveHistory(join(dir, "no", "such", "h"), ["ls"])).to.not.throw();
  });
});
