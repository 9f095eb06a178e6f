import { expect } from "chai";
import { AppError } from "../../../shared/errors.js";
import {
  ConsoleError,
  RequestError,
  encodeError,
  encodeEvent,
  encodeProgress,
  encodeRequest,
  encodeResult,
  mountEntryOf,
  parseRequest,
  parseServerFrame,
  toErrorBody,
  type ConsoleRequest,
  type MountRequest,
} from "../../../shared/protocol.js";

const frame = (o: unknown): string => JSON.stringify(o);
const long = "a".repeat(10_000);

describe("parseRequest", () => {
  const ok: Array<[string, string, ConsoleRequest]> = [
    ["list everything", frame({ id: 1, op: "list" }), { id: 1, op: "list" }],
    [
      "list one namespace",
      frame({ id: "a", op: "list", namespace: "team-a" }),
      { id: "a", op: "list", namespace: "team-a" },
    ],
    [
      "status with a dotted pod name",
      frame({ id: 2, op: "status", namespace: "ns", pod: "web-7d9f.x" }),
      { id: 2, op: "status", namespace: "ns", pod: "web-7d9f.x" },
    ],
    [
      "mount with every field",
      frame({
        id: 3,
        op: "mount",
        namespace: "ns",
        pod: "p",
        bucket: "bucket-a",
        prefix: "2024/x",
        name: "data",
        readOnly: true,
        timeoutSeconds: 5,
      }),
      {
        id: 3,
        op: "mount",
        namespace: "ns",
        pod: "p",
        bucket: "bucket-a",
        prefix: "2024/x",
        name: "data",
        readOnly: true,
        timeoutSeconds: 5,
      },
    ],
    [
      "mount trims the prefix's slashes",
      frame({ id: 4, op: "mount", namespace: "ns", pod: "p", bucket: "bucket-a", prefix: "/x/y/" }),
      { id: 4, op: "mount", namespace: "ns", pod: "p", bucket: "bucket-a", prefix: "x/y" },
    ],
    [
      "mount of a dotted bucket under a name",
      frame({ id: 5, op: "mount", namespace: "ns", pod: "p", bucket: "my.bucket", name: "raw" }),
      { id: 5, op: "mount", namespace: "ns", pod: "p", bucket: "my.bucket", name: "raw" },
    ],
    [
      "unmount",
      frame({ id: 6, op: "unmount", namespace: "ns", pod: "p", name: "data" }),
      { id: 6, op: "unmount", namespace: "ns", pod: "p", name: "data" },
    ],
    ["watch everything", frame({ id: 7, op: "watch" }), { id: 7, op: "watch" }],
    [
      "watch one pod",
      frame({ id: 8, op: "watch", namespace: "ns", pod: "p" }),
      { id: 8, op: "watch", namespace: "ns", pod: "p" },
    ],
    ["auth", frame({ id: 9, op: "auth", token: "t0k3n" }), { id: 9, op: "auth", token: "t0k3n" }],
    ["a 64-character id", frame({ id: "i".repeat(64), op: "list" }), { id: "i".repeat(64), op: "list" }],
  ];
  for (const [what, text, want] of ok)
    it(`[ok] ${what}`, () => {
      expect(parseRequest(text)).to.deep.equal(want);
    });

  const m = (extra: object): string =>
    frame({ id: 1, op: "mount", namespace: "ns", pod: "p", bucket: "bucket-a", ...extra });
  const bad: Array<[string, string, RegExp, (string | number | null)?]> = [
    ["not JSON", "{nope", /not JSON/, null],
    ["an empty frame", "", /not JSON/, null],
    ["an array", "[1]", /JSON object, not an array/, null],
    ["a number", "42", /JSON object/, null],
    ["no id", frame({ op: "list" }), /"id" is required/, null],
    ["an object id", frame({ id: {}, op: "list" }), /"id" must be a string or a number/, null],
    ["a 65-character id", frame({ id: "i".repeat(65), op: "list" }), /1 to 64 characters/, null],
    ["a huge numeric id", '{"id":1e400,"op":"list"}', /finite number/, null],
    ["no op", frame({ id: 1 }), /"op" is required/, 1],
    ["an unknown op", frame({ id: 1, op: "rm -rf" }), /unknown op "rm -rf"/, 1],
    ["a 10 kB op", frame({ id: 1, op: long }), /unknown op "a{60}…"/, 1],
    ["an unknown field", frame({ id: 1, op: "list", namespce: "x" }), /unknown field "namespce"/, 1],
    ["status without pod", frame({ id: "s", op: "status", namespace: "ns" }), /"pod" is required/, "s"],
    [
      "a numeric namespace",
      frame({ id: 1, op: "list", namespace: 7 }),
      /"namespace" must be a string, not a number/,
      1,
    ],
    ["an upper-case namespace", frame({ id: 1, op: "list", namespace: "Team" }), /namespace: .*DNS-1123/, 1],
    [
      "a pod name with a slash",
      frame({ id: 1, op: "status", namespace: "ns", pod: "../x" }),
      /DNS-1123 subdomain/,
      1,
    ],
    [
      "a watch of a pod without namespace",
      frame({ id: 1, op: "watch", pod: "p" }),
      /"pod" needs "namespace"/,
      1,
    ],
    [
      "mount without bucket",
      frame({ id: 1, op: "mount", namespace: "ns", pod: "p" }),
      /"bucket" is required/,
      1,
    ],
    ["mount of bucket ../x", m({ bucket: "../x" }), /not a valid bucket name/, 1],
    ["mount of bucket -o allow_root", m({ bucket: "-o allow_root" }), /not a valid bucket name/, 1],
    ["mount named ../x", m({ name: "../x" }), /DNS-1123 label/, 1],
    ["mount named -o allow_root", m({ name: "-o allow_root" }), /DNS-1123 label/, 1],
    ["mount with a 10 kB name", m({ name: long }), /"name" is longer than 63 characters/, 1],
    ["mount with a 10 kB bucket", m({ bucket: long }), /"bucket" is longer than 63/, 1],
    ["mount with a 10 kB prefix", m({ prefix: long }), /"prefix" is longer than 1024/, 1],
    ["mount with prefix ../etc", m({ prefix: "../etc" }), /"\.\." segments/, 1],
    ["mount with prefix -o", m({ prefix: "x/-o" }), /must not start with "-"/, 1],
    ["mount with prefix a,b", m({ prefix: "a,b" }), /may contain only/, 1],
    ["mount of a dotted bucket without a name", m({ bucket: "my.bucket" }), /give the mount a "name"/, 1],
    ["mount with readOnly as a string", m({ readOnly: "yes" }), /"readOnly" must be true or false/, 1],
    ["mount with a fractional timeout", m({ timeoutSeconds: 1.5 }), /whole number from 1 to 3600/, 1],
    ["mount with a zero timeout", m({ timeoutSeconds: 0 }), /whole number/, 1],
    [
      "unmount without a name",
      frame({ id: 1, op: "unmount", namespace: "ns", pod: "p" }),
      /"name" is required/,
      1,
    ],
    [
      "unmount of ../x",
      frame({ id: 1, op: "unmount", namespace: "ns", pod: "p", name: "../x" }),
      /DNS-1123/,
      1,
    ],
    ["auth with an empty token", frame({ id: 1, op: "auth", token: " " }), /"token" is empty/, 1],
    ["auth with a numeric token", frame({ id: 1, op: "auth", token: 5 }), /"token" must be a string/, 1],
  ];
  for (const [what, text, message, id] of bad)
    it(`[error] ${what}`, () => {
      let caught: unknown;
      try {
        parseRequest(text);
      } catch (e) {
        caught = e;
      }
      expect(caught).to.be.instanceOf(RequestError);
      const err = caught as RequestError;
      expect(err).to.be.instanceOf(AppError);
      expect(err.code).to.equal("BadRequest");
      expect(err.message).to.match(message);
      expect(err.message.length).to.be.below(300);
      expect(err.id).to.equal(id);
    });
});

describe("mountEntryOf", () => {
  it("defaults the name to the bucket, the prefix to the whole bucket, and access to rw", () => {
    const req = parseRequest(
      frame({ id: 1, op: "mount", namespace: "ns", pod: "p", bucket: "bucket-a" }),
    ) as MountRequest;
    expect(mountEntryOf(req)).to.deep.equal({
      name: "bucket-a",
      bucket: "bucket-a",
      prefix: "",
      readOnly: false,
    });
  });
});

describe("encoders and parseServerFrame", () => {
  it("round-trips a request through encodeRequest and parseRequest", () => {
    const req: ConsoleRequest = { id: "x", op: "unmount", namespace: "ns", pod: "p", name: "data" };
    expect(parseRequest(encodeRequest(req))).to.deep.equal(req);
  });

  it("reads back replies, progress and events", () => {
    expect(parseServerFrame(encodeResult(1, { user: "u" }))).to.deep.equal({
      id: 1,
      ok: true,
      result: { user: "u" },
    });
    expect(parseServerFrame(encodeError(null, { code: "BadRequest", message: "m" }))).to.deep.equal({
      id: null,
      ok: false,
      error: { code: "BadRequest", message: "m" },
    });
    expect(parseServerFrame(encodeProgress(2, { name: "a", state: "mounting" }))).to.deep.equal({
      id: 2,
      progress: { name: "a", state: "mounting" },
    });
    expect(
      parseServerFrame(encodeEvent({ watch: 3, namespace: "ns", pod: "p", name: "a", state: "removed" })),
    ).to.deep.equal({
      event: "state",
      watch: 3,
      namespace: "ns",
      pod: "p",
      name: "a",
      state: "removed",
    });
  });

  it("[error] a frame of another shape", () => {
    expect(() => parseServerFrame('{"id":1}')).to.throw(ConsoleError, /unknown shape/);
    expect(() => parseServerFrame("nope")).to.throw(ConsoleError, /not JSON/);
  });
});

describe("toErrorBody", () => {
  it("keeps console codes, maps AppError codes, and hides everything else", () => {
    expect(toErrorBody(new ConsoleError("WrongNode", "go elsewhere"))).to.deep.equal({
      code: "WrongNode",
      message: "go elsewhere",
    });
    expect(toErrorBody(new AppError("PayloadTooLarge", "big"))).to.deep.equal({
      code: "TooLarge",
      message: "big",
    });
    expect(toErrorBody(new AppError("InvalidArgument", "bad"))).to.deep.equal({
      code: "BadRequest",
      message: "bad",
    });
    expect(toErrorBody(new Error("ENOENT /secret/path"))).to.deep.equal({
      code: "Internal",
      message: "internal error; see the agent's log",
    });
  });
});
