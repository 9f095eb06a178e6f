/**
 * What the console fuzz sends: structured requests with plausible, hostile and mistyped fields,
 * well-formed edits of the test pods, random JSON and text, binary frames, long and deep values,
 * and the "killers" after which the server closes the connection.
 */
import fc from "fast-check";
import { OPS, REQUEST_FIELDS } from "../../shared/protocol.js";
import { anyText, bodyText, hostile, hostileJsonValue, rarely } from "./arbitraries.js";

export const TOKEN = "fuzz-token-3b1f0c9e";
export const TOKENS = `${TOKEN},fuzzer,1,"dev"\n`;
export const MAX_PAYLOAD = 1024 * 1024;

/** The pods on the agent's node; `plain` is not injected, `team-a/nope` does not exist. */
export const PODS: ReadonlyArray<{
  file: string;
  ns: string;
  name: string;
  buckets?: string;
  injected: boolean;
}> = [
  { file: "trainer.json", ns: "team-a", name: "trainer", buckets: "a=bucket-a", injected: true },
  {
    file: "messy.json",
    ns: "team-a",
    name: "messy",
    buckets: "x=bucket-x, BAD ENTRY!!, y=bkt/p:ro",
    injected: true,
  },
  { file: "other.json", ns: "team-b", name: "other", injected: true },
  { file: "plain.json", ns: "team-a", name: "plain", injected: false },
];
export const REAL = new Set(PODS.filter((p) => p.injected).map((p) => `${p.ns}/${p.name}`));

// --- frames ------------------------------------------------------------------------------------

export interface Frame {
  readonly data: string | Buffer;
  readonly binary: boolean;
  readonly note: string;
  /** The generated id was a well-formed one: it is replaced by a unique id when sent. */
  readonly uniqueId?: boolean;
  readonly object?: Record<string, unknown>;
}

const FIELDS: Readonly<Record<string, readonly string[]>> = REQUEST_FIELDS;

/** A field value: mostly plausible, sometimes hostile text, sometimes the wrong JSON type. */
const field = (good: fc.Arbitrary<unknown>): fc.Arbitrary<unknown> =>
  fc.oneof(
    { arbitrary: good, weight: 10 },
    { arbitrary: hostile, weight: 2 },
    { arbitrary: hostileJsonValue, weight: 1 },
  );

const structured: fc.Arbitrary<Frame> = fc
  .record({
    id: fc.oneof(
      { arbitrary: fc.constant<unknown>("UNIQUE"), weight: 12 },
      {
        arbitrary: fc.constantFrom<unknown>(
          null,
          "",
          "x".repeat(65),
          1.5,
          -0,
          1e21,
          2 ** 70,
          true,
          {},
          [],
          "ü🙂",
        ),
        weight: 2,
      },
      { arbitrary: hostileJsonValue, weight: 1 },
    ),
    op: fc.oneof(
      { arbitrary: fc.constantFrom<unknown>(...OPS.filter((o) => o !== "auth")), weight: 16 },
      { arbitrary: fc.constant<unknown>("auth"), weight: 1 },
      {
        arbitrary: fc.constantFrom<unknown>(
          "LIST",
          "delete",
          "exec",
          "",
          "mount ",
          "__proto__",
          "constructor",
        ),
        weight: 2,
      },
      { arbitrary: hostileJsonValue, weight: 1 },
    ),
    target: fc.constantFrom(
      ["team-a", "trainer"],
      ["team-a", "messy"],
      ["team-b", "other"],
      ["team-a", "plain"],
      ["team-a", "nope"],
      ["kube-system", "coredns"],
    ),
    namespace: field(fc.constantFrom("team-a", "team-b", "kube-system")),
    pod: field(fc.constantFrom("trainer", "messy", "other", "plain")),
    bucket: field(
      fc.constantFrom("bucket-a", "bkt", "fuzz-b1", "fuzz.b2", "Bucket", "b..c", "a_b", "bucket-x"),
    ),
    prefix: field(fc.constantFrom("", "p", "/p/", "p/q", "../x", "-x", "p/../q", "p//q", "$(id)", "a b")),
    name: field(fc.constantFrom("a", "x", "y", "fz1", "fz2", "bad", "A", "-o", "../x")),
    readOnly: field(fc.constantFrom<unknown>(true, false, "true", 1, null)),
    timeoutSeconds: field(fc.constantFrom<unknown>(1, 2, 3, 0, -1, 1.5, 3601, "1", 1e308)),
    // A string token ends the connection when refused: those are "killers", sent last in a batch.
    token: fc.oneof(
      hostileJsonValue.filter((v) => typeof v !== "string"),
      fc.constantFrom("", " ", "\t"),
    ),
    useTarget: fc.boolean(),
    onlyKnownFields: fc.nat(9),
    extra: fc.option(fc.tuple(anyText, hostileJsonValue), { nil: undefined }),
  })
  .map((r) => {
    const o: Record<string, unknown> = { id: r.id, op: r.op };
    const all = [
      "namespace",
      "pod",
      "bucket",
      "prefix",
      "name",
      "readOnly",
      "timeoutSeconds",
      "token",
    ] as const;
    const known = typeof r.op === "string" && Object.hasOwn(FIELDS, r.op) ? FIELDS[r.op]! : [];
    for (const k of all) if (r.onlyKnownFields > 1 ? known.includes(k) : r.onlyKnownFields === 0) o[k] = r[k];
    if (r.useTarget && known.includes("pod")) [o.namespace, o.pod] = r.target;
    if (r.extra !== undefined && r.onlyKnownFields === 1) o[r.extra[0]] = r.extra[1];
    return {
      data: bodyText(o),
      binary: false,
      note: `structured ${typeof r.op === "string" ? r.op.slice(0, 20) : typeof r.op}`,
      uniqueId: r.id === "UNIQUE",
      object: o,
    };
  });

/** A well-formed mount or unmount of a real pod, to exercise the edit path. */
const validEdit: fc.Arbitrary<Frame> = fc
  .record({
    op: fc.constantFrom("mount", "mount", "unmount"),
    target: fc.constantFrom(["team-a", "trainer"], ["team-a", "messy"], ["team-b", "other"]),
    bucket: fc.constantFrom("bucket-a", "bkt", "fuzz-b1", "fuzz.b2", "bucket-x"),
    prefix: fc.constantFrom(undefined, "p", "p/q"),
    name: fc.constantFrom(undefined, "a", "x", "y", "fz1", "fz2"),
    readOnly: fc.constantFrom(undefined, true, false),
    // Concurrent edits of one name can supersede each other, and the loser waits for its timeout.
    timeoutSeconds: fc.constantFrom(1, 2),
  })
  .map((r) => {
    const o: Record<string, unknown> = { id: "UNIQUE", op: r.op, namespace: r.target[0], pod: r.target[1] };
    if (r.op === "mount") {
      o.bucket = r.bucket;
      if (r.prefix !== undefined) o.prefix = r.prefix;
      if (r.name !== undefined) o.name = r.name;
      if (r.readOnly !== undefined) o.readOnly = r.readOnly;
    } else o.name = r.name ?? "fz1";
    o.timeoutSeconds = r.timeoutSeconds;
    return { data: JSON.stringify(o), binary: false, note: `valid ${r.op}`, uniqueId: true, object: o };
  });

/** Frames that leave the connection open (their replies can all be counted). */
const frameArb: fc.Arbitrary<Frame> = fc.oneof(
  { arbitrary: structured, weight: 50 },
  { arbitrary: validEdit, weight: 8 },
  {
    arbitrary: fc.jsonValue().map((v) => ({ data: JSON.stringify(v), binary: false, note: "random JSON" })),
    weight: 10,
  },
  { arbitrary: anyText.map((t) => ({ data: t, binary: false, note: "random text" })), weight: 8 },
  {
    arbitrary: fc
      .uint8Array({ maxLength: 256 })
      .map((b) => ({ data: Buffer.from(b), binary: true, note: "binary" })),
    weight: 5,
  },
  {
    arbitrary: fc.integer({ min: 10, max: 60 * 1024 }).map((n) => ({
      data: `{"id":1,"op":"list","namespace":"${"n".repeat(n)}"}`,
      binary: false,
      note: "long field",
    })),
    weight: 3,
  },
  {
    arbitrary: fc.integer({ min: 1000, max: 100_000 }).map((d) => ({
      data: `{"id":1,"op":"list","namespace":${"[".repeat(d)}${"]".repeat(d)}}`,
      binary: false,
      note: "deep JSON",
    })),
    weight: 1,
  },
);

/**
 * Frames after which the server closes the connection: text that is not UTF-8 (1007), a frame over
 * the limit (1009), an `auth` with a refused token (1008). Each batch may end with one.
 */
const killerArb: fc.Arbitrary<Frame> = fc.oneof(
  fc.constantFrom(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), Buffer.from([0xc3, 0x28])).map((b) => ({
    data: b,
    binary: false,
    note: "invalid UTF-8",
  })),
  fc.integer({ min: 1, max: 4096 }).map((n) => ({
    data: `{"id":1,"op":"list","x":"${"o".repeat(MAX_PAYLOAD + n)}"}`,
    binary: false,
    note: "oversized",
  })),
  fc
    .oneof(
      fc.constantFrom("nope", `${TOKEN}x`, TOKEN.toUpperCase(), TOKEN.slice(0, -1), "y".repeat(10 * 1024)),
      anyText,
    )
    .filter((t) => t.trim() !== "" && t !== TOKEN)
    .map((token) => ({
      data: JSON.stringify({ id: "auth", op: "auth", token }),
      binary: false,
      note: "bad auth",
    })),
);

/** One batch: `n` frames, sometimes ending with a killer. */
export function batchOf(seed: number, n: number): Frame[] {
  const frames = fc.sample(frameArb, { seed, numRuns: n });
  // One batch in four ends with a killer.
  const [kill] = fc.sample(rarely(killerArb, 4), { seed, numRuns: 1 });
  return kill !== undefined ? [...frames.slice(0, -1), kill] : frames;
}
