import { expect } from "chai";
import {
  findMount,
  isFuse,
  isReadOnly,
  mountContaining,
  mountsUnder,
  parseMountinfo,
  parseMountinfoLine,
  parseMountinfoUnder,
  escapeMountinfo,
  propagationOf,
  unescapeMountinfo,
  type MountInfo,
} from "../../../../agent/mount/mountinfo.js";
import { AppError } from "../../../../shared/errors.js";

// Real-shaped lines: a Debian node with a shared root, the agent's rshared bind of its root, an
// s3fs and an rclone mount under a pod directory, a pod's rslave view, and a name with a space.
const NODE = [
  "22 27 0:21 / /proc rw,relatime - proc proc rw",
  "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard",
  "31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755",
  "50 27 254:0 /var/lib/dynamic-volumes /var/lib/dynamic-volumes rw,relatime shared:40 - ext4 /dev/vda rw,discard",
  "61 50 0:39 / /var/lib/dynamic-volumes/pods/0123456789abcdef0123456789abcdef/data rw,nosuid,nodev,relatime shared:41 - fuse.s3fs s3fs rw,user_id=0,group_id=0,allow_other",
  "62 50 0:40 / /var/lib/dynamic-volumes/pods/0123456789abcdef0123456789abcdef/logs ro,nosuid,nodev,relatime shared:42 - fuse.rclone dv{9vT8m}:logs/2024 ro,user_id=0,group_id=0,allow_other",
  "70 27 254:0 /var/lib/dynamic-volumes/pods/0123456789abcdef0123456789abcdef /run/pod/view rw,relatime master:40 - ext4 /dev/vda rw,discard",
  "71 70 0:39 / /run/pod/view/data rw,nosuid,nodev,relatime shared:43 master:41 - fuse.s3fs s3fs rw,user_id=0,group_id=0,allow_other",
  "80 27 0:50 / /mnt/with\\040space\\011tab rw,relatime unbindable - tmpfs my\\134src rw,size=4k",
  "",
].join("\n");

describe("mountinfo", () => {
  describe("unescapeMountinfo", () => {
    const rows: Array<[string, string]> = [
      ["/plain", "/plain"],
      ["/a\\040b", "/a b"],
      ["/tab\\011x", "/tab\tx"],
      ["/nl\\012x", "/nl\nx"],
      ["/back\\134slash", "/back\\slash"],
      ["/not\\escape\\9", "/not\\escape\\9"],
    ];
    for (const [input, want] of rows) {
      it(`[ok] ${JSON.stringify(input)} → ${JSON.stringify(want)}`, () => {
        expect(unescapeMountinfo(input)).to.equal(want);
      });
    }
  });

  describe("parseMountinfoLine", () => {
    it("[ok] reads every field of a shared FUSE mount", () => {
      const r = parseMountinfoLine(NODE.split("\n")[4]!);
      expect(r).to.deep.equal({
        mountId: 61,
        parentId: 50,
        major: 0,
        minor: 39,
        root: "/",
        mountPoint: "/var/lib/dynamic-volumes/pods/0123456789abcdef0123456789abcdef/data",
        mountOptions: ["rw", "nosuid", "nodev", "relatime"],
        optionalFields: ["shared:41"],
        sharedGroup: 41,
        fsType: "fuse.s3fs",
        source: "s3fs",
        superOptions: ["rw", "user_id=0", "group_id=0", "allow_other"],
      });
    });

    it("[ok] reads a line without optional fields", () => {
      const r = parseMountinfoLine("22 27 0:21 / /proc rw,relatime - proc proc rw");
      expect(r.optionalFields).to.deep.equal([]);
      expect(r.sharedGroup).to.equal(undefined);
      expect(r.masterGroup).to.equal(undefined);
      expect(r.fsType).to.equal("proc");
    });

    it("[ok] reads both shared and master peer groups", () => {
      const r = parseMountinfoLine(NODE.split("\n")[7]!);
      expect(r.optionalFields).to.deep.equal(["shared:43", "master:41"]);
      expect(r.sharedGroup).to.equal(43);
      expect(r.masterGroup).to.equal(41);
    });

    it("[ok] decodes escapes in the mount point and the source", () => {
      const r = parseMountinfoLine(NODE.split("\n")[8]!);
      expect(r.mountPoint).to.equal("/mnt/with space\ttab");
      expect(r.source).to.equal("my\\src");
    });

    it("[ok] keeps a bind mount's root", () => {
      const r = parseMountinfoLine(NODE.split("\n")[6]!);
      expect(r.root).to.equal("/var/lib/dynamic-volumes/pods/0123456789abcdef0123456789abcdef");
      expect(r.mountPoint).to.equal("/run/pod/view");
    });

    const bad: Array<[string, string]> = [
      ["too few fields", "22 27 0:21 / /proc"],
      ["no separator", "22 27 0:21 / /proc rw,relatime shared:1 proc proc rw"],
      ["nothing after the separator", "22 27 0:21 / /proc rw - proc"],
      ["a non-numeric id", "x 27 0:21 / /proc rw,relatime - proc proc rw"],
      ["a device without a colon", "22 27 021 / /proc rw,relatime - proc proc rw"],
    ];
    for (const [what, line] of bad) {
      it(`[error] ${what}`, () => {
        expect(() => parseMountinfoLine(line))
          .to.throw(AppError)
          .with.property("code", "Internal");
      });
    }
  });

  describe("parseMountinfo", () => {
    it("[ok] parses every line in order and skips blank lines", () => {
      const records = parseMountinfo(NODE);
      expect(records.map((r) => r.mountId)).to.deep.equal([22, 27, 31, 50, 61, 62, 70, 71, 80]);
    });

    it("[error] names the malformed line", () => {
      expect(() => parseMountinfo("22 27 0:21 / /proc rw - proc proc rw\ngarbage\n")).to.throw(/line 2/);
    });

    it("[ok] parses this machine's own mountinfo", async () => {
      const { readFile } = await import("node:fs/promises");
      const records = parseMountinfo(await readFile("/proc/self/mountinfo", "utf8"));
      expect(records.length).to.be.greaterThan(0);
      expect(findMount(records, "/")).to.not.equal(undefined);
    });
  });

  describe("mountsUnder", () => {
    const records = parseMountinfo(NODE);
    it("returns the directory's own mount and everything below, deepest first", () => {
      expect(mountsUnder(records, "/var/lib/dynamic-volumes").map((r) => r.mountId)).to.deep.equal([
        62, 61, 50,
      ]);
    });
    it("ignores a trailing slash and sibling prefixes", () => {
      const withSibling = [
        ...records,
        parseMountinfoLine("90 27 0:60 / /var/lib/dynamic-volumes-other rw - tmpfs tmpfs rw"),
      ];
      expect(mountsUnder(withSibling, "/var/lib/dynamic-volumes/").map((r) => r.mountId)).to.deep.equal([
        62, 61, 50,
      ]);
    });
    it("puts the newest of stacked mounts first", () => {
      const stacked = [
        ...records,
        parseMountinfoLine(
          "99 50 0:70 / /var/lib/dynamic-volumes/pods/0123456789abcdef0123456789abcdef/data rw - fuse.rclone dv:x rw",
        ),
      ];
      const ids = mountsUnder(stacked, "/var/lib/dynamic-volumes/pods").map((r) => r.mountId);
      expect(ids.indexOf(99)).to.be.lessThan(ids.indexOf(61));
    });
    it("returns nothing for a directory without mounts", () => {
      expect(mountsUnder(records, "/srv")).to.deep.equal([]);
    });
  });

  describe("findMount", () => {
    const records = parseMountinfo(NODE);
    it("finds the mount whose mount point is exactly the path", () => {
      expect(findMount(records, "/run/pod/view/data")?.mountId).to.equal(71);
    });
    it("returns undefined for a directory inside a mount", () => {
      expect(findMount(records, "/run/pod/view/data/sub")).to.equal(undefined);
    });
    it("finds paths with escaped characters", () => {
      expect(findMount(records, "/mnt/with space\ttab")?.mountId).to.equal(80);
    });
    it("returns the topmost of stacked mounts", () => {
      const stacked = [...records, parseMountinfoLine("99 71 0:70 / /run/pod/view/data rw - tmpfs t rw")];
      expect(findMount(stacked, "/run/pod/view/data")?.mountId).to.equal(99);
    });
  });

  describe("mountContaining", () => {
    const records = parseMountinfo(NODE);
    it("finds the deepest mount that holds the path", () => {
      expect(mountContaining(records, "/run/pod/view/data/x/y")?.mountId).to.equal(71);
      expect(mountContaining(records, "/etc/passwd")?.mountId).to.equal(27);
    });
  });

  describe("isFuse", () => {
    const rows: Array<[string, boolean]> = [
      ["fuse.s3fs", true],
      ["fuse.rclone", true],
      ["fuse", true],
      ["fuseblk", true],
      ["fusectl", false],
      ["ext4", false],
      ["tmpfs", false],
    ];
    for (const [fsType, want] of rows) {
      it(`[ok] ${fsType} → ${want}`, () => {
        expect(isFuse({ fsType } as MountInfo)).to.equal(want);
      });
    }
  });

  describe("propagationOf", () => {
    const records = parseMountinfo(NODE);
    const byId = (id: number): MountInfo => records.find((r) => r.mountId === id)!;
    it("[ok] shared:N → shared", () => expect(propagationOf(byId(50))).to.equal("shared"));
    it("[ok] master:N → slave", () => expect(propagationOf(byId(70))).to.equal("slave"));
    it("[ok] shared:N master:M → shared", () => expect(propagationOf(byId(71))).to.equal("shared"));
    it("[ok] no optional fields → private", () => expect(propagationOf(byId(22))).to.equal("private"));
    it("[ok] unbindable → unbindable", () => expect(propagationOf(byId(80))).to.equal("unbindable"));
  });

  describe("isReadOnly", () => {
    const records = parseMountinfo(NODE);
    it("reads ro from the per-mount options", () => {
      expect(isReadOnly(records.find((r) => r.mountId === 62)!)).to.equal(true);
      expect(isReadOnly(records.find((r) => r.mountId === 61)!)).to.equal(false);
    });
  });

  describe("parseMountinfoUnder", () => {
    it("gives the same mounts as a full parse filtered to the directory, in the kernel's order", () => {
      const all = parseMountinfo(NODE);
      for (const dir of [
        "/var/lib/dynamic-volumes",
        "/var/lib/dynamic-volumes/pods",
        "/var/lib/dynamic-volumes/pods/0123456789abcdef0123456789abcdef/data",
        "/var/lib/dynamic-volumes/pods/0123456789abcdef0123456789abcdef/dat",
        "/run/pod/view/",
        "/mnt/with space\ttab",
        "/",
        "/nowhere",
      ]) {
        const base = dir.length > 1 ? dir.replace(/\/+$/, "") : dir;
        const want = all.filter(
          (m) => m.mountPoint === base || m.mountPoint.startsWith(base === "/" ? "/" : `${base}/`),
        );
        expect(parseMountinfoUnder(NODE, dir), dir).to.deep.equal(want);
      }
      expect(parseMountinfoUnder(NODE, "/var/lib/dynamic-volumes/pods").map((m) => m.mountId)).to.deep.equal([
        61, 62,
      ]);
    });

    it("escapes a path as the kernel does", () => {
      expect(escapeMountinfo("/mnt/with space\ttab\\x\ny")).to.equal(
        "/mnt/with\\040space\\011tab\\134x\\012y",
      );
      expect(unescapeMountinfo(escapeMountinfo("/a b\\c"))).to.equal("/a b\\c");
    });

    it("still refuses a malformed line it has to read", () => {
      expect(() => parseMountinfoUnder("61 50 garbage /pods/x\n", "/pods")).to.throw(AppError);
    });
  });
});
