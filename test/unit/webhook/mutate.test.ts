import { expect } from "chai";
import { posix } from "node:path";
import { ANNOTATIONS, CSI_DRIVER_NAME, VOLUME_NAME } from "../../../shared/names.js";
import { signPodId, verifyPodId } from "../../../shared/signing.js";
import {
  admitPod,
  escapePointer,
  isNormalPath,
  mutatePod,
  normalizeMountPath,
  PSA_WARNING,
  VOLUME_MODES,
  type MutateConfig,
  type MutateResult,
  type VolumeMode,
} from "../../../webhook/mutate.js";
import { decodeAdmissionReview } from "../../../webhook/review.js";
import {
  admissionReview,
  barePod,
  deploymentPod,
  ephemeralPod,
  sidecarPod,
  type Json,
} from "../../fixtures/pods.js";
import { applyJsonPatch, validatePod } from "../../support/patch.js";

const key = Buffer.from("unit-test-signing-key-0123456789");
/** hostPath mode, the default: what the tests that are not about a mode use. */
const hostPathCfg: MutateConfig = {
  root: "/var/lib/dynamic-volumes",
  defaultMountPath: "/datasets",
  signingKey: key,
};
const cfgFor = (mode: VolumeMode): MutateConfig => ({ ...hostPathCfg, volumeMode: mode });
const CSI_VOLUME = { name: VOLUME_NAME, csi: { driver: CSI_DRIVER_NAME, readOnly: true } };
let counter = 0;
const mintId = (): string => (++counter).toString(16).padStart(32, "0");

function patchedOrFail(r: MutateResult): Extract<MutateResult, { kind: "patched" }> {
  if (r.kind !== "patched") throw new Error(`expected a patch, got ${r.kind}: ${JSON.stringify(r)}`);
  return r;
}

function deniedOrFail(r: MutateResult): Extract<MutateResult, { kind: "denied" }> {
  if (r.kind !== "denied") throw new Error(`expected a denial, got ${r.kind}`);
  return r;
}

type Pod = {
  metadata: { annotations: Record<string, string>; name?: string };
  spec: {
    volumes: Array<{ name: string; hostPath?: { path: string; type: string }; csi?: Json }>;
    containers: Array<{ name: string; volumeMounts?: Array<Record<string, unknown>> }>;
    initContainers?: Array<{ name: string; volumeMounts?: Array<Record<string, unknown>> }>;
    ephemeralContainers?: Array<Record<string, unknown>>;
  };
};

/** Admits, applies the patch, validates the schema, and checks that a second admission is a no-op. */
function inject(
  pod: Json,
  namespace = "team-a",
  cfg: MutateConfig = hostPathCfg,
): { pod: Pod; result: Extract<MutateResult, { kind: "patched" }> } {
  const result = patchedOrFail(mutatePod(pod, namespace, cfg, mintId));
  const out = applyJsonPatch(pod, result.patch) as unknown as Pod;
  validatePod(out);
  const again = mutatePod(out, namespace, cfg, mintId);
  expect(again.kind, "second admission of the injected pod").to.equal("unchanged");
  return { pod: out, result };
}

function mountsOf(
  c: { volumeMounts?: Array<Record<string, unknown>> } | undefined,
): Array<Record<string, unknown>> {
  return (c?.volumeMounts ?? []).filter((m) => m.name === VOLUME_NAME);
}

describe("mutatePod", () => {
  const cfg = hostPathCfg;
  describe("when the pod comes from a Deployment (generateName, no name, no uid)", () => {
    it("adds the hostPath volume, a read-only HostToContainer mount and signed annotations", () => {
      const { pod, result } = inject(deploymentPod());
      const vol = pod.spec.volumes.find((v) => v.name === VOLUME_NAME);
      expect(vol?.hostPath).to.deep.equal({
        path: `/var/lib/dynamic-volumes/pods/${result.id}`,
        type: "DirectoryOrCreate",
      });
      expect(pod.spec.volumes).to.have.length(2, "the kube-api-access volume is kept");
      expect(mountsOf(pod.spec.containers[0])).to.deep.equal([
        { name: VOLUME_NAME, mountPath: "/datasets", readOnly: true, mountPropagation: "HostToContainer" },
      ]);
      expect(pod.spec.containers[0]!.volumeMounts).to.have.length(2);
      const a = pod.metadata.annotations;
      expect(a[ANNOTATIONS.id])
        .to.equal(result.id)
        .and.match(/^[0-9a-f]{32}$/);
      expect(a[ANNOTATIONS.mountPath]).to.equal("/datasets");
      expect(verifyPodId(key, "team-a", a[ANNOTATIONS.id]!, a[ANNOTATIONS.idSignature]!)).to.be.true;
      expect(verifyPodId(key, "team-b", a[ANNOTATIONS.id]!, a[ANNOTATIONS.idSignature]!)).to.be.false;
    });

    it("mints a fresh id on every admission", () => {
      const a = patchedOrFail(mutatePod(deploymentPod(), "team-a", cfg, mintId));
      const b = patchedOrFail(mutatePod(deploymentPod(), "team-a", cfg, mintId));
      expect(a.id).to.not.equal(b.id);
    });

    it("warns that Pod Security Admission below privileged rejects the hostPath", () => {
      const r = patchedOrFail(mutatePod(deploymentPod(), "team-a", cfg, mintId));
      expect(r.warnings.join("\n"))
        .to.match(/hostPath volume, which Pod Security allows only at level privileged/)
        .and.match(/CSI mode avoids it/);
    });

    it("keeps its own warnings within the 120 characters Kubernetes asks of a webhook", () => {
      const r = patchedOrFail(mutatePod(deploymentPod(), "team-a", cfg, mintId));
      expect(r.warnings).to.not.be.empty;
      for (const w of r.warnings) expect(w.length, w).to.be.at.most(120);
    });
  });

  describe("in csi mode (--volume-mode csi)", () => {
    const csi = cfgFor("csi");

    it("adds the read-only CSI volume of csi.dynamic-volumes.io and the same HostToContainer mount, and no id annotations", () => {
      const { pod, result } = inject(deploymentPod(), "team-a", csi);
      expect(result.volumeMode).to.equal("csi");
      expect(result.id).to.equal(undefined);
      expect(pod.spec.volumes.find((v) => v.name === VOLUME_NAME)).to.deep.equal(CSI_VOLUME);
      expect(pod.spec.volumes.some((v) => v.hostPath !== undefined)).to.equal(false);
      expect(mountsOf(pod.spec.containers[0])).to.deep.equal([
        { name: VOLUME_NAME, mountPath: "/datasets", readOnly: true, mountPropagation: "HostToContainer" },
      ]);
      expect(pod.metadata.annotations).to.deep.equal({ [ANNOTATIONS.mountPath]: "/datasets" });
    });

    it("gives no Pod Security warning, only those about the pod's own annotations", () => {
      expect(patchedOrFail(mutatePod(deploymentPod(), "team-a", csi, mintId)).warnings).to.deep.equal([]);
      const r = patchedOrFail(
        mutatePod(deploymentPod({ [ANNOTATIONS.buckets]: "good-bucket, ../x" }), "team-a", csi, mintId),
      );
      expect(r.warnings).to.have.length(1);
      expect(r.warnings).to.not.include(PSA_WARNING);
    });

    it("needs no signing key and mints no id", () => {
      const noKey: MutateConfig = {
        root: csi.root,
        defaultMountPath: csi.defaultMountPath,
        volumeMode: "csi",
      };
      const never = (): string => {
        throw new Error("mintId called in csi mode");
      };
      const pod = sidecarPod();
      const r = patchedOrFail(mutatePod(pod, "team-a", noKey, never));
      const out = applyJsonPatch(pod, r.patch);
      validatePod(out);
      expect(mutatePod(out, "team-a", noKey, never).kind).to.equal("unchanged");
    });

    it("[error] hostPath mode without a key is a programming error, not a silent unsigned pod", () => {
      const noKey: MutateConfig = { root: csi.root, defaultMountPath: csi.defaultMountPath };
      expect(() => mutatePod(barePod(), "team-a", noKey, mintId)).to.throw(/needs cfg.signingKey/);
    });
  });

  describe("when the pod carries the other mode's injection (reinvocation while the mode changes)", () => {
    const noKeyCsi: MutateConfig = {
      root: hostPathCfg.root,
      defaultMountPath: "/datasets",
      volumeMode: "csi",
    };
    const rows: Array<[string, MutateConfig, MutateConfig, "unchanged" | RegExp]> = [
      [
        "[ok] hostPath-injected, admitted in csi mode with the key: verified",
        hostPathCfg,
        cfgFor("csi"),
        "unchanged",
      ],
      ["[ok] csi-injected, admitted in hostPath mode", cfgFor("csi"), hostPathCfg, "unchanged"],
      ["[ok] csi-injected, admitted in csi mode without a key", cfgFor("csi"), noKeyCsi, "unchanged"],
      [
        "[error] hostPath-injected, admitted in csi mode without a key: it cannot be verified",
        hostPathCfg,
        noKeyCsi,
        /hostPath volume named "dynamic-volumes", and this webhook runs in CSI mode without the signing key/,
      ],
    ];
    for (const [label, first, then, want] of rows)
      it(label, () => {
        const { pod } = inject(sidecarPod(), "team-a", first);
        const r = mutatePod(pod, "team-a", then, mintId);
        if (want === "unchanged") expect(r.kind, JSON.stringify(r)).to.equal("unchanged");
        else expect(deniedOrFail(r).message).to.match(want);
      });

    it("[attack] a hostPath injection replayed into another namespace is denied in csi mode too", () => {
      const { pod } = inject(deploymentPod(), "team-a");
      expect(deniedOrFail(mutatePod(pod, "team-b", cfgFor("csi"), mintId)).message).to.match(
        /did not sign for namespace "team-b"/,
      );
    });
  });

  describe("[attack] volumes of csi.dynamic-volumes.io that the pod brings itself", () => {
    const ours = (csi: Json, name = VOLUME_NAME): Json => ({
      name,
      csi: { driver: CSI_DRIVER_NAME, ...csi },
    });
    const rows: Array<[string, Json, RegExp]> = [
      ["named dynamic-volumes, writable", ours({ readOnly: false }), /not as this webhook writes it/],
      ["named dynamic-volumes, readOnly unset", ours({}), /not as this webhook writes it/],
      [
        "named dynamic-volumes, with volumeAttributes",
        ours({ readOnly: true, volumeAttributes: { pod: "victim" } }),
        /not as this webhook writes it/,
      ],
      [
        "named dynamic-volumes, with fsType",
        ours({ readOnly: true, fsType: "ext4" }),
        /not as this webhook writes it/,
      ],
      [
        "named dynamic-volumes, with a nodePublishSecretRef",
        ours({ readOnly: true, nodePublishSecretRef: { name: "s" } }),
        /not as this webhook writes it/,
      ],
      [
        "under another name, read-only",
        ours({ readOnly: true }, "data"),
        /volume "data" uses the CSI driver/,
      ],
      [
        "under another name, writable",
        ours({ readOnly: false }, "data"),
        /volume "data" uses the CSI driver/,
      ],
      [
        "under another name, the driver in capitals and padded",
        { name: "data", csi: { driver: " CSI.Dynamic-Volumes.IO ", readOnly: false } },
        /volume "data" uses the CSI driver/,
      ],
    ];
    for (const mode of VOLUME_MODES)
      for (const [label, volume, message] of rows) {
        it(`denies a volume ${label} (${mode} mode)`, () => {
          const pod = sidecarPod();
          ((pod.spec as Json).volumes as Json[]).push(volume);
          expect(deniedOrFail(mutatePod(pod, "team-a", cfgFor(mode), mintId)).message).to.match(message);
        });
        it(`denies a volume ${label} beside our own injection, or in a pod that opts out (${mode} mode)`, () => {
          const { pod } = inject(sidecarPod(), "team-a", cfgFor(mode));
          if (volume.name === VOLUME_NAME) {
            const i = pod.spec.volumes.findIndex((v) => v.name === VOLUME_NAME);
            pod.spec.volumes[i] = volume as Pod["spec"]["volumes"][number];
          } else pod.spec.volumes.push(volume as Pod["spec"]["volumes"][number]);
          expect(mutatePod(pod, "team-a", cfgFor(mode), mintId).kind).to.equal("denied");
          const optedOut = sidecarPod({ [ANNOTATIONS.inject]: "false" });
          ((optedOut.spec as Json).volumes as Json[]).push(volume);
          expect(mutatePod(optedOut, "team-a", cfgFor(mode), mintId).kind).to.equal("denied");
        });
      }

    it("[ok] allows a CSI volume of another driver in both modes", () => {
      for (const mode of VOLUME_MODES) {
        const pod = sidecarPod();
        ((pod.spec as Json).volumes as Json[]).push({
          name: "secrets",
          csi: {
            driver: "secrets-store.csi.k8s.io",
            readOnly: true,
            volumeAttributes: { secretProviderClass: "x" },
          },
        });
        inject(pod, "team-a", cfgFor(mode));
      }
    });

    it("denies a second, writable mount of the injected CSI volume", () => {
      const { pod } = inject(sidecarPod(), "team-a", cfgFor("csi"));
      pod.spec.containers[1]!.volumeMounts!.push({ name: VOLUME_NAME, mountPath: "/w" });
      expect(deniedOrFail(mutatePod(pod, "team-a", cfgFor("csi"), mintId)).message).to.match(
        /mounts volume "dynamic-volumes" itself/,
      );
    });
  });

  for (const mode of VOLUME_MODES) describe(`in ${mode} mode, as in the other`, () => behavesAlikeIn(mode));
});

/** What the webhook does the same way whichever volume it injects. */
function behavesAlikeIn(mode: VolumeMode): void {
  const cfg = cfgFor(mode);
  const inject_ = (pod: Json, namespace = "team-a"): ReturnType<typeof inject> => inject(pod, namespace, cfg);
  const ourVolume = (pod: Pod): Pod["spec"]["volumes"][number] =>
    pod.spec.volumes.find((v) => v.name === VOLUME_NAME)!;

  describe("when the pod has no annotations, volumes or volumeMounts", () => {
    it("creates each missing list and map instead of appending to it", () => {
      const r = patchedOrFail(mutatePod(barePod(), "team-a", cfg, mintId));
      const paths = r.patch.map((p) => p.path);
      expect(paths).to.deep.equal([
        "/metadata/annotations",
        "/spec/volumes",
        "/spec/containers/0/volumeMounts",
      ]);
      inject_(barePod());
    });

    it("creates metadata when the pod has none", () => {
      const pod = barePod();
      delete pod.metadata;
      const r = patchedOrFail(mutatePod(pod, "team-a", cfg, mintId));
      expect(r.patch[0]).to.deep.include({ op: "add", path: "/metadata" });
      expect(applyJsonPatch(pod, r.patch)).to.have.nested.property("metadata.annotations");
    });
  });

  describe("when annotations and volumes exist", () => {
    it("adds to them, escaping '/' in keys as ~1, and keeps every other entry", () => {
      const pod = sidecarPod();
      const r = patchedOrFail(mutatePod(pod, "team-a", cfg, mintId));
      expect(r.patch.map((p) => p.op)).to.satisfy((ops: string[]) => ops.every((o) => o === "add"));
      expect(r.patch.map((p) => p.path)).to.include.members([
        ...(mode === "hostPath"
          ? [
              "/metadata/annotations/dynamic-volumes~1id",
              "/metadata/annotations/dynamic-volumes~1id-signature",
            ]
          : []),
        "/metadata/annotations/dynamic-volumes~1mount-path",
        "/spec/volumes/-",
      ]);
      const { pod: out } = inject_(pod);
      expect(out.metadata.annotations["example.com/owner"]).to.equal("data/platform");
      expect(out.spec.volumes.map((v) => v.name)).to.deep.equal(["logs", VOLUME_NAME]);
    });
  });

  describe("container selection", () => {
    it("mounts into every app container and no init container by default", () => {
      const { pod } = inject_(sidecarPod());
      expect(pod.spec.containers.map((c) => mountsOf(c).length)).to.deep.equal([1, 1]);
      expect(pod.spec.initContainers!.map((c) => mountsOf(c).length)).to.deep.equal([0, 0]);
    });

    it("mounts only into the named containers, including a native sidecar when named", () => {
      const { pod, result } = inject_(sidecarPod({ [ANNOTATIONS.containers]: " metrics , log-shipper " }));
      expect(result.containers).to.deep.equal(["metrics", "log-shipper"]);
      expect(pod.spec.containers.map((c) => mountsOf(c).length)).to.deep.equal([0, 1]);
      expect(pod.spec.initContainers!.map((c) => mountsOf(c).length)).to.deep.equal([0, 1]);
    });

    it("leaves ephemeral containers alone", () => {
      const { pod } = inject_(ephemeralPod());
      expect(pod.spec.ephemeralContainers).to.deep.equal([
        { name: "debugger", image: "busybox:1.36", targetContainerName: "app" },
      ]);
      expect(mountsOf(pod.spec.containers[0])).to.have.length(1);
    });
  });

  describe("mount path", () => {
    it("uses the annotation, normalized, and writes the resolved value back", () => {
      const { pod } = inject_(deploymentPod({ [ANNOTATIONS.mountPath]: "/mnt//buckets/" }));
      expect(pod.metadata.annotations[ANNOTATIONS.mountPath]).to.equal("/mnt/buckets");
      expect(mountsOf(pod.spec.containers[0])[0]!.mountPath).to.equal("/mnt/buckets");
    });

    it("writes paths holding quotes, backslashes and Unicode as valid JSON, under a root that holds them too", () => {
      const mountPath = '/data/"q"/back\\slash/ü€😀/~0';
      const odd: MutateConfig = { ...cfg, root: '/var/lib/"dv"\\ü' };
      const cases: Array<[Json, string]> = [
        [deploymentPod({ [ANNOTATIONS.mountPath]: mountPath }), mountPath],
        [barePod(), cfg.defaultMountPath],
      ];
      for (const [pod, want] of cases) {
        const r = patchedOrFail(mutatePod(pod, "team-a", odd, mintId));
        const out = applyJsonPatch(pod, r.patch) as unknown as Pod;
        validatePod(out);
        expect(out.metadata.annotations[ANNOTATIONS.mountPath]).to.equal(want);
        expect(mountsOf(out.spec.containers[0])[0]!.mountPath).to.equal(want);
        if (mode === "hostPath")
          expect(ourVolume(out).hostPath!.path).to.equal(`/var/lib/"dv"\\ü/pods/${r.id}`);
        else expect(ourVolume(out)).to.deep.equal(CSI_VOLUME);
      }
    });

    const rows: Array<[string, string, RegExp]> = [
      ["[error] relative", "datasets", /relative/],
      ["[error] parent segment", "/data/../etc", /\.\./],
      ["[error] the root", "/", /root/],
      ["[error] empty", "", /empty/],
      ["[error] control characters", "/data\nsets", /control/],
    ];
    for (const [label, value, message] of rows)
      it(`${label}: denies "${JSON.stringify(value)}" with a message`, () => {
        const r = deniedOrFail(
          mutatePod(deploymentPod({ [ANNOTATIONS.mountPath]: value }), "team-a", cfg, mintId),
        );
        expect(r.code).to.equal(400);
        expect(r.message)
          .to.match(message)
          .and.match(/mount-path/);
      });

    it("[ok] normalizeMountPath keeps a plain path", () => {
      expect(normalizeMountPath("/datasets")).to.deep.equal({ path: "/datasets" });
    });
  });

  describe("denials a user can act on", () => {
    it("denies a mount path that collides with an existing volumeMount in a selected container", () => {
      const r = deniedOrFail(
        mutatePod(sidecarPod({ [ANNOTATIONS.mountPath]: "/var/log/app" }), "team-a", cfg, mintId),
      );
      expect(r.message).to.match(/container "app" already mounts volume "logs" at \/var\/log\/app/);
      expect(r.message).to.match(/mount-path/);
    });

    it("allows that path when the colliding container is not selected", () => {
      inject_(sidecarPod({ [ANNOTATIONS.mountPath]: "/var/log/app", [ANNOTATIONS.containers]: "metrics" }));
    });

    it("denies a containers entry that names no container, listing the real ones", () => {
      const r = deniedOrFail(
        mutatePod(sidecarPod({ [ANNOTATIONS.containers]: "app,ghost" }), "team-a", cfg, mintId),
      );
      expect(r.message)
        .to.match(/"ghost"/)
        .and.match(/app, metrics, fetch-config, log-shipper/);
    });

    it("denies a pod that declares its own volume named dynamic-volumes", () => {
      const pod = barePod() as Pod & Json;
      (pod.spec as Json).volumes = [{ name: VOLUME_NAME, emptyDir: {} }];
      expect(deniedOrFail(mutatePod(pod, "team-a", cfg, mintId)).message).to.match(/did not sign/);
    });

    const hostPaths: Array<[string, string, RegExp]> = [
      ["another pod's directory", "/var/lib/dynamic-volumes/pods/00000000000000000000000000000001", /inside/],
      ["the root itself", "/var/lib/dynamic-volumes", /inside/],
      ["the root with a trailing slash and dot segments", "/var/lib/./dynamic-volumes/pods/", /inside/],
      ["the agent's private state", "/var/lib/dynamic-volumes/agent", /inside/],
      ["an ancestor of the root", "/var/lib", /contains/],
      ["the host's /", "/", /contains/],
      ["a relative path the kubelet resolves against /", "var/lib/dynamic-volumes/pods/abc", /inside/],
    ];
    for (const [label, path, message] of hostPaths)
      it(`denies a hostPath volume on ${label}`, () => {
        const pod = barePod();
        (pod.spec as Json).volumes = [{ name: "sneaky", hostPath: { path } }];
        const r = deniedOrFail(mutatePod(pod, "team-a", cfg, mintId));
        expect(r.message).to.match(message).and.include(`"sneaky"`);
      });

    it("allows an unrelated hostPath such as /var/lib/dynamic-volumes-old", () => {
      const pod = barePod();
      (pod.spec as Json).volumes = [{ name: "old", hostPath: { path: "/var/lib/dynamic-volumes-old" } }];
      inject_(pod);
    });

    // inject() admits in hostPath mode: these pods carry a signed hostPath whatever the mode under test.
    it("denies a victim's signed injection replayed in another namespace", () => {
      const { pod: victim } = inject(deploymentPod(), "team-a");
      const copy = structuredClone(victim) as unknown as Json;
      const r = deniedOrFail(mutatePod(copy, "team-b", cfg, mintId));
      expect(r.message).to.match(/did not sign for namespace "team-b"/);
    });

    it("denies an injection whose hostPath was pointed at another pod's directory", () => {
      const { pod: mine } = inject(deploymentPod(), "team-a");
      const vol = mine.spec.volumes.find((v) => v.name === VOLUME_NAME)!;
      vol.hostPath!.path = "/var/lib/dynamic-volumes/pods/ffffffffffffffffffffffffffffffff";
      expect(mutatePod(mine, "team-a", cfg, mintId).kind).to.equal("denied");
    });

    it("denies an injection whose id annotation was rewritten, even with a valid signature for the new id", () => {
      const { pod: mine } = inject(deploymentPod(), "team-a");
      const other = "ffffffffffffffffffffffffffffffff";
      mine.metadata.annotations[ANNOTATIONS.id] = other;
      mine.metadata.annotations[ANNOTATIONS.idSignature] = signPodId(key, "team-a", other);
      expect(mutatePod(mine, "team-a", cfg, mintId).kind).to.equal("denied");
    });

    it("denies a forged hostPath even when the pod opts out", () => {
      const pod = barePod();
      (pod.metadata as Json).annotations = { [ANNOTATIONS.inject]: "false" };
      (pod.spec as Json).volumes = [{ name: "x", hostPath: { path: "/var/lib/dynamic-volumes/pods/abc" } }];
      expect(mutatePod(pod, "team-a", cfg, mintId).kind).to.equal("denied");
    });

    const malformed: Array<[string, (p: Json) => void]> = [
      ["spec missing", (p) => delete p.spec],
      ["containers not a list", (p) => ((p.spec as Json).containers = { name: "x" })],
      ["no containers", (p) => ((p.spec as Json).containers = [])],
      ["a container without a name", (p) => ((p.spec as Json).containers = [{ image: "x" }])],
      ["volumes not a list", (p) => ((p.spec as Json).volumes = "x")],
      ["annotations not a map", (p) => ((p.metadata as Json).annotations = ["x"])],
      ["volumeMounts not a list", (p) => (((p.spec as Json).containers as Json[])[0]!.volumeMounts = 7)],
      ["mount-path not a string", (p) => ((p.metadata as Json).annotations = { [ANNOTATIONS.mountPath]: 5 })],
    ];
    for (const [label, breakIt] of malformed)
      it(`[error] ${label}: denied with 400, no exception`, () => {
        const pod = barePod();
        breakIt(pod);
        const r = deniedOrFail(mutatePod(pod, "team-a", cfg, mintId));
        expect(r.code).to.equal(400);
      });
  });

  describe("opt-outs and pods that are not ours", () => {
    it('skips a pod annotated dynamic-volumes/inject: "false"', () => {
      expect(
        mutatePod(deploymentPod({ [ANNOTATIONS.inject]: "false" }), "team-a", cfg, mintId).kind,
      ).to.equal("skipped");
    });

    it('injects a pod annotated dynamic-volumes/inject: "true"', () => {
      inject_(deploymentPod({ [ANNOTATIONS.inject]: "true" }));
    });

    it("skips UPDATE, sub-resources and other resources", () => {
      const base = decodeAdmissionReview(admissionReview(deploymentPod()));
      expect(admitPod({ ...base, operation: "UPDATE" }, cfg, mintId).kind).to.equal("skipped");
      expect(admitPod({ ...base, subResource: "status" }, cfg, mintId).kind).to.equal("skipped");
      expect(
        admitPod(
          { ...base, resource: { group: "apps", version: "v1", resource: "deployments" } },
          cfg,
          mintId,
        ).kind,
      ).to.equal("skipped");
    });

    if (mode === "hostPath")
      it("signs for request.namespace, not for what the object claims", () => {
        const pod = deploymentPod();
        (pod.metadata as Json).namespace = "team-b";
        const req = decodeAdmissionReview(admissionReview(pod, { namespace: "team-a" }));
        const r = patchedOrFail(admitPod(req, cfg, mintId));
        const out = applyJsonPatch(pod, r.patch) as unknown as Pod;
        const sig = out.metadata.annotations[ANNOTATIONS.idSignature]!;
        expect(verifyPodId(key, "team-a", r.id!, sig)).to.be.true;
      });
  });

  describe("the buckets annotation at admission", () => {
    it("warns about each bad entry and never denies the pod for it", () => {
      const r = patchedOrFail(
        mutatePod(
          deploymentPod({ [ANNOTATIONS.buckets]: "good-bucket, ../x:rw, data=b/p:xx" }),
          "team-a",
          cfg,
          mintId,
        ),
      );
      const w = r.warnings.filter((s) => s.includes(ANNOTATIONS.buckets));
      expect(w).to.have.length(2);
      expect(w[0]).to.match(/entry 2/);
      expect(w[1]).to.match(/entry 3.*access "xx"/);
    });

    it("warns about an unknown mounter", () => {
      const r = patchedOrFail(
        mutatePod(deploymentPod({ [ANNOTATIONS.mounter]: "goofys" }), "team-a", cfg, mintId),
      );
      expect(r.warnings.join()).to.match(/goofys.*geesefs, s3fs, rclone/);
    });
  });
}

describe("isNormalPath", () => {
  // eslint-disable-next-line no-control-regex
  const CONTROL = /[\u0000-\u001f\u007f]/;
  /** Independent definition: absolute, printable, not the root, and unchanged by posix.normalize. */
  const oracle = (p: string): boolean =>
    p.startsWith("/") && p !== "/" && !p.endsWith("/") && !CONTROL.test(p) && posix.normalize(p) === p;

  it("agrees with posix.normalize on every string of up to 6 characters over a hostile alphabet", () => {
    const alphabet = ["/", ".", "a", "\u0000", "\u001f", "\u007f", " ", "é", "\ud83d"];
    let checked = 0;
    let normal = 0;
    const disagreements: string[] = [];
    const walk = (prefix: string, depth: number): void => {
      const got = isNormalPath(prefix);
      if (got !== oracle(prefix)) disagreements.push(JSON.stringify(prefix));
      if (got) normal++;
      checked++;
      if (depth > 0) for (const c of alphabet) walk(prefix + c, depth - 1);
    };
    walk("", 6);
    expect(disagreements.slice(0, 10)).to.deep.equal([]);
    expect(checked).to.be.greaterThan(500_000);
    expect(normal).to.be.greaterThan(1000);
  });

  it("accepts plain absolute paths and rejects the usual mistakes", () => {
    for (const p of ["/datasets", "/mnt/buckets", "/a/.b/..c/...", "/ü/😀"])
      expect(isNormalPath(p), p).to.equal(true);
    for (const p of ["", "/", "datasets", "/a/", "/a//b", "/a/./b", "/a/../b", "/..", "/.", "/a\nb"])
      expect(isNormalPath(p), JSON.stringify(p)).to.equal(false);
  });
});

describe("escapePointer", () => {
  it("escapes ~ before /", () => {
    expect(escapePointer("a/b~c")).to.equal("a~1b~0c");
  });
});
