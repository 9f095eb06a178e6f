import { expect } from "chai";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { load as loadYaml } from "js-yaml";
import { readPod } from "../../../agent/reconcile/pod.js";
import { AppError } from "../../../shared/errors.js";
import { ANNOTATIONS, CSI_DRIVER_NAME, VOLUME_NAME } from "../../../shared/names.js";
import { verifyPodId } from "../../../shared/signing.js";
import { runInjectCli } from "../../../webhook/inject-cli.js";
import { applyAddOps, asPod, injectPod, parseManifest } from "../../../webhook/inject.js";
import { mutatePod } from "../../../webhook/mutate.js";
import { barePod, deploymentPod, sidecarPod, type Json } from "../../fixtures/pods.js";
import { applyJsonPatch, validatePod } from "../../support/patch.js";
import { injectedPod, podIdOf } from "../../../scripts/lib/pods.js";

const KEY_TEXT = "inject-test-signing-key-0123456789\n";
const key = Buffer.from(KEY_TEXT.trim());
const ROOT = "/srv/dv";
let counter = 0;
const mintId = (): string => (++counter).toString(16).padStart(32, "0");

const POD_YAML = `apiVersion: v1
kind: Pod
metadata:
  name: trainer
  namespace: team-a
  annotations:
    dynamic-volumes/buckets: "data=bucket-a:ro"
spec:
  containers:
    - name: main
      image: busybox
`;

function appError(fn: () => unknown): AppError {
  try {
    fn();
  } catch (e) {
    expect(e).to.be.instanceOf(AppError);
    return e as AppError;
  }
  throw new Error("no error thrown");
}

describe("injectPod", () => {
  describe("in csi mode", () => {
    it("[ok] gives the pod the CSI volume and the uid the API server would, and it reads back as injected", () => {
      const manifest = parseManifest(POD_YAML, "pod.yaml");
      const r = injectPod(manifest, { volumeMode: "csi", root: ROOT, mintId, mintUid: () => "uid-1" });
      expect(r.kind).to.equal("patched");
      expect(r.id).to.equal(undefined);
      expect(r.warnings, "no Pod Security warning").to.deep.equal([]);
      const pod = r.pod as { metadata: Json; spec: { volumes: Json[] } };
      expect(pod.metadata.uid).to.equal("uid-1");
      expect(pod.spec.volumes).to.deep.equal([
        { name: VOLUME_NAME, csi: { driver: CSI_DRIVER_NAME, readOnly: true } },
      ]);
      validatePod(pod);
      const again = injectPod(pod, { volumeMode: "csi", root: ROOT, mintId, mintUid: () => "uid-2" });
      expect(again.kind).to.equal("unchanged");
      expect((again.pod.metadata as Json).uid).to.equal("uid-1");
    });

    it("[ok] keeps a uid the manifest already has", () => {
      const manifest = parseManifest(
        POD_YAML.replace("  name: trainer\n", "  name: trainer\n  uid: u-0\n"),
        "pod.yaml",
      );
      const r = injectPod(manifest, { volumeMode: "csi", root: ROOT, mintId });
      expect((r.pod.metadata as Json).uid).to.equal("u-0");
    });

    it("[error] hostPath mode without a key", () => {
      expect(
        appError(() => injectPod(parseManifest(POD_YAML, "pod.yaml"), { root: ROOT, mintId })).message,
      ).to.match(/hostPath mode needs the signing key/);
    });
  });

  for (const [what, make] of [
    ["a bare pod", barePod],
    ["a deployment's pod", () => deploymentPod({ [ANNOTATIONS.buckets]: "bucket-a" })],
    ["a pod with a sidecar", () => sidecarPod()],
  ] as Array<[string, () => Json]>)
    it(`[ok] gives ${what} exactly what the webhook's patch gives it, and it reads back as injected`, () => {
      const manifest: Json = { apiVersion: "v1", kind: "Pod", ...make() };
      const before = JSON.stringify(manifest);
      const id = (counter + 1).toString(16).padStart(32, "0");
      const r = injectPod(manifest, { signingKey: key, root: ROOT, mintId });
      expect(JSON.stringify(manifest), "the input is not changed").to.equal(before);
      expect(r.kind).to.equal("patched");
      expect(r.id).to.equal(id);
      // The same as applying the webhook's patch with a full RFC 6902 implementation.
      const ns = ((manifest.metadata as Json | undefined)?.namespace as string | undefined) ?? "default";
      const expected = structuredClone({
        ...manifest,
        metadata: { ...((manifest.metadata as Json | undefined) ?? {}), namespace: ns },
      });
      counter--;
      const m = mutatePod(
        expected,
        ns,
        { root: ROOT, defaultMountPath: "/datasets", signingKey: key },
        mintId,
      );
      if (m.kind !== "patched") throw new Error(m.kind);
      expect(r.pod).to.deep.equal(applyJsonPatch(expected, m.patch));
      validatePod(r.pod);
      const md = r.pod.metadata as { namespace: string; annotations: Record<string, string> };
      expect(
        verifyPodId(
          key,
          md.namespace,
          md.annotations[ANNOTATIONS.id]!,
          md.annotations[ANNOTATIONS.idSignature]!,
        ),
      ).to.equal(true);
      const view = readPod(r.pod, { root: ROOT, signingKey: key, defaultMounter: "s3fs" });
      expect(view?.refusal, "the agent accepts it").to.equal(undefined);
      expect(view?.dir).to.equal(`${ROOT}/pods/${id}`);
    });

  it("[ok] writes namespace default into a pod without one, so that the signature and the pod agree", () => {
    const r = injectPod(
      { apiVersion: "v1", kind: "Pod", metadata: { name: "p" }, spec: { containers: [{ name: "c" }] } },
      { signingKey: key, root: ROOT, mintId },
    );
    expect((r.pod.metadata as Json).namespace).to.equal("default");
    const view = readPod(r.pod, { root: ROOT, signingKey: key, defaultMounter: "s3fs" });
    expect(view?.refusal).to.equal(undefined);
  });

  it("[ok] leaves an already injected pod and an opted-out pod unchanged, saying why", () => {
    const first = injectPod(parseManifest(POD_YAML, "pod.yaml"), { signingKey: key, root: ROOT, mintId });
    const again = injectPod(first.pod, { signingKey: key, root: ROOT, mintId });
    expect(again.kind).to.equal("unchanged");
    expect(again.pod).to.deep.equal(first.pod);
    const out = injectPod(
      {
        kind: "Pod",
        metadata: { annotations: { [ANNOTATIONS.inject]: "false" } },
        spec: { containers: [{ name: "c" }] },
      },
      { signingKey: key, root: ROOT, mintId },
    );
    expect(out.kind).to.equal("skipped");
    expect(out.reason).to.match(/inject/);
  });

  it("[error] a pod the webhook denies: Forbidden with the webhook's own message", () => {
    const e = appError(() =>
      injectPod(
        {
          kind: "Pod",
          metadata: { annotations: { [ANNOTATIONS.containers]: "nope" } },
          spec: { containers: [{ name: "main" }] },
        },
        { signingKey: key, root: ROOT, mintId },
      ),
    );
    expect(e.code).to.equal("Forbidden");
    expect(e.message).to.match(
      /^the webhook would deny this pod: dynamic-volumes: .*names "nope", which is not a container of this pod \(it has: main\)/,
    );
    const hostPath = appError(() =>
      injectPod(
        {
          kind: "Pod",
          spec: {
            containers: [{ name: "c" }],
            volumes: [{ name: "x", hostPath: { path: `${ROOT}/pods/${"a".repeat(32)}` } }],
          },
        },
        { signingKey: key, root: ROOT, mintId },
      ),
    );
    expect(hostPath.message).to.match(/^the webhook would deny this pod: dynamic-volumes: /);
  });

  it("[error] what is not a Pod is named", () => {
    expect(appError(() => asPod([1], "x.yaml")).message).to.equal("x.yaml is a list, not a Pod object");
    expect(appError(() => asPod("text", "x.yaml")).message).to.match(/^x.yaml is "text", not a Pod object/);
    const dep = appError(() => asPod({ apiVersion: "apps/v1", kind: "Deployment" }, "d.yaml"));
    expect(dep.code).to.equal("InvalidArgument");
    expect(dep.message).to.match(/^d.yaml is a "Deployment", not a Pod; .*pod template/);
    expect(appError(() => asPod({ metadata: {} }, "n.yaml")).message).to.match(
      /^n.yaml has no kind, not a Pod/,
    );
    expect(appError(() => asPod({ kind: "Pod", apiVersion: "v2" }, "v.yaml")).message).to.match(
      /apiVersion is "v1"/,
    );
    expect(
      appError(() =>
        injectPod({ kind: "Pod", metadata: { namespace: 3 }, spec: {} }, { signingKey: key, mintId }),
      ).message,
    ).to.match(/metadata.namespace must be a non-empty string/);
  });
});

describe("parseManifest", () => {
  it("[ok] reads YAML and JSON", () => {
    expect(parseManifest(POD_YAML, "p.yaml")).to.deep.equal(loadYaml(POD_YAML));
    expect(parseManifest('{"kind": "Pod"}', "p.json")).to.deep.equal({ kind: "Pod" });
    expect(parseManifest(`---\n${POD_YAML}---\n`, "p.yaml")).to.deep.equal(loadYaml(POD_YAML));
  });

  it("[error] bad YAML, nothing, or several documents", () => {
    const bad = appError(() => parseManifest("metadata: [unclosed", "bad.yaml"));
    expect(bad.code).to.equal("InvalidArgument");
    expect(bad.message).to.match(/^bad.yaml is not valid YAML or JSON: /);
    expect(bad.message).not.to.include("\n");
    expect(appError(() => parseManifest("", "e.yaml")).message).to.equal("e.yaml is empty; give it one Pod");
    expect(appError(() => parseManifest(`${POD_YAML}---\n${POD_YAML}`, "two.yaml")).message).to.match(
      /^two.yaml holds 2 documents/,
    );
  });
});

describe("applyAddOps", () => {
  it("[ok] adds members, appends with -, inserts at an index, and unescapes pointers", () => {
    const doc: Json = { metadata: { annotations: {} }, spec: { list: [1, 3] } };
    applyAddOps(doc, [
      { op: "add", path: "/metadata/annotations/a~1b~0c", value: "x" },
      { op: "add", path: "/spec/list/-", value: 4 },
      { op: "add", path: "/spec/list/1", value: 2 },
      { op: "add", path: "/spec/new", value: [{ v: 1 }] },
    ]);
    expect(doc).to.deep.equal({
      metadata: { annotations: { "a/b~c": "x" } },
      spec: { list: [1, 2, 3, 4], new: [{ v: 1 }] },
    });
  });

  it("[error] another operation, a missing parent or an index out of range", () => {
    expect(() => applyAddOps({}, [{ op: "remove", path: "/a" }])).to.throw(
      /unexpected patch operation remove/,
    );
    expect(() => applyAddOps({}, [{ op: "add", path: "/a/b", value: 1 }])).to.throw(/a does not exist/);
    expect(() => applyAddOps({ l: [] }, [{ op: "add", path: "/l/3", value: 1 }])).to.throw(/out of range/);
  });
});

describe("inject command", () => {
  let dir: string;
  let out: string;
  let err: string;
  const io = {
    stdout: (t: string): void => void (out += t),
    stderr: (t: string): void => void (err += t),
    mintId,
  };
  const run = (...argv: string[]): number => runInjectCli(argv, io);

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "dv-inject-"));
    writeFileSync(join(dir, "key"), KEY_TEXT, { mode: 0o600 });
    writeFileSync(join(dir, "pod.yaml"), POD_YAML);
    out = "";
    err = "";
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("[ok] prints the injected pod as JSON, for the pods directory, with no warning meant for a cluster", () => {
    expect(run("--signing-key-file", join(dir, "key"), "--root", ROOT, join(dir, "pod.yaml"))).to.equal(0);
    expect(err).to.equal("");
    const pod = JSON.parse(out) as {
      metadata: { annotations: Record<string, string> };
      spec: { volumes: Array<{ name: string; hostPath: { path: string } }> };
    };
    const id = pod.metadata.annotations[ANNOTATIONS.id]!;
    expect(pod.spec.volumes.find((v) => v.name === VOLUME_NAME)?.hostPath.path).to.equal(
      `${ROOT}/pods/${id}`,
    );
    expect(verifyPodId(key, "team-a", id, pod.metadata.annotations[ANNOTATIONS.idSignature]!)).to.equal(true);
    expect(pod.metadata.annotations[ANNOTATIONS.buckets]).to.equal("data=bucket-a:ro");
  });

  it("[ok] --volume-mode csi: the CSI volume, a uid, no id, and no signing key needed", () => {
    expect(run("--volume-mode", "csi", "--root", ROOT, join(dir, "pod.yaml"))).to.equal(0);
    expect(err).to.equal("");
    const pod = JSON.parse(out) as {
      metadata: { uid: string; annotations: Record<string, string> };
      spec: { volumes: Array<Record<string, unknown>> };
    };
    expect(pod.spec.volumes).to.deep.equal([
      { name: VOLUME_NAME, csi: { driver: CSI_DRIVER_NAME, readOnly: true } },
    ]);
    expect(pod.metadata.uid).to.match(/^[0-9a-f-]{36}$/);
    expect(pod.metadata.annotations).to.not.have.property(ANNOTATIONS.id);
    expect(pod.metadata.annotations[ANNOTATIONS.mountPath]).to.equal("/datasets");
  });

  it("[ok] YAML out with -o yaml and --flag=value; the default root; --help", () => {
    expect(run(`--signing-key-file=${join(dir, "key")}`, "-o", "yaml", join(dir, "pod.yaml"))).to.equal(0);
    const pod = loadYaml(out) as { spec: { volumes: Array<{ hostPath: { path: string } }> } };
    expect(pod.spec.volumes[0]!.hostPath.path).to.match(/^\/var\/lib\/dynamic-volumes\/pods\/[0-9a-f]{32}$/);
    out = "";
    expect(run("--help")).to.equal(0);
    expect(out).to.match(/^Usage: npm run --silent inject/);
  });

  it("[ok] warns about a key other users can read, and passes the webhook's warnings on", () => {
    chmodSync(join(dir, "key"), 0o644);
    writeFileSync(join(dir, "pod.yaml"), POD_YAML.replace("data=bucket-a:ro", "data=bucket-a:ro,../x"));
    expect(run("--signing-key-file", join(dir, "key"), join(dir, "pod.yaml"))).to.equal(0);
    expect(err).to.include(`can be read by other users; chmod 600 ${join(dir, "key")}`);
    expect(err).to.match(/inject: warning: dynamic-volumes: dynamic-volumes\/buckets entry 2/);
  });

  const failures: Array<[string, () => string[], RegExp, number]> = [
    [
      "a missing key file",
      () => ["--signing-key-file", join(dir, "nokey"), join(dir, "pod.yaml")],
      /^inject: signing key file .*nokey does not exist; create one \(mode 0600\) with: \(umask 077; head -c 32 \/dev\/urandom \| base64 > .*nokey\)\n$/,
      1,
    ],
    [
      "a short key",
      () => (
        writeFileSync(join(dir, "key"), "short"),
        ["--signing-key-file", join(dir, "key"), join(dir, "pod.yaml")]
      ),
      /^inject: the signing key in .* is 5 bytes; use at least 16/,
      1,
    ],
    [
      "bad YAML",
      () => (
        writeFileSync(join(dir, "pod.yaml"), "kind: [Pod"),
        ["--signing-key-file", join(dir, "key"), join(dir, "pod.yaml")]
      ),
      /^inject: .*pod.yaml is not valid YAML or JSON: [^\n]*\n$/,
      1,
    ],
    [
      "not a Pod",
      () => (
        writeFileSync(join(dir, "pod.yaml"), "apiVersion: apps/v1\nkind: Deployment\n"),
        ["--signing-key-file", join(dir, "key"), join(dir, "pod.yaml")]
      ),
      /^inject: .*pod.yaml is a "Deployment", not a Pod/,
      1,
    ],
    [
      "a denied pod",
      () => (
        writeFileSync(
          join(dir, "pod.yaml"),
          POD_YAML.replace("  annotations:\n", "  annotations:\n    dynamic-volumes/containers: nope\n"),
        ),
        ["--signing-key-file", join(dir, "key"), join(dir, "pod.yaml")]
      ),
      /^inject: the webhook would deny this pod: dynamic-volumes: dynamic-volumes\/containers names "nope"/,
      1,
    ],
    [
      "a missing manifest",
      () => ["--signing-key-file", join(dir, "key"), join(dir, "none.yaml")],
      /^inject: .*none.yaml does not exist\n$/,
      1,
    ],
    [
      "no key flag",
      () => [join(dir, "pod.yaml")],
      /^inject: --signing-key-file is required \(in hostPath mode\)\n\nUsage:/,
      2,
    ],
    [
      "an unknown volume mode",
      () => ["--volume-mode", "nfs", join(dir, "pod.yaml")],
      /^inject: --volume-mode is hostPath or csi, not "nfs"\n\nUsage:/,
      2,
    ],
    [
      "no manifest",
      () => ["--signing-key-file", join(dir, "key")],
      /^inject: give the pod manifest's file/,
      2,
    ],
    [
      "an unknown flag",
      () => ["--signing-key-file", join(dir, "key"), "--nope", join(dir, "pod.yaml")],
      /^inject: unknown flag --nope/,
      2,
    ],
    [
      "a relative root",
      () => ["--signing-key-file", join(dir, "key"), "--root", "rel", join(dir, "pod.yaml")],
      /^inject: --root must be an absolute directory/,
      2,
    ],
  ];
  for (const [what, argv, message, code] of failures)
    it(`[error] ${what}: one clear line on stderr, nothing on stdout, exit ${code}`, () => {
      expect(run(...argv())).to.equal(code);
      expect(err).to.match(message);
      expect(out).to.equal("");
    });
});

describe("injectedPod (scripts/lib/pods.ts, the pods of local mode and the node-side tests)", () => {
  it("[ok] hostPath mode by default: the signed hostPath, no uid, the id as the pod's directory", () => {
    const pod = injectedPod(
      { namespace: "team-a", name: "p", buckets: "b" },
      { root: ROOT, signingKey: key },
    );
    const id = pod.metadata.annotations[ANNOTATIONS.id]!;
    expect(pod.spec.volumes.find((v) => v.name === VOLUME_NAME)?.hostPath?.path).to.equal(
      `${ROOT}/pods/${id}`,
    );
    expect(pod.metadata.uid).to.equal(undefined);
    expect(podIdOf(pod)).to.equal(id);
    validatePod(pod);
  });

  it("[ok] csi mode: the CSI volume, the uid the API server would give, the uid as the pod's directory", () => {
    const uid = "0b4f6a52-2f5e-4a57-9d3c-5b1c2a4e8f10";
    const pod = injectedPod({ namespace: "team-a", name: "p", uid }, { root: ROOT, volumeMode: "csi" });
    expect(pod.spec.volumes).to.deep.equal([
      { name: VOLUME_NAME, csi: { driver: CSI_DRIVER_NAME, readOnly: true } },
    ]);
    expect(pod.metadata.uid).to.equal(uid);
    expect(pod.metadata.annotations).to.not.have.property(ANNOTATIONS.id);
    expect(podIdOf(pod)).to.equal(uid);
    validatePod(pod);
    const other = injectedPod({ namespace: "team-a", name: "q" }, { root: ROOT, volumeMode: "csi" });
    expect(other.metadata.uid)
      .to.match(/^[0-9a-f-]{36}$/)
      .and.not.equal(uid);
  });
});
