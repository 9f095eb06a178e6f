/**
 * fast-check generators shared by the fuzz and property tests: hostile strings, the
 * `dynamic-volumes/buckets` grammar, hostPaths around the root with random normalizations, and pods
 * of random shape. Values too big or too deep to build eagerly ({@link Huge}, {@link Deep}) stay
 * lazy: they serialize through `toJSON` and {@link bodyText}, and {@link materialize} replaces them
 * for the checks done in this process.
 */
import fc from "fast-check";
import { ANNOTATIONS, VOLUME_NAME } from "../../shared/names.js";

export type Json = Record<string, unknown>;

/** The webhook's root in these tests. */
export const ROOT = "/var/lib/dynamic-volumes";

/** Strings that have broken parsers, paths and argv builders elsewhere. */
export const HOSTILE_STRINGS: readonly string[] = [
  "",
  " ",
  "\t",
  "..",
  ".",
  "../x",
  "x/../..",
  "/",
  "//",
  "-",
  "--",
  "-o allow_root",
  "-o",
  "--help",
  "-oallow_other",
  "a,b",
  "a=b",
  "x:ro:rw",
  "$(id)",
  "`id`",
  ";id",
  "|id",
  "&id",
  "a b",
  "a\nb",
  "\u0000",
  "\u001b[2J",
  "\u202eevil",
  "🙂",
  "ü",
  "~0~1",
  "a/b~c",
  "\\",
  "%2e%2e",
  "__proto__",
  "constructor",
  "toString",
  "x".repeat(300),
  "y".repeat(10 * 1024),
];

/** Shell and option-syntax metacharacters, whitespace and control characters. */
// eslint-disable-next-line no-control-regex
export const SHELL_META = /[\s;&|`$(){}[\]<>*?!~#'"\\,=\u0000-\u001f\u007f]/;

/** A string value built on serialization: `ch` repeated `length` times (huge annotations). */
export class Huge {
  constructor(
    readonly length: number,
    readonly ch: string,
  ) {}
  toString(): string {
    return this.ch.repeat(this.length);
  }
  toJSON(): string {
    return this.toString();
  }
  [fc.toStringMethod](): string {
    return `new Huge(${this.length}, ${JSON.stringify(this.ch)})`;
  }
}

/** `depth` nested arrays (`[[[…]]]`) or objects; substituted into the body text by {@link bodyText}. */
export class Deep {
  constructor(
    readonly depth: number,
    readonly kind: "array" | "object",
  ) {}
  toJSON(): string {
    return `\u0000DEEP:${this.depth}:${this.kind}\u0000`;
  }
  [fc.toStringMethod](): string {
    return `new Deep(${this.depth}, "${this.kind}")`;
  }
}

const DEEP_MARKER = /"\\u0000DEEP:(\d+):(array|object)\\u0000"/g;

function deepText(depth: number, kind: string): string {
  return kind === "array"
    ? `${"[".repeat(depth)}1${"]".repeat(depth)}`
    : `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`;
}

/** JSON text of `value` with every {@link Deep} expanded (built as text: no recursion anywhere). */
export function bodyText(value: unknown): string {
  return JSON.stringify(value).replace(DEEP_MARKER, (_m, d: string, k: string) => deepText(Number(d), k));
}

/**
 * A plain copy of `value` for in-process checks: {@link Huge} becomes its string, {@link Deep} a
 * shallow stand-in of the same JSON type. JSON patches never reach inside either, so a patch applies
 * to the copy exactly as to the real body.
 */
export function materialize(value: unknown): unknown {
  if (value instanceof Huge) return value.toString();
  if (value instanceof Deep) return value.kind === "array" ? [["deep"]] : { a: { a: "deep" } };
  if (Array.isArray(value)) return value.map(materialize);
  if (typeof value === "object" && value !== null) {
    const out: Json = {};
    for (const [k, v] of Object.entries(value)) {
      // Like JSON: members whose value is undefined are left out.
      if (v === undefined) continue;
      Object.defineProperty(out, k, {
        value: materialize(v),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return out;
  }
  return value;
}

// --- small pieces ---------------------------------------------------------------------------

export const dnsLabel = fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?$/);
export const bucketName = fc.stringMatching(/^[a-z0-9][a-z0-9._-]{1,12}[a-z0-9]$/);
export const hex32 = fc.stringMatching(/^[0-9a-f]{32}$/);
export const hostile = fc.constantFrom(...HOSTILE_STRINGS);

/** Any text: ASCII, full Unicode (lone surrogates included), graphemes, and the hostile list. */
export const anyText = fc.oneof(
  { arbitrary: fc.string({ maxLength: 40 }), weight: 3 },
  { arbitrary: fc.string({ unit: "binary", maxLength: 40 }), weight: 2 },
  { arbitrary: fc.string({ unit: "grapheme", maxLength: 20 }), weight: 1 },
  { arbitrary: hostile, weight: 2 },
);

/** JSON values of the wrong type for a field, including ones that break naive `String(x)`. */
export const hostileJsonValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom<unknown>(
    null,
    0,
    -1,
    1e308,
    true,
    false,
    [],
    {},
    [[[]]],
    [""],
    { toString: 1 },
    { valueOf: 1 },
    [{ toString: "x" }],
    JSON.parse('{"__proto__":{"dynamic-volumes/inject":"false"}}') as unknown,
    { length: 1e9 },
  ),
  fc.integer({ min: 100, max: 20_000 }).map((d) => new Deep(d, "array")),
  fc.jsonValue({ maxDepth: 3 }),
  anyText,
);

// --- the buckets annotation grammar ----------------------------------------------------------

const prefixSegment = fc.oneof(
  { arbitrary: fc.stringMatching(/^[A-Za-z0-9_.+@-]{1,8}$/), weight: 4 },
  { arbitrary: fc.constantFrom("..", ".", "", "-x", "a b", "$x", "a:b", "a=b", "a,b", "ü", "*"), weight: 1 },
);

const grammarPiece = fc.oneof(
  { arbitrary: dnsLabel, weight: 5 },
  { arbitrary: bucketName, weight: 5 },
  { arbitrary: hostile, weight: 1 },
  {
    arbitrary: fc.string({ unit: fc.constantFrom(..."aZ0-_.=/:, \t~$;`\\\u00fc"), maxLength: 12 }),
    weight: 2,
  },
);

/** One entry of the grammar, mostly well-formed, with hostile pieces mixed in. */
export const bucketsEntry: fc.Arbitrary<string> = fc
  .record({
    name: fc.option(grammarPiece, { nil: undefined }),
    bucket: grammarPiece,
    prefix: fc.option(fc.array(prefixSegment, { minLength: 1, maxLength: 4 }), { nil: undefined }),
    trailing: fc.constantFrom("", "/", "//"),
    access: fc.constantFrom("", "", ":ro", ":rw", ":RO", ":", ":ro:rw", ":x"),
    space: fc.constantFrom("", "", " ", "\t", "\n "),
  })
  .map(
    (e) =>
      `${e.space}${e.name !== undefined ? `${e.name}${e.space}=` : ""}${e.bucket}${
        e.prefix !== undefined ? `/${e.prefix.join("/")}${e.trailing}` : ""
      }${e.access}${e.space}`,
  );

/** A `dynamic-volumes/buckets` value: grammar-shaped lists, or any text at all. */
export const bucketsValue: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: fc.array(bucketsEntry, { maxLength: 8 }).map((es) => es.join(",")), weight: 6 },
  {
    arbitrary: fc.array(bucketsEntry, { minLength: 60, maxLength: 70 }).map((es) => es.join(",")),
    weight: 1,
  },
  { arbitrary: anyText, weight: 2 },
  { arbitrary: fc.string({ unit: fc.constantFrom(..."ab-=/:,. r"), maxLength: 60 }), weight: 2 },
);

// --- hostPaths around the root -----------------------------------------------------------------

export type RootRelation = "inside" | "ancestor" | "unrelated";

/** Independent oracle: how `path` relates to `root`, by segments, after resolving `.`, `..`, `//`. */
export function relationOf(path: string, root: string): RootRelation {
  if (!path.startsWith("/")) return "unrelated";
  const segs = (p: string): string[] => {
    const out: string[] = [];
    for (const s of p.split("/")) {
      if (s === "" || s === ".") continue;
      if (s === "..") out.pop();
      else out.push(s);
    }
    return out;
  };
  const p = segs(path);
  const r = segs(root);
  const prefixOf = (a: string[], b: string[]): boolean =>
    a.length <= b.length && a.every((s, i) => s === b[i]);
  if (prefixOf(r, p)) return "inside";
  if (prefixOf(p, r)) return "ancestor";
  return "unrelated";
}

/** Rewrites an absolute path without changing what it resolves to: `//`, `/./`, `x/..`, trailing `/`. */
export const mangledPath = (path: string): fc.Arbitrary<string> =>
  fc
    .record({
      seps: fc.array(fc.constantFrom("/", "/", "//", "/./", "/x/../", "///./"), {
        minLength: path.split("/").length,
        maxLength: path.split("/").length,
      }),
      tail: fc.constantFrom("", "", "/", "/.", "//", "/./"),
    })
    .map(({ seps, tail }) => {
      const segments = path.split("/").filter((s) => s !== "");
      if (segments.length === 0) return `/${tail}`;
      return segments.map((s, i) => `${seps[i] ?? "/"}${s}`).join("") + tail;
    });

/** A hostPath at, inside, above, or beside (`/var/lib/dynamic-volumes-x`) the root, mangled. */
export function hostPathNear(root: string): fc.Arbitrary<string> {
  const rootSegs = root.split("/").filter((s) => s !== "");
  const base = fc.oneof(
    fc.constant(root),
    fc
      .array(fc.oneof(dnsLabel, hex32, fc.constantFrom("pods", "agent", "..", ".")), {
        minLength: 1,
        maxLength: 3,
      })
      .map((s) => `${root}/${s.join("/")}`),
    fc
      .integer({ min: 0, max: Math.max(0, rootSegs.length - 1) })
      .map((n) => `/${rootSegs.slice(0, n).join("/")}`),
    fc.constantFrom(
      `${root}-x`,
      `${root}x/pods`,
      `${root.slice(0, -1)}`,
      "/data",
      "/opt/x",
      "/var/lib/docker",
    ),
  );
  return base.chain(mangledPath);
}

// --- pods --------------------------------------------------------------------------------------

const CONTAINER_NAMES = ["main", "sidecar", "web", "init", "c-1", "debug", "x"];
const containerName = fc.constantFrom(...CONTAINER_NAMES);
const mountPath = fc.oneof(
  fc.constantFrom("/datasets", "/datasets/", "//datasets", "/datasets/.", "/data", "/var/log/app", "/work"),
  fc.array(dnsLabel, { minLength: 1, maxLength: 3 }).map((s) => `/${s.join("/")}`),
);

const unknownField = fc.oneof(
  { arbitrary: fc.jsonValue({ maxDepth: 3 }), weight: 20 },
  {
    arbitrary: fc.integer({ min: 50, max: 3000 }).map((d) => new Deep(d, d % 2 === 0 ? "array" : "object")),
    weight: 2,
  },
  {
    arbitrary: fc
      .integer({ min: 10_000, max: 100_000 })
      .map((d) => new Deep(d, d % 2 === 0 ? "array" : "object")),
    weight: 1,
  },
);
/** `arb` one time in `n`, else undefined. */
export function rarely<T>(arb: fc.Arbitrary<T>, n: number): fc.Arbitrary<T | undefined> {
  return fc.oneof({ arbitrary: arb, weight: 1 }, { arbitrary: fc.constant(undefined), weight: n - 1 });
}

const rareUnknownField = rarely(unknownField, 10);

const volumeMount = fc.record(
  {
    // Rarely dynamic-volumes: the webhook denies any mount of it that it did not write itself.
    name: fc.oneof({ arbitrary: dnsLabel, weight: 12 }, { arbitrary: fc.constant(VOLUME_NAME), weight: 1 }),
    mountPath,
    readOnly: fc.boolean(),
    mountPropagation: fc.constantFrom("None", "HostToContainer", "Bidirectional"),
  },
  { requiredKeys: ["name", "mountPath"] },
);

const container = fc.record(
  {
    name: containerName,
    image: fc.constantFrom("busybox:1.36", "python:3.12-slim"),
    command: fc.array(anyText, { maxLength: 3 }),
    volumeMounts: fc.array(volumeMount, { maxLength: 3 }),
    "x-unknown": rareUnknownField,
  },
  { requiredKeys: ["name", "image", "x-unknown"] },
);

const volume: fc.Arbitrary<Json> = fc.oneof(
  { arbitrary: dnsLabel.map((name) => ({ name, emptyDir: {} })), weight: 3 },
  { arbitrary: dnsLabel.map((name) => ({ name, configMap: { name: "cm" } })), weight: 1 },
  { arbitrary: dnsLabel.map((name) => ({ name, secret: { secretName: "s" } })), weight: 1 },
  {
    arbitrary: dnsLabel.map((name) => ({ name, persistentVolumeClaim: { claimName: "data" } })),
    weight: 1,
  },
  {
    arbitrary: dnsLabel.map((name) => ({
      name,
      projected: { sources: [{ serviceAccountToken: { path: "token", expirationSeconds: 3607 } }] },
    })),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      name: dnsLabel,
      hostPath: fc.record(
        {
          path: fc.oneof(
            { arbitrary: fc.constantFrom("/data", "/opt/models", "/var/log", "/var/lib/other"), weight: 3 },
            { arbitrary: hostPathNear(ROOT), weight: 1 },
          ),
          type: fc.constantFrom("", "Directory", "DirectoryOrCreate"),
        },
        { requiredKeys: ["path"] },
      ),
    }),
    weight: 2,
  },
  { arbitrary: fc.constant({ name: VOLUME_NAME, emptyDir: {} }), weight: 1 },
);

/** Values of our annotations: good ones, near misses and hostile ones. */
const ourAnnotation: Record<string, fc.Arbitrary<unknown>> = {
  [ANNOTATIONS.buckets]: bucketsValue,
  [ANNOTATIONS.mounter]: fc.oneof(fc.constantFrom("geesefs", "s3fs", "rclone", "S3FS", ""), anyText),
  [ANNOTATIONS.secret]: fc.oneof(fc.constantFrom("creds", "dynamic-volumes-credentials"), anyText),
  [ANNOTATIONS.mountPath]: fc.oneof(
    mountPath,
    fc.constantFrom("", "/", "//", "relative", "/a/../b", "/a/./b", "/\u0000x", "/x\ny"),
    fc.constant(`/${"m".repeat(1100)}`),
    anyText,
  ),
  [ANNOTATIONS.containers]: fc.oneof(
    fc.array(fc.oneof(containerName, dnsLabel), { maxLength: 3 }).map((n) => n.join(",")),
    fc.constantFrom(",", " , ", "main,,main"),
    anyText,
  ),
  [ANNOTATIONS.inject]: fc.constantFrom("false", "true", "False", "", "0"),
  [ANNOTATIONS.id]: fc.oneof(hex32, anyText),
  [ANNOTATIONS.idSignature]: fc.oneof(fc.stringMatching(/^[0-9a-f]{64}$/), anyText),
  [ANNOTATIONS.status]: fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)),
  "dynamic-volumes/mount-options": fc.oneof(
    fc.constantFrom("uid=1000,gid=1000", "allow_root", "-o x"),
    anyText,
  ),
};

const otherAnnotationKey = fc.oneof(
  fc.constantFrom(
    "example.com/owner",
    "a~b/c~1d",
    "~",
    "/",
    "~1",
    "dynamic-volumes/",
    "dynamic-volumes/zzz",
    "__proto__",
    "constructor",
  ),
  fc.string({ unit: "grapheme", minLength: 1, maxLength: 12 }),
  fc.tuple(dnsLabel, dnsLabel).map(([a, b]) => `${a}.io/${b}`),
);

const annotations: fc.Arbitrary<Json> = fc
  .record({
    ours: fc
      .subarray(Object.keys(ourAnnotation), { maxLength: 5 })
      .chain((keys) => fc.tuple(...keys.map((k) => ourAnnotation[k]!.map((v) => [k, v] as const)))),
    others: fc.array(fc.tuple(otherAnnotationKey, anyText), { maxLength: 4 }),
    huge: rarely(
      fc.tuple(
        fc.oneof(otherAnnotationKey, fc.constantFrom(ANNOTATIONS.buckets, ANNOTATIONS.mounter)),
        fc.integer({ min: 20_000, max: 400_000 }),
        fc.constantFrom("a", "ü", ","),
      ),
      40,
    ),
  })
  .map(({ ours, others, huge }) => {
    const out: Json = {};
    const set = (k: string, v: unknown): void => {
      Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
    };
    for (const [k, v] of others) set(k, v);
    for (const [k, v] of ours) set(k, v);
    if (huge !== undefined) set(huge[0], new Huge(huge[1], huge[2]));
    return out;
  });

/** A pod of random shape that mostly follows the Pod schema (names are not DNS-checked there). */
export const podArb: fc.Arbitrary<Json> = fc
  .record(
    {
      name: dnsLabel,
      generateName: fc.boolean(),
      annotations,
      labels: fc.dictionary(dnsLabel, dnsLabel, { maxKeys: 3 }),
      containers: fc.uniqueArray(container, { minLength: 1, maxLength: 4, selector: (c) => c.name }),
      initContainers: fc.uniqueArray(container, { maxLength: 2, selector: (c) => c.name }),
      ephemeralContainers: fc.uniqueArray(
        container.map((c) => ({ ...c, name: `eph-${c.name}`, targetContainerName: "main" })),
        { maxLength: 1, selector: (c) => c.name },
      ),
      volumes: fc.array(volume, { maxLength: 5 }),
      specUnknown: rareUnknownField,
      nodeName: dnsLabel,
    },
    {
      requiredKeys: ["name", "generateName", "containers"],
    },
  )
  .map((p) => {
    const metadata: Json = p.generateName ? { generateName: `${p.name}-` } : { name: p.name };
    if (p.annotations !== undefined) metadata.annotations = p.annotations;
    if (p.labels !== undefined) metadata.labels = p.labels;
    const spec: Json = { containers: p.containers };
    if (p.initContainers !== undefined) spec.initContainers = p.initContainers;
    if (p.ephemeralContainers !== undefined) spec.ephemeralContainers = p.ephemeralContainers;
    if (p.volumes !== undefined) spec.volumes = p.volumes;
    if (p.specUnknown !== undefined) spec["x-deep"] = p.specUnknown;
    if (p.nodeName !== undefined) spec.nodeName = p.nodeName;
    return { apiVersion: "v1", kind: "Pod", metadata, spec };
  });

/** A JSON path into an object (for deleting or replacing one field). */
export function paths(value: unknown, prefix: string[] = [], out: string[][] = [], depth = 0): string[][] {
  if (
    depth > 6 ||
    typeof value !== "object" ||
    value === null ||
    value instanceof Huge ||
    value instanceof Deep
  )
    return out;
  for (const [k, v] of Object.entries(value)) {
    const p = [...prefix, k];
    out.push(p);
    paths(v, p, out, depth + 1);
  }
  return out;
}

/** A copy of `value` with the member at `path` replaced (or deleted when `replacement` is `DELETE`). */
export const DELETE = Symbol("delete");
export function withAt(value: unknown, path: readonly string[], replacement: unknown): unknown {
  if (path.length === 0) return replacement;
  if (typeof value !== "object" || value === null) return value;
  const [head, ...rest] = path as [string, ...string[]];
  const copy: Record<string, unknown> = Array.isArray(value)
    ? ([...(value as unknown[])] as unknown as Json)
    : { ...value };
  if (rest.length === 0 && replacement === DELETE) {
    if (Array.isArray(copy)) (copy as unknown[]).splice(Number(head), 1);
    else delete copy[head];
  } else
    Object.defineProperty(copy, head, {
      value: withAt(copy[head], rest, replacement),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  return copy;
}
