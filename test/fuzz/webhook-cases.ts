/**
 * What the webhook fuzz sends: AdmissionReviews around pods of random shape (some already injected
 * for their own or another namespace), the same with members deleted or of the wrong type, wrong
 * envelopes, raw bodies (truncated JSON, random bytes labelled JSON, odd content types, charsets
 * and encodings) and bodies over the limit.
 */
import fc from "fast-check";
import { gzipSync } from "node:zlib";
import { mutatePod, type MutateConfig } from "../../webhook/mutate.js";
import { applyJsonPatch } from "../support/patch.js";
import { admissionReview } from "../fixtures/pods.js";
import {
  DELETE,
  ROOT,
  anyText,
  bodyText,
  hostileJsonValue,
  materialize,
  paths,
  podArb,
  rarely,
  withAt,
  type Json,
} from "./arbitraries.js";

/** The production default: the API server's own request limit. */
export const MAX_BODY = 3 * 1024 * 1024;
export const key = Buffer.from("webhook-fuzz-signing-key-0123456789");
export const cfg: MutateConfig = { root: ROOT, defaultMountPath: "/datasets", signingKey: key };
const FIXED_ID = "f00dfeedf00dfeedf00dfeedf00dfeed";

// --- cases -------------------------------------------------------------------------------------

export interface ReviewCase {
  readonly kind: "review";
  readonly note: string;
  /** The review, possibly holding lazy values (Huge, Deep). */
  readonly review: unknown;
  readonly contentType: string;
}
export interface RawCase {
  readonly kind: "raw";
  readonly note: string;
  readonly body: Buffer;
  readonly headers: Record<string, string>;
}
export type Case = ReviewCase | RawCase;

const JSON_TYPES = [
  "application/json",
  "application/json; charset=utf-8",
  "Application/JSON",
  "application/merge-patch+json",
];

export function review(pod: unknown, request: Json): Json {
  return admissionReview(pod, { uid: "00000000-0000-0000-0000-000000000000", ...request });
}

/** A pod as it looks after our own injection for `namespace` (a replay or a copy into another). */
function preInjected(pod: Json, namespace: string): Json {
  const plain = materialize(pod) as Json;
  const r = mutatePod(plain, namespace, cfg, () => FIXED_ID);
  return r.kind === "patched" ? applyJsonPatch(plain, r.patch) : plain;
}

const uid = fc.oneof(
  { arbitrary: fc.uuid(), weight: 8 },
  { arbitrary: fc.constantFrom("x", "ü-uid", "a".repeat(256), "a".repeat(257), " "), weight: 1 },
);

const validReview: fc.Arbitrary<Case> = fc
  .record({
    pod: podArb,
    uid,
    namespace: fc.oneof(
      { arbitrary: fc.constantFrom("team-a", "team-b"), weight: 10 },
      { arbitrary: fc.constantFrom(undefined, "", "x".repeat(300), "Team A"), weight: 1 },
    ),
    operation: fc.oneof(
      { arbitrary: fc.constant("CREATE"), weight: 12 },
      { arbitrary: fc.constantFrom("UPDATE", "DELETE", "CONNECT"), weight: 1 },
    ),
    resource: fc.oneof(
      { arbitrary: fc.constant({ group: "", version: "v1", resource: "pods" }), weight: 12 },
      {
        arbitrary: fc.constantFrom(
          { group: "apps", version: "v1", resource: "deployments" },
          { group: "", version: "v1", resource: "pods/status" },
          { group: "", version: "v1", resource: "configmaps" },
        ),
        weight: 1,
      },
    ),
    subResource: rarely(fc.constantFrom("status", "ephemeralcontainers", ""), 15),
    dryRun: fc.boolean(),
    replay: rarely(fc.constantFrom("team-a", "team-b"), 8),
    contentType: fc.constantFrom(...JSON_TYPES),
  })
  .map((r) => {
    const request: Json = { uid: r.uid, operation: r.operation, resource: r.resource, dryRun: r.dryRun };
    request.namespace = r.namespace;
    if (r.subResource !== undefined) request.subResource = r.subResource;
    const pod = r.replay !== undefined ? preInjected(r.pod, r.replay) : r.pod;
    return {
      kind: "review",
      note: r.replay !== undefined ? `pod injected for ${r.replay}` : "pod",
      review: review(pod, request),
      contentType: r.contentType,
    };
  });

/** A valid review with one member deleted or replaced by a value of the wrong type. */
const mistypedReview: fc.Arbitrary<Case> = fc
  .tuple(validReview, fc.nat(), fc.oneof(hostileJsonValue, fc.constant(DELETE)))
  .map(([c, n, value]) => {
    const r = (c as ReviewCase).review;
    const all = paths(r).filter((p) => !(p.length > 3 && p[2] === "object" && n % 2 === 0));
    const target = all[n % all.length]!;
    return {
      ...(c as ReviewCase),
      note: `${value === DELETE ? "deleted" : "replaced"} ${target.join(".")}`,
      review: withAt(r, target, value),
    };
  });

/** Wrong envelopes: apiVersion, kind, request and the body itself of the wrong shape. */
const wrongEnvelope: fc.Arbitrary<Case> = fc
  .tuple(
    validReview,
    fc.constantFrom("apiVersion", "kind", "request", "body"),
    fc.oneof(
      fc.constantFrom<unknown>(
        "admission.k8s.io/v1beta1",
        "v1",
        "AdmissionReview",
        "admission.k8s.io/v2",
        "",
      ),
      hostileJsonValue,
    ),
  )
  .map(([c, field, value]) => {
    const r = (c as ReviewCase).review as Json;
    const body = field === "body" ? value : { ...r, [field]: value };
    return { ...(c as ReviewCase), note: `wrong ${field}`, review: body };
  });

const rawBody: fc.Arbitrary<Case> = fc.oneof(
  // Truncated JSON.
  fc.tuple(validReview, fc.double({ min: 0, max: 1, noNaN: true })).map(([c, f]) => {
    const text = bodyText((c as ReviewCase).review);
    return raw("truncated JSON", Buffer.from(text.slice(0, Math.floor(text.length * f))), "application/json");
  }),
  // Random bytes and random text, labelled JSON.
  fc.uint8Array({ maxLength: 4096 }).map((b) => raw("random bytes", Buffer.from(b), "application/json")),
  anyText.map((t) => raw("random text", Buffer.from(t), "application/json")),
  fc.jsonValue().map((v) => raw("any JSON value", Buffer.from(JSON.stringify(v)), "application/json")),
  // JSON that JSON.parse reads differently from Go: duplicate keys, __proto__, NaN, BOM, huge numbers.
  fc
    .constantFrom(
      '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"a","uid":"b"}}',
      '{"__proto__":{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"},"request":{"uid":"p"}}',
      '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":NaN}',
      '\ufeff{"apiVersion":"admission.k8s.io/v1"}',
      '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":1e999}}',
      "",
      " ",
      "null",
      "[]",
      '"AdmissionReview"',
      "{",
      "}",
      "\u0000",
    )
    .map((t) => raw("odd JSON", Buffer.from(t), "application/json")),
  // A valid review with the wrong or an odd content type, charset or encoding.
  fc
    .tuple(
      validReview,
      fc.constantFrom(
        { "content-type": "text/plain" },
        { "content-type": "application/x-www-form-urlencoded" },
        { "content-type": "" },
        { "content-type": "application/json; charset=latin1" },
        { "content-type": "application/json; charset=utf-16" },
        { "content-type": "application/json", "content-encoding": "gzip" },
        { "content-type": "application/json", "content-encoding": "compress" },
        { "content-type": "application/json", "content-encoding": "gzip", "x-corrupt": "1" },
      ),
    )
    .map(([c, headers]) => {
      let body = Buffer.from(bodyText((c as ReviewCase).review));
      if (headers["content-encoding"] === "gzip") body = gzipSync(body);
      if (headers["x-corrupt"] !== undefined) body = body.subarray(0, Math.floor(body.length / 2));
      const { "x-corrupt": _x, ...rest } = headers as Record<string, string>;
      return {
        kind: "raw",
        note: `headers ${JSON.stringify(headers)}`,
        body,
        headers: rest,
      } satisfies RawCase;
    }),
);

function raw(note: string, body: Buffer, contentType: string): RawCase {
  return { kind: "raw", note, body, headers: { "content-type": contentType } };
}

/** Bodies over the limit: a review with a padded unknown field, or plain bytes. */
const oversize: fc.Arbitrary<Case> = fc
  .tuple(fc.integer({ min: 1, max: 64 * 1024 }), fc.boolean())
  .map(([extra, asJson]) => {
    if (!asJson) return raw("oversize bytes", Buffer.alloc(MAX_BODY + extra, 0x7b), "application/json");
    const head =
      '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"big","pad":"';
    const body = Buffer.alloc(MAX_BODY + extra, 0x61);
    body.write(head, 0);
    body.write('"}}', body.length - 3);
    return raw("oversize JSON", body, "application/json");
  });

export const caseArb: fc.Arbitrary<Case> = fc.oneof(
  { arbitrary: validReview, weight: 620 },
  { arbitrary: mistypedReview, weight: 150 },
  { arbitrary: wrongEnvelope, weight: 50 },
  { arbitrary: rawBody, weight: 150 },
  // About 0.3 %: each one is 3 MiB on the wire.
  { arbitrary: oversize, weight: 3 },
);
