/**
 * The hostPath ValidatingAdmissionPolicy (manifests/base/hostpath-policy.yaml), evaluated for real:
 * its CEL (matchConditions, variables, validations and their messageExpressions) runs in
 * `@marcbachmann/cel-js` against a corpus of pods, and must decide every pod as the webhook's own
 * rule does (`checkVolumes` in webhook/isolation.ts). The webhook covers the opted-in namespaces, the
 * policy every other one: the same pod must be denied or allowed in both.
 *
 * CEL functions. Kubernetes evaluates these expressions with cel-go plus its own libraries (the
 * strings extension: split, join, lowerAscii…; regex, lists, URLs…). The policy calls only `size`,
 * `string.split(string)`, `list<string>.join(string)` / `join()` and `string.startsWith`, besides the
 * macros `has`, `filter` and `map`. cel-js 8 ships all of them, so this test registers NO function:
 * registering one it has would shadow its overload. Instead it pins (1) that the policy calls only
 * those functions (a new one fails the test until it is checked, or registered here with the
 * Kubernetes semantics), and (2) that cel-js's `split`, `join` and `startsWith` behave as Kubernetes'
 * (Go's strings.Split, strings.Join, strings.HasPrefix) on the edge cases the policy relies on: empty
 * strings, leading, doubled and trailing separators. Note for later: cel-js's `lowerAscii` lowers
 * non-ASCII letters too, and its `split("")` splits UTF-16 units where Go splits runes; the policy
 * uses neither.
 */
import { Environment } from "@marcbachmann/cel-js";
import { expect } from "chai";
import { isDeepStrictEqual } from "node:util";
import { DEFAULT_ROOT } from "../../../shared/names.js";
import { KERNEL_ALIASES, checkVolumes } from "../../../webhook/isolation.js";
import {
  MANIFESTS_DIR,
  findObject,
  hasKubectl,
  objectId,
  render,
  renderWithKubectl,
  renderWithoutKubectl,
  validateObject,
  type KubeObject,
} from "../../support/manifests.js";

const POLICY_WARN_OVERLAY_DIR = `${MANIFESTS_DIR}/overlays/policy-warn`;
const NAMESPACE = "team-a";
const KEY = Buffer.from("policy-cel-test-signing-key-0123456789");

type Json = Record<string, unknown>;

interface NamedExpression {
  name: string;
  expression: string;
}
interface Validation {
  expression: string;
  message?: string;
  messageExpression?: string;
  reason?: string;
}
interface PolicySpec {
  matchConditions?: NamedExpression[];
  variables?: NamedExpression[];
  validations: Validation[];
}

/** The functions the policy may call, each checked above to behave in cel-js as in Kubernetes. */
const CHECKED_FUNCTIONS = new Set(["size", "split", "join", "startsWith"]);
/** Macros: expanded by the parser, the same in every CEL implementation. */
const MACROS = new Set(["has", "filter", "map", "all", "exists", "exists_one"]);

// The object is untyped (dyn) here, while the API server types it from the Pod's OpenAPI schema, in
// which volume names and hostPath paths are strings: there the map literal {'name', 'path', 'dir'} of
// variables.hostPaths is homogeneous; here its dyn and string values would be refused as mixed.
const env = new Environment({ unlistedVariablesAreDyn: true, homogeneousAggregateLiterals: false });

interface PolicyResult {
  readonly denied: boolean;
  readonly messages: readonly string[];
  readonly errors: readonly string[];
}

/**
 * What the API server decides for a pod CREATE, with failurePolicy Fail and validationActions [Deny]:
 * a matchCondition that is false skips the policy; an error anywhere denies; a validation that is
 * false denies with its message.
 */
function evaluatePolicy(spec: PolicySpec, pod: Json): PolicyResult {
  const errors: string[] = [];
  const messages: string[] = [];
  const variables: Record<string, unknown> = {};
  const ctx = {
    object: pod,
    oldObject: null,
    params: null,
    request: { operation: "CREATE", namespace: NAMESPACE, kind: { group: "", version: "v1", kind: "Pod" } },
    namespaceObject: { metadata: { name: NAMESPACE, labels: { "kubernetes.io/metadata.name": NAMESPACE } } },
    variables,
  };
  const run = (what: string, expression: string): unknown => {
    try {
      return env.evaluate(expression, ctx) as unknown;
    } catch (e) {
      errors.push(`${what}: ${(e as Error).message.split("\n")[0]}`);
      return undefined;
    }
  };
  for (const m of spec.matchConditions ?? []) {
    const r = run(`matchCondition ${m.name}`, m.expression);
    if (r === false) return { denied: false, messages, errors };
    if (r !== true) return { denied: true, messages, errors };
  }
  for (const v of spec.variables ?? []) variables[v.name] = run(`variable ${v.name}`, v.expression);
  let denied = errors.length > 0;
  for (const [i, v] of spec.validations.entries()) {
    const r = run(`validation ${i}`, v.expression);
    if (r === true) continue;
    denied = true;
    if (r !== false) {
      if (r !== undefined) errors.push(`validation ${i}: returned ${JSON.stringify(r)}, not a bool`);
      continue;
    }
    if (v.messageExpression !== undefined) {
      const m = run(`messageExpression ${i}`, v.messageExpression);
      if (typeof m === "string") messages.push(m);
      else if (m !== undefined) errors.push(`messageExpression ${i}: returned a ${typeof m}`);
    } else messages.push(v.message ?? "");
  }
  return { denied, messages, errors };
}

/** What the webhook decides for the same volumes, in an opted-in namespace. */
function webhookDenies(pod: Json): boolean {
  const volumes = ((pod.spec as Json).volumes ?? []) as unknown[];
  return typeof checkVolumes(volumes, {}, NAMESPACE, { root: DEFAULT_ROOT, signingKey: KEY }) === "object";
}

function pod(volumes?: Json[]): Json {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: "p", namespace: NAMESPACE },
    spec: {
      containers: [{ name: "app", image: "busybox:1.36" }],
      ...(volumes !== undefined ? { volumes } : {}),
    },
  };
}

const hostPath = (path: string, name = "h"): Json => ({ name, hostPath: { path, type: "Directory" } });

// The corpus. Paths with a ".." segment are left out: the API server's validation of hostPath rejects
// them before any admission policy runs (the webhook resolves them, the policy need not).
const victim = `${DEFAULT_ROOT}/pods/0123456789abcdef0123456789abcdef`;
const PATHS: readonly string[] = [
  // The root and what lies under it, spelled every way the kernel resolves to the same place.
  DEFAULT_ROOT,
  `${DEFAULT_ROOT}/`,
  `${DEFAULT_ROOT}/pods`,
  victim,
  `${victim}/buckets/b1`,
  `/${DEFAULT_ROOT}`,
  "/var//lib///dynamic-volumes//pods",
  "/var/./lib/./dynamic-volumes/.",
  "/./var/lib/dynamic-volumes",
  "/var/lib/dynamic-volumes/./",
  "var/lib/dynamic-volumes",
  "var/lib/dynamic-volumes/pods",
  "./var/lib/dynamic-volumes",
  // Its ancestors.
  "/var/lib",
  "/var/lib/",
  "/var//lib",
  "/var",
  "/var/",
  "/",
  "//",
  "///",
  "/.",
  "/./",
  ".",
  "var",
  "var/lib/",
  // Near misses, allowed by both.
  "/var/lib/dynamic-volumes-backup",
  "/var/lib/dynamic-volumesX/pods",
  "/var/lib/dynamic",
  "/var/lib/dynamic-",
  "/var/lib/.dynamic-volumes",
  "/var/lib/..dynamic-volumes",
  "/var/lib/...",
  "/var/lib/kubelet",
  "/var/lib/docker/volumes",
  "/var/log",
  "/var/libx",
  "/VAR/LIB/DYNAMIC-VOLUMES",
  "/data/var/lib/dynamic-volumes",
  "/srv/dynamic-volumes",
  "/opt/data",
  "/opt/data/",
  "opt/data",
  "/etc/ssl/certs",
  "/tmp",
  "/home/user/var/lib",
  // Kernel aliases (the webhook's test corpus), and paths that only look like one.
  `/proc/self/root${victim}`,
  "/proc/self/root/var/lib/dynamic-volumes",
  "/proc/1/root/var/lib/dynamic-volumes",
  "/proc/1/root",
  "/proc/1/cwd",
  "/proc/sys/kernel",
  "/proc",
  "/proc/",
  "//proc/self/root/",
  "/./proc/./self/root",
  `proc/self/root${victim}`,
  "proc",
  "/dev/fd/3/pods",
  "/dev/fd",
  "/dev//fd/",
  "/dev/stdin",
  "/dev/stdout/x",
  "/dev/stderr/",
  "/procfs",
  "/proc-data",
  "/dev/fdx",
  "/dev/fuse",
  "/dev/stdinx",
  "/dev/null",
  "/dev/shm",
  "/dev",
  "/dev/",
  "/var/proc",
  "/data/proc/self/root",
  // Every alias the webhook knows, itself and under it, whatever the list becomes.
  ...KERNEL_ALIASES.flatMap((a) => [a, `${a}/`, `${a}/x/y`, `${a.slice(1)}/x`, `${a}x`]),
];

interface Case {
  readonly label: string;
  readonly pod: Json;
}

const CASES: readonly Case[] = [
  ...[...new Set(PATHS)].map((p) => ({ label: `hostPath ${JSON.stringify(p)}`, pod: pod([hostPath(p)]) })),
  { label: "no volumes", pod: pod() },
  { label: "an empty volume list", pod: pod([]) },
  {
    label: "only volumes of other kinds",
    pod: pod([
      { name: "scratch", emptyDir: {} },
      { name: "cfg", configMap: { name: "c", defaultMode: 420 } },
      { name: "sec", secret: { secretName: "s" } },
      { name: "claim", persistentVolumeClaim: { claimName: "pvc" } },
      { name: "token", projected: { sources: [{ serviceAccountToken: { path: "token" } }] } },
      { name: "csi", csi: { driver: "example.com", volumeAttributes: { path: DEFAULT_ROOT } } },
    ]),
  },
  {
    label: "other volumes and an unrelated hostPath",
    pod: pod([{ name: "scratch", emptyDir: {} }, hostPath("/opt/data", "data"), hostPath("/var/log", "log")]),
  },
  {
    label: "other volumes and the root",
    pod: pod([
      { name: "scratch", emptyDir: {} },
      hostPath("/opt/data", "data"),
      hostPath(`${DEFAULT_ROOT}/`),
    ]),
  },
  {
    label: "an unrelated hostPath and an ancestor",
    pod: pod([hostPath("/opt/data", "data"), hostPath("/var", "var")]),
  },
  {
    label: "an unrelated hostPath and a kernel alias",
    pod: pod([hostPath("/opt/data", "data"), hostPath("/dev/stdin", "in")]),
  },
  {
    label: "the root and a kernel alias",
    pod: pod([hostPath(DEFAULT_ROOT, "root"), hostPath("/proc/1/root", "proc")]),
  },
];

interface Row {
  readonly label: string;
  readonly webhook: boolean;
  readonly policy: PolicyResult;
}

function decide(spec: PolicySpec, cases: readonly Case[]): Row[] {
  return cases.map((c) => ({
    label: c.label,
    webhook: webhookDenies(c.pod),
    policy: evaluatePolicy(spec, c.pod),
  }));
}

const verdict = (denied: boolean): string => (denied ? "denied" : "allowed");

function disagreements(rows: readonly Row[]): string[] {
  return rows
    .filter((r) => r.webhook !== r.policy.denied)
    .map((r) => `${r.label}: webhook ${verdict(r.webhook)}, policy ${verdict(r.policy.denied)}`);
}

/** Every function called in the policy's expressions (the word before an opening parenthesis). */
function calledFunctions(spec: PolicySpec): Set<string> {
  const texts = [
    ...(spec.matchConditions ?? []).map((m) => m.expression),
    ...(spec.variables ?? []).map((v) => v.expression),
    ...spec.validations.flatMap((v) => [v.expression, v.messageExpression ?? ""]),
  ].map((t) => t.replace(/'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"/g, "''"));
  return new Set(texts.flatMap((t) => [...t.matchAll(/([A-Za-z_][A-Za-z0-9_]*)\s*\(/g)].map((m) => m[1]!)));
}

describe("the hostPath policy's CEL, evaluated", function () {
  this.timeout(30_000);
  let spec: PolicySpec;
  let rows: Row[];
  before(function () {
    this.timeout(60_000);
    const policy = findObject(
      render(MANIFESTS_DIR).objects,
      "ValidatingAdmissionPolicy",
      "dynamic-volumes-hostpath",
    );
    spec = policy.spec as PolicySpec;
    rows = decide(spec, CASES);
  });

  it("calls only CEL functions whose Kubernetes semantics cel-js is checked to have", () => {
    const unchecked = [...calledFunctions(spec)].filter((f) => !MACROS.has(f) && !CHECKED_FUNCTIONS.has(f));
    expect(
      unchecked,
      "register them in this test with the Kubernetes semantics, or check cel-js's",
    ).to.deep.equal([]);
  });

  it("has split, join and startsWith behave as Kubernetes' (Go's strings.Split, Join, HasPrefix)", () => {
    const cases: Array<[string, unknown]> = [
      ["''.split('/')", [""]],
      ["'/'.split('/')", ["", ""]],
      ["'//a'.split('/')", ["", "", "a"]],
      ["'a/./b/'.split('/')", ["a", ".", "b", ""]],
      ["'abc'.split('/')", ["abc"]],
      ["[].join('')", ""],
      ["['a'].join('/')", "a"],
      ["['/a', '/b'].join('')", "/a/b"],
      ["['a', 'b'].join()", "ab"],
      ["'/var/'.startsWith('')", true],
      ["'/var/'.startsWith('/var/')", true],
      ["'/var'.startsWith('/var/')", false],
      ["size([])", 0n],
      ["size(['x'])", 1n],
    ];
    const wrong = cases
      .map(([e, want]) => [e, want, env.evaluate(e) as unknown] as const)
      .filter(([, want, got]) => !isDeepStrictEqual(got, want))
      .map(([e, want, got]) => `${e}: ${String(got)}, want ${String(want)}`);
    expect(wrong).to.deep.equal([]);
  });

  it("evaluates without an error on every pod of the corpus", () => {
    const failed = rows
      .filter((r) => r.policy.errors.length > 0)
      .map((r) => `${r.label}: ${r.policy.errors.join("; ")}`);
    expect(failed).to.deep.equal([]);
  });

  it("agrees with the webhook on every pod of the corpus", () => {
    expect(rows.length).to.equal(CASES.length);
    expect(disagreements(rows)).to.deep.equal([]);
    // The corpus exercises both outcomes.
    expect(rows.filter((r) => r.webhook).length).to.be.greaterThan(40);
    expect(rows.filter((r) => !r.webhook).length).to.be.greaterThan(25);
  });

  it("denies with a message naming the volume and its path", () => {
    const wrong: string[] = [];
    for (const [i, r] of rows.entries()) {
      if (!r.policy.denied) continue;
      const volumes = ((CASES[i]!.pod.spec as Json).volumes ?? []) as Json[];
      const named = r.policy.messages.join("\n");
      if (
        r.policy.messages.length === 0 ||
        !r.policy.messages.every((m) => m.startsWith("dynamic-volumes: "))
      )
        wrong.push(`${r.label}: ${JSON.stringify(r.policy.messages)}`);
      else if (
        !volumes.some(
          (v) =>
            v.hostPath !== undefined &&
            named.includes(`"${v.name as string}" (${(v.hostPath as Json).path as string})`),
        )
      )
        wrong.push(`${r.label}: no volume named in ${JSON.stringify(named)}`);
    }
    expect(wrong).to.deep.equal([]);
  });

  for (const c of CASES)
    it(`${c.label}: the same verdict as the webhook`, () => {
      const r = rows.find((x) => x.label === c.label)!;
      expect(verdict(r.policy.denied), r.policy.errors.join("; ")).to.equal(verdict(r.webhook));
    });

  describe("would catch a broken policy (mutated in memory, never on disk)", () => {
    const MUTATIONS: Array<[string, string, string]> = [
      ["keeps '.' segments", "s != '' && s != '.'", "s != ''"],
      ["keeps empty segments", "s != '' && s != '.'", "s != '.'"],
      ["forgets the ancestors", " || variables.rootDir.startsWith(h.dir)", ""],
      ["drops the root's trailing slash", "'/var/lib/dynamic-volumes/'", "'/var/lib/dynamic-volumes'"],
      ["forgets /proc", "h.dir.startsWith('/proc/') || ", ""],
      ["forgets /dev/stdin", "h.dir.startsWith('/dev/stdin/') || ", ""],
      ["compares /proc without its slash", "h.dir.startsWith('/proc/')", "h.dir.startsWith('/proc')"],
      ["tolerates one offending volume", "size(variables.offending) == 0", "size(variables.offending) <= 1"],
      [
        "inverts the kernel check",
        "size(variables.throughKernel) == 0",
        "size(variables.throughKernel) != 0",
      ],
    ];
    for (const [what, from, to] of MUTATIONS)
      it(`a policy that ${what}: at least one disagreement`, () => {
        const text = JSON.stringify(spec);
        const needle = JSON.stringify(from).slice(1, -1);
        expect(text, `the policy no longer contains ${from}`).to.include(needle);
        const mutated = JSON.parse(text.split(needle).join(JSON.stringify(to).slice(1, -1))) as PolicySpec;
        expect(disagreements(decide(mutated, CASES))).to.not.deep.equal([]);
      });
  });
});

describe("manifests/overlays/policy-warn/", function () {
  this.timeout(30_000);
  let base: readonly KubeObject[];
  let overlay: readonly KubeObject[];
  before(function () {
    this.timeout(60_000);
    base = render(MANIFESTS_DIR).objects;
    overlay = render(POLICY_WARN_OVERLAY_DIR).objects;
  });

  it("renders every binding of the hostPath policy with [Warn, Audit], and valid", async () => {
    const bindings = overlay.filter((o) => o.kind === "ValidatingAdmissionPolicyBinding");
    expect(bindings.map((b) => b.metadata.name).sort()).to.deep.equal([
      "dynamic-volumes-hostpath",
      "dynamic-volumes-hostpath-kube-system",
    ]);
    for (const b of bindings) {
      expect((b.spec as Json).validationActions, objectId(b)).to.deep.equal(["Warn", "Audit"]);
      await validateObject(b);
    }
  });

  it("changes nothing else", () => {
    const strip = (o: KubeObject): KubeObject =>
      o.kind === "ValidatingAdmissionPolicyBinding"
        ? { ...o, spec: { ...(o.spec as Json), validationActions: undefined } }
        : o;
    const byId = new Map(base.map((o) => [objectId(o), strip(o)]));
    expect(overlay.map(objectId).sort()).to.deep.equal([...byId.keys()].sort());
    const differ = overlay.filter((o) => !isDeepStrictEqual(strip(o), byId.get(objectId(o)))).map(objectId);
    expect(differ).to.deep.equal([]);
  });

  it("renders the same objects without kubectl as with it", function () {
    if (!hasKubectl()) {
      process.stderr.write("      kubectl is not installed: the fallback cannot be compared with it here\n");
      this.skip();
    }
    const viaKubectl = renderWithKubectl(POLICY_WARN_OVERLAY_DIR);
    const viaFallback = new Map(renderWithoutKubectl(POLICY_WARN_OVERLAY_DIR).map((o) => [objectId(o), o]));
    expect([...viaFallback.keys()].sort()).to.deep.equal(viaKubectl.map(objectId).sort());
    expect(
      viaKubectl.filter((o) => !isDeepStrictEqual(o, viaFallback.get(objectId(o)))).map(objectId),
    ).to.deep.equal([]);
  });
});
