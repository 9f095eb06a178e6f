import { expect } from "chai";
import fc from "fast-check";
import { AppError } from "../../../shared/errors.js";
import {
  MAX_JSON_DEPTH,
  allowed,
  decodeAdmissionReview,
  denied,
  errored,
  findUid,
  nestsDeeperThan,
  patched,
} from "../../../webhook/review.js";
import { admissionReview, barePod, deploymentPod, type Json } from "../../fixtures/pods.js";

function rejects(body: unknown, message: RegExp): void {
  let caught: unknown;
  try {
    decodeAdmissionReview(body);
  } catch (e) {
    caught = e;
  }
  expect(caught, "decodeAdmissionReview should throw").to.be.instanceOf(AppError);
  expect((caught as AppError).code).to.equal("BadRequest");
  expect((caught as AppError).message).to.match(message);
}

describe("decodeAdmissionReview", () => {
  it("[ok] decodes a real-shaped CREATE review", () => {
    const r = decodeAdmissionReview(admissionReview(barePod(), { dryRun: true }));
    expect(r).to.deep.include({
      uid: "705ab4f5-6393-11e8-b7cc-42010a800002",
      namespace: "team-a",
      operation: "CREATE",
      dryRun: true,
    });
    expect(r.resource).to.deep.equal({ group: "", version: "v1", resource: "pods" });
  });

  const cases: Array<[string, (b: Json) => unknown, RegExp]> = [
    ["not an object", () => "hello", /JSON object/],
    ["an array", () => [1, 2], /JSON object/],
    ["v1beta1", (b) => ({ ...b, apiVersion: "admission.k8s.io/v1beta1" }), /admissionReviewVersions/],
    ["wrong kind", (b) => ({ ...b, kind: "Pod" }), /kind must be "AdmissionReview"/],
    ["no request", (b) => ({ ...b, request: undefined }), /request is missing/],
    ["empty uid", (b) => ({ ...b, request: { ...(b.request as Json), uid: "" } }), /uid/],
    ["numeric uid", (b) => ({ ...b, request: { ...(b.request as Json), uid: 5 } }), /uid/],
    [
      "no object on CREATE",
      (b) => ({ ...b, request: { ...(b.request as Json), object: null } }),
      /object is missing/,
    ],
    [
      "bad operation",
      (b) => ({ ...b, request: { ...(b.request as Json), operation: "PATCH" } }),
      /operation/,
    ],
    [
      "kind not an object",
      (b) => ({ ...b, request: { ...(b.request as Json), kind: "Pod" } }),
      /request.kind/,
    ],
    ["dryRun not boolean", (b) => ({ ...b, request: { ...(b.request as Json), dryRun: "yes" } }), /dryRun/],
  ];
  for (const [label, make, message] of cases)
    it(`[error] ${label}`, () => {
      rejects(make(admissionReview(barePod())), message);
    });
});

describe("findUid", () => {
  it("finds the uid of an otherwise malformed review", () => {
    expect(findUid({ request: { uid: "abc" } })).to.equal("abc");
    expect(findUid({ request: { uid: 1 } })).to.equal(undefined);
    expect(findUid(null)).to.equal(undefined);
  });
});

describe("response constructors", () => {
  it("always echo the uid", () => {
    for (const r of [
      allowed("u1"),
      patched("u1", [{ op: "add", path: "/a", value: 1 }]),
      denied("u1", "no"),
      errored("u1", 400, "x"),
    ])
      expect(r.response.uid).to.equal("u1");
  });

  it("patched encodes the JSON patch as base64 with patchType JSONPatch", () => {
    const ops = [{ op: "add" as const, path: "/metadata/annotations/a~1b", value: "x" }];
    const r = patched("u", ops, ["careful"]).response;
    expect(r.patchType).to.equal("JSONPatch");
    expect(JSON.parse(Buffer.from(r.patch!, "base64").toString("utf8"))).to.deep.equal(ops);
    expect(r.warnings).to.deep.equal(["careful"]);
  });

  it("patched encodes short, Unicode and long patches alike, one after another", () => {
    const long = Array.from({ length: 400 }, (_, i) => ({
      op: "add" as const,
      path: `/spec/containers/${i}/volumeMounts/-`,
      value: { name: "dynamic-volumes", mountPath: "/datasets/ü€😀" },
    }));
    const short = [{ op: "add" as const, path: "/metadata/annotations/k", value: "ü€😀" }];
    for (const ops of [short, long, short]) {
      const text = Buffer.from(patched("u", ops).response.patch!, "base64").toString("utf8");
      expect(JSON.parse(text)).to.deep.equal(ops);
    }
  });

  it("patched with an empty patch is a plain allow", () => {
    expect(patched("u", []).response).to.deep.equal({ uid: "u", allowed: true });
  });

  it("denied carries the code and message", () => {
    expect(denied("u", "because", 400).response.status).to.deep.include({ code: 400, message: "because" });
  });
});

describe("nestsDeeperThan", () => {
  const depthOf = (v: unknown): number =>
    typeof v === "object" && v !== null
      ? 1 + Math.max(0, ...(Array.isArray(v) ? v : Object.values(v)).map(depthOf))
      : 0;
  const scan = (text: string, max: number): boolean => nestsDeeperThan(Buffer.from(text, "utf8"), max);

  const rows: Array<[string, string, number]> = [
    ["[ok] a scalar", "1", 0],
    ["[ok] an empty object", "{}", 1],
    ["[ok] arrays and objects mixed", '{"a":[{"b":[1,{}]}],"c":{}}', 5],
    ["[ok] brackets inside strings", '{"a":"[[[{{{"}', 1],
    ["[ok] an escaped quote inside a string", '["\\"[[[", ["x"]]', 2],
    ["[ok] an escaped backslash ending a string", '["\\\\", [[1]]]', 3],
    ["[ok] a \\u escape", '["\\u005b\\u0022", [1]]', 2],
    ["[ok] multi-byte characters", '{"ü€😀[":["ü€😀"]}', 2],
  ];
  for (const [label, text, depth] of rows)
    it(`${label}: ${text} nests ${depth}`, () => {
      expect(depthOf(JSON.parse(text)), "the row itself").to.equal(depth);
      expect(scan(text, depth), `deeper than ${depth}`).to.equal(false);
      if (depth > 0) expect(scan(text, depth - 1), `deeper than ${depth - 1}`).to.equal(true);
    });

  it("agrees with the parsed depth of random JSON", () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 12 }), (v) => {
        const text = JSON.stringify(v);
        const depth = depthOf(v);
        expect(scan(text, depth)).to.equal(false);
        if (depth > 0) expect(scan(text, depth - 1)).to.equal(true);
      }),
      { seed: 4_2025, numRuns: 2000 },
    );
  });

  it("[attack] finds 3 MiB of nested arrays too deep, with or without a long string before them", () => {
    const half = 1.5 * 1024 * 1024;
    expect(scan("[".repeat(half) + "]".repeat(half), MAX_JSON_DEPTH)).to.equal(true);
    const padded = `{"pad":"${"x".repeat(half)}","deep":${"[".repeat(MAX_JSON_DEPTH + 1)}${"]".repeat(MAX_JSON_DEPTH + 1)}}`;
    expect(scan(padded, MAX_JSON_DEPTH)).to.equal(true);
  });

  it(`leaves room above the nesting of a real pod review (${MAX_JSON_DEPTH} levels)`, () => {
    const depth = depthOf(admissionReview(deploymentPod()));
    expect(depth).to.be.within(10, 20);
    expect(MAX_JSON_DEPTH).to.be.at.least(4 * depth);
  });
});
