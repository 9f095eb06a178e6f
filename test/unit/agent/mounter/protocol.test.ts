/**
 * The mounter's wire check: every request the mounter acts on has passed {@link parseRequest}, so
 * each refusal here is a request that never reaches the engine. Messages name the problem and
 * never carry a credential.
 */
import { expect } from "chai";
import {
  fromWireError,
  LineReader,
  MAX_DEPTH,
  MAX_LINE_BYTES,
  MAX_RECORD_BYTES,
  parseRequest,
  seqOf,
  wireError,
} from "../../../../agent/mounter/protocol.js";
import { AppError, ConfigError, ERROR_CODES } from "../../../../shared/errors.js";

const POD = "0123456789abcdef0123456789abcdef";
const SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";

const MOUNT = {
  seq: 7,
  op: "mount",
  podId: POD,
  name: "data",
  mounter: "geesefs",
  bucket: "my-bucket",
  prefix: "some/prefix",
  readOnly: false,
  endpoint: "http://127.0.0.1:9000",
  region: "us-east-1",
  accessKeyID: "AKIAEXAMPLE",
  secretAccessKey: SECRET,
  options: { "stat-cache-ttl": "1m", "no-checksum": true },
};

const line = (v: unknown): Buffer => Buffer.from(typeof v === "string" ? v : JSON.stringify(v));
const parse = (v: unknown): ReturnType<typeof parseRequest> => parseRequest(line(v));

/** The AppError `parseRequest` throws on `v`; fails when it accepts. */
function refusal(v: unknown): AppError {
  try {
    parse(v);
  } catch (e) {
    expect(e).to.be.instanceOf(AppError);
    return e as AppError;
  }
  throw new Error(
    `expected a refusal of ${typeof v === "string" ? v.slice(0, 80) : JSON.stringify(v).slice(0, 80)}`,
  );
}

function badRequest(v: unknown, message: RegExp): AppError {
  const e = refusal(v);
  expect(e.code, e.message).to.equal("BadRequest");
  expect(e.message).to.match(message);
  return e;
}

describe("parseRequest", () => {
  describe("[ok] well-formed requests", () => {
    it("mount, with every field and the optional uid and gid", () => {
      expect(parse(MOUNT)).to.deep.equal(MOUNT);
      const withIds = { ...MOUNT, uid: 1000, gid: 0 };
      expect(parse(withIds)).to.deep.equal(withIds);
      for (const mounter of ["geesefs", "s3fs", "rclone"])
        expect(parse({ ...MOUNT, mounter }).op).to.equal("mount");
      expect(parse({ ...MOUNT, readOnly: true, prefix: "", options: {} })).to.include({ readOnly: true });
    });

    it("unmount, one component (an entry) to 16 (a mount found deeper)", () => {
      expect(parse({ seq: 1, op: "unmount", podId: POD, path: ["data"] })).to.deep.equal({
        seq: 1,
        op: "unmount",
        podId: POD,
        path: ["data"],
      });
      const deep = Array.from({ length: 16 }, (_, i) => `d${i}`);
      expect(parse({ seq: 2, op: "unmount", podId: POD, path: deep })).to.deep.include({ path: deep });
      // Names that merely contain dots are single directory names.
      expect(parse({ seq: 3, op: "unmount", podId: POD, path: ["..a", "a..", ".hidden"] }).op).to.equal(
        "unmount",
      );
    });

    it("rmdir of a pod's directory (no component) or one below it", () => {
      expect(parse({ seq: 1, op: "rmdir", podId: POD, path: [] })).to.deep.equal({
        seq: 1,
        op: "rmdir",
        podId: POD,
        path: [],
      });
      expect(parse({ seq: 1, op: "rmdir", podId: POD, path: ["data"] })).to.deep.include({ path: ["data"] });
    });

    it("readRecord, writeRecord, forget, forgetPod", () => {
      expect(parse({ seq: 1, op: "readRecord", podId: POD, name: "data" })).to.deep.equal({
        seq: 1,
        op: "readRecord",
        podId: POD,
        name: "data",
      });
      const record = { bucket: "b", prefix: "", secret: { namespace: "ns", name: "s" } };
      expect(parse({ seq: 2, op: "writeRecord", podId: POD, name: "data", record })).to.deep.equal({
        seq: 2,
        op: "writeRecord",
        podId: POD,
        name: "data",
        record,
      });
      expect(parse({ seq: 3, op: "forget", podId: POD, name: "a-1" })).to.deep.equal({
        seq: 3,
        op: "forget",
        podId: POD,
        name: "a-1",
      });
      expect(parse({ seq: 4, op: "forgetPod", podId: POD })).to.deep.equal({
        seq: 4,
        op: "forgetPod",
        podId: POD,
      });
    });

    it("ids, list and ping, with seq 0 and the largest safe seq", () => {
      expect(parse({ seq: 0, op: "ids" })).to.deep.equal({ seq: 0, op: "ids" });
      expect(parse({ seq: 1, op: "list" })).to.deep.equal({ seq: 1, op: "list" });
      expect(parse({ seq: Number.MAX_SAFE_INTEGER, op: "ping" })).to.deep.equal({
        seq: Number.MAX_SAFE_INTEGER,
        op: "ping",
      });
    });

    it("a record exactly at the size limit", () => {
      const empty = JSON.stringify({ x: "" }).length;
      const record = { x: "a".repeat(MAX_RECORD_BYTES - empty) };
      expect(JSON.stringify(record).length).to.equal(MAX_RECORD_BYTES);
      expect(parse({ seq: 1, op: "writeRecord", podId: POD, name: "data", record }).op).to.equal(
        "writeRecord",
      );
    });

    it("nesting exactly at the limit, and brackets inside strings do not count", () => {
      let record: unknown = "leaf";
      for (let i = 0; i < MAX_DEPTH - 1; i++) record = { r: record };
      expect(parse({ seq: 1, op: "writeRecord", podId: POD, name: "data", record }).op).to.equal(
        "writeRecord",
      );
      const brackets = {
        seq: 1,
        op: "writeRecord",
        podId: POD,
        name: "data",
        record: { s: "[[[[[[[[[[{{{{{{{{{" },
      };
      expect(parse(brackets).op).to.equal("writeRecord");
    });
  });

  describe("[error] the op and its fields", () => {
    it("refuses an unknown or missing op, naming the ops there are", () => {
      badRequest({ seq: 1, op: "exec" }, /op "exec" is not one of mount, unmount, rmdir/);
      badRequest({ seq: 1, op: "Mount" }, /op "Mount" is not one of/);
      badRequest({ seq: 1 }, /op nothing is not one of/);
      badRequest({ seq: 1, op: 3 }, /op 3 is not one of/);
      badRequest({ seq: 1, op: "constructor" }, /is not one of/);
      badRequest({ seq: 1, op: "__proto__" }, /is not one of/);
    });

    it("refuses a field the op does not take: a mount point, an argv, a path on mount", () => {
      badRequest({ ...MOUNT, mountPoint: "/etc" }, /^mount takes no field "mountPoint"$/);
      badRequest({ ...MOUNT, argv: ["/bin/sh", "-c", "id"] }, /^mount takes no field "argv"$/);
      badRequest({ ...MOUNT, path: ["data"] }, /mount takes no field "path"/);
      badRequest({ ...MOUNT, stateDir: "/root" }, /mount takes no field "stateDir"/);
      badRequest({ ...MOUNT, program: "/bin/sh" }, /mount takes no field "program"/);
      badRequest({ seq: 1, op: "ping", podId: POD }, /ping takes no field "podId"/);
      badRequest(
        { seq: 1, op: "unmount", podId: POD, path: ["data"], name: "data" },
        /unmount takes no field "name"/,
      );
      badRequest({ seq: 1, op: "forgetPod", podId: POD, path: [] }, /forgetPod takes no field "path"/);
    });

    it("refuses an own __proto__ field (JSON.parse makes it an own key)", () => {
      badRequest(`{"seq":1,"op":"ping","__proto__":{"x":1}}`, /ping takes no field "__proto__"/);
    });

    it("refuses a missing required field", () => {
      const { bucket: _bucket, ...noBucket } = MOUNT;
      badRequest(noBucket, /bucket must be a string, not nothing/);
      const { options: _options, ...noOptions } = MOUNT;
      badRequest(noOptions, /options must be an object/);
      badRequest({ seq: 1, op: "readRecord", podId: POD }, /name must be a string, not nothing/);
      badRequest({ seq: 1, op: "rmdir", podId: POD }, /path must be a list of 0 to 1 directory names/);
    });

    it("refuses a mounter that is not one of the three", () => {
      badRequest({ ...MOUNT, mounter: "sshfs" }, /mounter "sshfs" is not one of geesefs, s3fs, rclone/);
      badRequest({ ...MOUNT, mounter: "/usr/bin/s3fs" }, /mounter "\/usr\/bin\/s3fs" is not one of/);
    });
  });

  describe("[error] pod ids and entry names", () => {
    const bad = [
      "",
      "0123456789ABCDEF0123456789ABCDEF",
      "0123456789abcdef0123456789abcde",
      "0123456789abcdef0123456789abcdef0",
      "0123456789abcdef0123456789abcdeg",
      "../../../../etc/passwd",
      "0123456789abcdef/123456789abcdef",
      "3F2B8C1E-9D4A-4E6F-8A7B-0C1D2E3F4A5B",
      "3f2b8c1e-9d4a-4e6f-8a7b-0c1d2e3f4a5b/..",
      "{3f2b8c1e-9d4a-4e6f-8a7b-0c1d2e3f4a5b}",
    ];
    for (const id of bad)
      it(`refuses podId ${JSON.stringify(id)}`, () => {
        badRequest(
          { ...MOUNT, podId: id },
          /podId .* is not a pod id \(32 lowercase hex digits, or a pod uid in CSI mode\)/,
        );
        badRequest({ seq: 1, op: "unmount", podId: id, path: ["data"] }, /is not a pod id/);
        badRequest({ seq: 1, op: "forgetPod", podId: id }, /is not a pod id/);
      });

    it("accepts a pod uid (CSI mode) as podId", () => {
      const uid = "3f2b8c1e-9d4a-4e6f-8a7b-0c1d2e3f4a5b";
      expect(parse({ seq: 1, op: "unmount", podId: uid, path: ["data"] })).to.deep.include({ podId: uid });
      expect(parse({ ...MOUNT, podId: uid })).to.deep.include({ podId: uid });
    });

    it("refuses a podId that is not a string or too long", () => {
      badRequest({ ...MOUNT, podId: 1234 }, /podId must be a string, not 1234/);
      badRequest({ ...MOUNT, podId: [POD] }, /podId must be a string, not a list/);
      badRequest({ ...MOUNT, podId: "a".repeat(1000) }, /podId is longer than 64 characters/);
    });

    for (const name of ["../x", "..", ".", "A", "a/b", "", "-a", "a-", "a_b", "a.b", "a\0b", "a".repeat(64)])
      it(`refuses entry name ${JSON.stringify(name)} (not a DNS-1123 label)`, () => {
        badRequest({ ...MOUNT, name }, /^name(:| is longer)/);
        badRequest({ seq: 1, op: "readRecord", podId: POD, name }, /^name/);
        badRequest({ seq: 1, op: "writeRecord", podId: POD, name, record: {} }, /^name/);
        badRequest({ seq: 1, op: "forget", podId: POD, name }, /^name/);
      });

    it("says what a DNS-1123 label is", () => {
      badRequest({ ...MOUNT, name: "A" }, /DNS-1123 label/);
    });
  });

  describe("[error] path components", () => {
    for (const c of ["..", ".", "", "a/b", "/", "/etc", "a\0", "\0", "x".repeat(256)])
      it(`refuses component ${JSON.stringify(c).slice(0, 20)}`, () => {
        badRequest(
          { seq: 1, op: "unmount", podId: POD, path: ["data", c] },
          /path component .* is not a single directory name/,
        );
        badRequest({ seq: 1, op: "unmount", podId: POD, path: [c] }, /is not a single directory name/);
        badRequest({ seq: 1, op: "rmdir", podId: POD, path: [c] }, /is not a single directory name/);
      });

    it("refuses components that are not strings", () => {
      badRequest({ seq: 1, op: "unmount", podId: POD, path: [1] }, /path component 1 is not/);
      badRequest({ seq: 1, op: "unmount", podId: POD, path: [null] }, /path component null is not/);
      badRequest({ seq: 1, op: "unmount", podId: POD, path: [["a"]] }, /path component a list is not/);
    });

    it("refuses too many or too few components, and a path that is not a list", () => {
      const seventeen = Array.from({ length: 17 }, (_, i) => `d${i}`);
      badRequest(
        { seq: 1, op: "unmount", podId: POD, path: seventeen },
        /path must be a list of 1 to 16 directory names/,
      );
      badRequest({ seq: 1, op: "unmount", podId: POD, path: [] }, /path must be a list of 1 to 16/);
      badRequest({ seq: 1, op: "rmdir", podId: POD, path: ["a", "b"] }, /path must be a list of 0 to 1/);
      badRequest({ seq: 1, op: "unmount", podId: POD, path: "data" }, /path must be a list/);
      badRequest(
        { seq: 1, op: "unmount", podId: POD, path: { 0: "data", length: 1 } },
        /path must be a list/,
      );
    });
  });

  describe("[error] types", () => {
    it("listBeforePlacing is optional and a boolean", () => {
      expect(parse({ ...MOUNT, listBeforePlacing: true })).to.include({ listBeforePlacing: true });
      expect(parse({ ...MOUNT, listBeforePlacing: false })).to.not.have.property("listBeforePlacing");
      for (const v of ["true", 1, null, {}])
        badRequest({ ...MOUNT, listBeforePlacing: v }, /listBeforePlacing must be true or false/);
    });

    it("readOnly must be a boolean", () => {
      badRequest({ ...MOUNT, readOnly: "true" }, /readOnly must be true or false/);
      badRequest({ ...MOUNT, readOnly: 1 }, /readOnly must be true or false/);
      const { readOnly: _r, ...none } = MOUNT;
      badRequest(none, /readOnly must be true or false/);
    });

    for (const key of ["uid", "gid"])
      it(`${key} must be a non-negative integer below 2^32-1`, () => {
        for (const v of [-1, 1.5, "1000", null, true, 0xffffffff, 1e300, [1000]])
          badRequest({ ...MOUNT, [key]: v }, new RegExp(`^${key} must be a non-negative integer$`));
        expect(parse({ ...MOUNT, [key]: 0xfffffffe })).to.include({ [key]: 0xfffffffe });
      });

    it("option values are strings or true, nothing else", () => {
      badRequest(
        { ...MOUNT, options: { "max-flushers": 4 } },
        /option "max-flushers" must be a string or true/,
      );
      badRequest({ ...MOUNT, options: { a: { b: "c" } } }, /option "a" must be a string or true/);
      badRequest({ ...MOUNT, options: { a: false } }, /option "a" must be a string or true/);
      badRequest({ ...MOUNT, options: { a: null } }, /option "a" must be a string or true/);
      badRequest({ ...MOUNT, options: { a: ["x"] } }, /option "a" must be a string or true/);
      badRequest({ ...MOUNT, options: ["a"] }, /options must be an object/);
      badRequest({ ...MOUNT, options: "a=b" }, /options must be an object/);
      badRequest({ ...MOUNT, options: null }, /options must be an object/);
    });

    it("options has at most 64 entries", () => {
      const o = (n: number): Record<string, string> =>
        Object.fromEntries(Array.from({ length: n }, (_, i) => [`o${i}`, "v"]));
      expect(parse({ ...MOUNT, options: o(64) }).op).to.equal("mount");
      badRequest({ ...MOUNT, options: o(65) }, /options has more than 64 entries/);
    });

    it("string fields must be strings of a bounded length", () => {
      badRequest({ ...MOUNT, bucket: 5 }, /bucket must be a string, not 5/);
      badRequest({ ...MOUNT, bucket: "b".repeat(256) }, /bucket is longer than 255 characters/);
      badRequest({ ...MOUNT, prefix: "p".repeat(1025) }, /prefix is longer than 1024 characters/);
      badRequest({ ...MOUNT, endpoint: { url: "x" } }, /endpoint must be a string, not a object/);
      badRequest({ ...MOUNT, region: "r".repeat(129) }, /region is longer than 128 characters/);
    });

    it("record must be an object no larger than MAX_RECORD_BYTES", () => {
      const base = { seq: 1, op: "writeRecord", podId: POD, name: "data" };
      badRequest({ ...base, record: [] }, /record must be an object/);
      badRequest({ ...base, record: "x" }, /record must be an object/);
      badRequest({ ...base, record: null }, /record must be an object/);
      badRequest({ ...base }, /record must be an object/);
      badRequest(
        { ...base, record: { x: "a".repeat(MAX_RECORD_BYTES) } },
        new RegExp(`record is larger than ${MAX_RECORD_BYTES} bytes`),
      );
    });
  });

  describe("[error] the line itself", () => {
    it("refuses a line longer than MAX_LINE_BYTES with PayloadTooLarge, before parsing it", () => {
      const long = Buffer.alloc(MAX_LINE_BYTES + 1, 0x20);
      const e = (() => {
        try {
          parseRequest(long);
        } catch (x) {
          return x as AppError;
        }
        throw new Error("expected a refusal");
      })();
      expect(e).to.be.instanceOf(AppError);
      expect(e.code).to.equal("PayloadTooLarge");
      expect(e.message).to.equal(`request is longer than ${MAX_LINE_BYTES} bytes`);
      // A valid request padded past the limit is refused too.
      const padded = JSON.stringify({ seq: 1, op: "ping" }) + " ".repeat(MAX_LINE_BYTES);
      expect(refusal(padded).code).to.equal("PayloadTooLarge");
      // Exactly at the limit is parsed.
      const exact = JSON.stringify({ seq: 1, op: "ping" }).padEnd(MAX_LINE_BYTES, " ");
      expect(parse(exact).op).to.equal("ping");
    });

    it("refuses nesting deeper than MAX_DEPTH, e.g. 10 000 brackets, before JSON.parse", () => {
      const deep = "[".repeat(10_000) + "]".repeat(10_000);
      badRequest(deep, new RegExp(`^request nests deeper than ${MAX_DEPTH} levels$`));
      // Not even valid JSON: refused for its depth, not its syntax, so the parse never ran.
      badRequest("[".repeat(10_000), /nests deeper/);
      let record: unknown = "leaf";
      for (let i = 0; i < MAX_DEPTH; i++) record = { r: record };
      badRequest({ seq: 1, op: "writeRecord", podId: POD, name: "data", record }, /nests deeper than/);
    });

    it("refuses what is not JSON, or not an object", () => {
      for (const text of ["", "{", "ping", "{'seq':1}", '{"seq":1,"op":"ping"}{}', "\u00ff"])
        badRequest(text, /^request is not JSON$/);
      for (const v of [[], 1, '"x"', null, true])
        badRequest(typeof v === "string" ? v : JSON.stringify(v), /^request must be a JSON object$/);
    });

    it("refuses a missing, negative, fractional or unsafe seq", () => {
      for (const seq of [undefined, -1, 1.5, "1", null, Number.MAX_SAFE_INTEGER + 2, 1e300])
        badRequest({ seq, op: "ping" }, /^seq must be a non-negative integer$/);
      const e = badRequest({ op: "ping" }, /seq must be/);
      expect(seqOf(e)).to.equal(undefined);
    });

    it("puts the seq on an error that comes after it was read", () => {
      const e = badRequest({ seq: 42, op: "exec" }, /is not one of/);
      expect(seqOf(e)).to.equal(42);
      expect(seqOf(new Error("x"))).to.equal(undefined);
    });
  });

  describe("[error] credentials never appear in a message", () => {
    const messages = (): string[] => {
      const out: string[] = [];
      const collect = (v: unknown): void => {
        out.push(refusal(v).message);
      };
      // A secret of the wrong type or length.
      collect({ ...MOUNT, secretAccessKey: [SECRET] });
      collect({ ...MOUNT, secretAccessKey: { value: SECRET } });
      collect({ ...MOUNT, secretAccessKey: SECRET.repeat(200) });
      collect({ ...MOUNT, accessKeyID: SECRET.repeat(200) });
      collect({ ...MOUNT, secretAccessKey: 31415926535897 });
      collect({ ...MOUNT, accessKeyID: 27182818284590 });
      // A good secret with something else wrong.
      collect({ ...MOUNT, podId: "nope" });
      collect({ ...MOUNT, name: "../x" });
      collect({ ...MOUNT, readOnly: "yes" });
      collect({ ...MOUNT, uid: -1 });
      collect({ ...MOUNT, options: { k: 1 } });
      collect({ ...MOUNT, extra: 1 });
      collect({ ...MOUNT, mounter: "sshfs" });
      collect({ ...MOUNT, seq: -1 });
      collect(JSON.stringify(MOUNT).slice(0, -1));
      collect(JSON.stringify(MOUNT) + " ".repeat(MAX_LINE_BYTES));
      return out;
    };

    it("no message carries the secret, the access key id or a numeric secret", () => {
      const all = messages();
      expect(all).to.have.length(16);
      for (const m of all) {
        expect(m).to.not.include(SECRET);
        expect(m).to.not.include(SECRET.slice(0, 12));
        expect(m).to.not.include("AKIAEXAMPLE");
        expect(m).to.not.include("31415926535897");
        expect(m).to.not.include("27182818284590");
      }
    });

    it("still says which credential field is wrong", () => {
      expect(refusal({ ...MOUNT, secretAccessKey: 31415926535897 }).message).to.equal(
        "secretAccessKey must be a string, not a number",
      );
      expect(refusal({ ...MOUNT, accessKeyID: true }).message).to.equal(
        "accessKeyID must be a string, not a boolean",
      );
      expect(refusal({ ...MOUNT, secretAccessKey: [SECRET] }).message).to.equal(
        "secretAccessKey must be a string, not a list",
      );
      const { secretAccessKey: _s, ...noSecret } = MOUNT;
      expect(refusal(noSecret).message).to.equal("secretAccessKey must be a string, not nothing");
      expect(refusal({ ...MOUNT, secretAccessKey: SECRET.repeat(200) }).message).to.match(
        /secretAccessKey is longer than 4096 characters/,
      );
    });
  });
});

describe("LineReader", () => {
  const text = (lines: Buffer[]): string[] => lines.map((l) => l.toString("utf8"));

  it("[ok] splits lines, joins a line split across chunks, skips empty lines", () => {
    const r = new LineReader(100);
    expect(text(r.push(Buffer.from("a\nbb\n")))).to.deep.equal(["a", "bb"]);
    expect(text(r.push(Buffer.from("cc")))).to.deep.equal([]);
    expect(text(r.push(Buffer.from("c")))).to.deep.equal([]);
    expect(text(r.push(Buffer.from("c\n\n\nd")))).to.deep.equal(["cccc"]);
    expect(text(r.push(Buffer.from("\n")))).to.deep.equal(["d"]);
    expect(text(r.push(Buffer.alloc(0)))).to.deep.equal([]);
  });

  it("[ok] a multi-byte character split between chunks comes out whole", () => {
    const r = new LineReader(100);
    const bytes = Buffer.from("é€\n");
    expect(r.push(bytes.subarray(0, 1))).to.deep.equal([]);
    expect(r.push(bytes.subarray(1, 3))).to.deep.equal([]);
    expect(text(r.push(bytes.subarray(3)))).to.deep.equal(["é€"]);
  });

  it("[ok] a line of exactly max bytes, in pieces or whole", () => {
    const r = new LineReader(10);
    expect(r.push(Buffer.from("12345"))).to.deep.equal([]);
    expect(r.push(Buffer.from("67890"))).to.deep.equal([]);
    expect(text(r.push(Buffer.from("\n")))).to.deep.equal(["1234567890"]);
    expect(text(r.push(Buffer.from("abcdefghij\n")))).to.deep.equal(["abcdefghij"]);
  });

  it("[error] refuses a long line that ends in the chunk", () => {
    const r = new LineReader(10);
    try {
      r.push(Buffer.from("ok\n12345678901\n"));
      expect.fail("expected a refusal");
    } catch (e) {
      expect(e).to.be.instanceOf(AppError);
      expect((e as AppError).code).to.equal("PayloadTooLarge");
      expect((e as AppError).message).to.equal("line is longer than 10 bytes");
    }
  });

  it("[error] refuses a long line arriving in pieces with no newline at all", () => {
    const r = new LineReader(10);
    expect(r.push(Buffer.from("1234"))).to.deep.equal([]);
    expect(r.push(Buffer.from("5678"))).to.deep.equal([]);
    expect(() => r.push(Buffer.from("901"))).to.throw(AppError, /line is longer than 10 bytes/);
  });

  it("[error] refuses a long line whose newline comes in a later chunk", () => {
    const r = new LineReader(10);
    expect(r.push(Buffer.from("12345"))).to.deep.equal([]);
    expect(() => r.push(Buffer.from("678901\n"))).to.throw(AppError, /longer than 10/);
  });

  it("[error] with the default limit, MAX_LINE_BYTES, one byte over in 1 KiB pieces", () => {
    const r = new LineReader();
    const piece = Buffer.alloc(1024, 0x61);
    for (let i = 0; i < MAX_LINE_BYTES / 1024; i++) expect(r.push(piece)).to.deep.equal([]);
    expect(() => r.push(Buffer.from("a"))).to.throw(
      AppError,
      new RegExp(`longer than ${MAX_LINE_BYTES} bytes`),
    );
  });
});

describe("wireError and fromWireError", () => {
  it("[ok] an AppError crosses the wire with its code and message", () => {
    const w = wireError(new AppError("Conflict", "busy"));
    expect(w).to.deep.equal({ code: "Conflict", message: "busy" });
    const back = fromWireError(w);
    expect(back).to.be.instanceOf(AppError);
    expect(back.code).to.equal("Conflict");
    expect(back.message).to.equal("busy");
    expect(wireError(new ConfigError("bad flag"))).to.deep.equal({
      code: "InvalidConfig",
      message: "bad flag",
    });
  });

  it("[ok] every known code survives the round trip", () => {
    // The list itself is the one AppError uses; the round trip must keep each of them.
    const codes = ERROR_CODES;
    expect(codes).to.include.members(["Unavailable", "MountFailed", "Conflict"]);
    for (const code of codes) expect(fromWireError(wireError(new AppError(code, "m"))).code).to.equal(code);
  });

  it("[error] anything but an AppError becomes Internal, without its detail", () => {
    for (const e of [
      new Error(`EACCES: open /root/secret with key ${SECRET}`),
      new TypeError("x is undefined"),
      "a string",
      undefined,
      { code: "Conflict", message: "looks like one" },
    ]) {
      const w = wireError(e);
      expect(w.code).to.equal("Internal");
      expect(w.message).to.equal("internal error in the mounter; its log has the details");
      expect(w.message).to.not.include(SECRET);
    }
  });

  it("[error] an unknown code is Internal; a malformed error is Internal with a fixed message", () => {
    const unknown = fromWireError({ code: "Exploded", message: "boom" });
    expect(unknown).to.be.instanceOf(AppError);
    expect(unknown.code).to.equal("Internal");
    expect(unknown.message).to.equal("boom");
    expect(fromWireError({ code: 5, message: "m" }).code).to.equal("Internal");
    expect(fromWireError({ code: "toString", message: "m" }).code).to.equal("Internal");
    for (const v of [
      undefined,
      null,
      "Conflict",
      [],
      { code: "Conflict" },
      { code: "Conflict", message: 1 },
    ]) {
      const e = fromWireError(v);
      expect(e.code).to.equal("Internal");
      expect(e.message).to.equal("the mounter answered with a malformed error");
    }
  });
});
