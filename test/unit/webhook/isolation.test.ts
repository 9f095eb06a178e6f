import { expect } from "chai";
import { ANNOTATIONS, VOLUME_NAME } from "../../../shared/names.js";
import { KERNEL_ALIASES, kernelAliasOf } from "../../../webhook/isolation.js";
import {
  VOLUME_MODES,
  admitPod,
  mutatePod,
  type MutateConfig,
  type MutateResult,
} from "../../../webhook/mutate.js";
import { decodeAdmissionReview } from "../../../webhook/review.js";
import { admissionReview, barePod, deploymentPod, sidecarPod, type Json } from "../../fixtures/pods.js";
import { applyJsonPatch, validatePod } from "../../support/patch.js";

const key = Buffer.from("isolation-test-signing-key-0123456789");
/** Every test here runs in both volume modes: the checks do not depend on the volume injected. */
let cfg: MutateConfig = {
  root: "/var/lib/dynamic-volumes",
  defaultMountPath: "/datasets",
  signingKey: key,
};
let counter = 0;
const mintId = (): string => (++counter).toString(16).padStart(32, "0");

type Container = { name: string; image?: string; volumeMounts?: Json[] };
type Pod = {
  metadata: { annotations: Record<string, string> };
  spec: {
    volumes: Json[];
    containers: Container[];
    initContainers?: Container[];
    ephemeralContainers?: Container[];
  };
};

/** The mount the webhook writes at the default mount path. */
const OURS = {
  name: VOLUME_NAME,
  mountPath: "/datasets",
  readOnly: true,
  mountPropagation: "HostToContainer",
};

function deniedMessage(r: MutateResult): string {
  if (r.kind !== "denied") throw new Error(`expected a denial, got ${r.kind}: ${JSON.stringify(r)}`);
  expect(r.message).to.match(/^dynamic-volumes: /);
  return r.message;
}

/** A pod as the API server holds it after our injection: what a reinvocation sees. */
function injected(pod: Json = sidecarPod(), namespace = "team-a"): Pod {
  const r = mutatePod(pod, namespace, cfg, mintId);
  if (r.kind !== "patched") throw new Error(`expected a patch, got ${r.kind}: ${JSON.stringify(r)}`);
  const out = applyJsonPatch(pod, r.patch) as unknown as Pod;
  validatePod(out);
  expect(mutatePod(out, namespace, cfg, mintId).kind, "reinvocation of the untouched pod").to.equal(
    "unchanged",
  );
  return out;
}

function ephemeralUpdate(pod: unknown, overrides: Json = {}): ReturnType<typeof decodeAdmissionReview> {
  return decodeAdmissionReview(
    admissionReview(pod, { operation: "UPDATE", subResource: "ephemeralcontainers", ...overrides }),
  );
}

const debugger_ = (volumeMounts: Json[]): Container => ({
  name: "debugger",
  image: "busybox:1.36",
  volumeMounts,
});

for (const mode of VOLUME_MODES)
  describe(`tenant isolation (${mode} mode)`, () => {
    before(() => {
      cfg = { ...cfg, volumeMode: mode };
    });
    describe("volumeMounts of dynamic-volumes that the pod brings itself (first admission)", () => {
      it("[attack] denies a writable mount in a second container, which the injected volume would back with the pod's host directory", () => {
        const pod = sidecarPod();
        const metrics = ((pod.spec as Json).containers as Container[])[1]!;
        metrics.volumeMounts = [{ name: VOLUME_NAME, mountPath: "/host-dir" }];
        const message = deniedMessage(mutatePod(pod, "team-a", cfg, mintId));
        expect(message)
          .to.include(`container "metrics" (spec.containers[1]) mounts volume "${VOLUME_NAME}" itself`)
          .and.include("Remove that volumeMount")
          .and.include(ANNOTATIONS.containers);
      });

      const variants: Array<[string, Json]> = [
        ["writable", { name: VOLUME_NAME, mountPath: "/w" }],
        ["read-only", { name: VOLUME_NAME, mountPath: "/r", readOnly: true }],
        ["the injected shape itself", OURS],
        ["read-only HostToContainer with a subPath", { ...OURS, mountPath: "/s", subPath: "x" }],
        [
          "read-only HostToContainer with a subPathExpr",
          { ...OURS, mountPath: "/s", subPathExpr: "$(POD_NAME)" },
        ],
        ["Bidirectional", { name: VOLUME_NAME, mountPath: "/b", mountPropagation: "Bidirectional" }],
      ];
      for (const field of ["containers", "initContainers", "ephemeralContainers"] as const)
        for (const [label, mount] of variants)
          it(`denies a ${label} mount in spec.${field}`, () => {
            const pod = barePod();
            const spec = pod.spec as Json;
            spec.initContainers = [{ name: "init", image: "busybox:1.36" }];
            spec.ephemeralContainers = [{ name: "debugger", image: "busybox:1.36" }];
            (spec[field] as Container[])[0]!.volumeMounts = [{ name: "other", mountPath: "/o" }, mount];
            expect(deniedMessage(mutatePod(pod, "team-a", cfg, mintId))).to.include(`(spec.${field}[0])`);
          });

      it("[attack] denies it even when the pod opts out", () => {
        const pod = barePod();
        (pod.metadata as Json).annotations = { [ANNOTATIONS.inject]: "false" };
        ((pod.spec as Json).containers as Container[])[0]!.volumeMounts = [
          { name: VOLUME_NAME, mountPath: "/w" },
        ];
        deniedMessage(mutatePod(pod, "team-a", cfg, mintId));
      });

      it("leaves mounts of other volumes alone, whatever their shape", () => {
        const pod = sidecarPod();
        ((pod.spec as Json).containers as Container[])[1]!.volumeMounts = [
          { name: "logs", mountPath: "/logs", subPath: "metrics" },
        ];
        expect(mutatePod(pod, "team-a", cfg, mintId).kind).to.equal("patched");
      });
    });

    describe("when the pod already carries our verified injection (reinvocation)", () => {
      it("leaves the injected mounts as they are, at a custom mount path and in a named native sidecar", () => {
        injected(
          sidecarPod({ [ANNOTATIONS.mountPath]: "/mnt//data/", [ANNOTATIONS.containers]: "app,log-shipper" }),
        );
      });

      const tampered: Array<[string, (m: Json) => void]> = [
        ["made writable", (m) => (m.readOnly = false)],
        ["without readOnly", (m) => delete m.readOnly],
        ["made Bidirectional", (m) => (m.mountPropagation = "Bidirectional")],
        ["without propagation", (m) => delete m.mountPropagation],
        ["given a subPath", (m) => (m.subPath = "x")],
        ["given a subPathExpr", (m) => (m.subPathExpr = "$(POD_NAME)")],
        ["given recursiveReadOnly", (m) => (m.recursiveReadOnly = "Disabled")],
        ["moved to another path", (m) => (m.mountPath = "/elsewhere")],
      ];
      for (const [label, change] of tampered)
        it(`[attack] denies the injected mount ${label}`, () => {
          const pod = injected();
          const mount = pod.spec.containers[0]!.volumeMounts!.find((m) => m.name === VOLUME_NAME)!;
          change(mount);
          expect(deniedMessage(mutatePod(pod, "team-a", cfg, mintId))).to.include(
            `container "app" (spec.containers[0]) mounts volume "${VOLUME_NAME}" itself`,
          );
        });

      it("[attack] denies a writable mount added beside the injected one, in an init container", () => {
        const pod = injected();
        pod.spec.initContainers![0]!.volumeMounts = [{ name: VOLUME_NAME, mountPath: "/plant" }];
        expect(deniedMessage(mutatePod(pod, "team-a", cfg, mintId))).to.include("(spec.initContainers[0])");
      });

      it("[attack] denies even the injected shape in an ephemeral container", () => {
        const pod = injected();
        pod.spec.ephemeralContainers = [debugger_([OURS])];
        expect(deniedMessage(mutatePod(pod, "team-a", cfg, mintId))).to.include(
          `ephemeral container "debugger" (spec.ephemeralContainers[0]) mounts volume "${VOLUME_NAME}"`,
        );
      });

      it("[attack] denies a writable mount beside a verified injection even when the pod opts out", () => {
        const pod = injected();
        pod.metadata.annotations[ANNOTATIONS.inject] = "false";
        pod.spec.containers[1]!.volumeMounts!.push({ name: VOLUME_NAME, mountPath: "/w" });
        deniedMessage(mutatePod(pod, "team-a", cfg, mintId));
      });

      it("denies the injected mount when the resolved mount-path annotation is gone", () => {
        const pod = injected();
        delete pod.metadata.annotations[ANNOTATIONS.mountPath];
        deniedMessage(mutatePod(pod, "team-a", cfg, mintId));
      });
    });

    describe("admitPod for a pods/ephemeralcontainers UPDATE (kubectl debug)", () => {
      const mounts: Array<[string, Json]> = [
        ["writable", { name: VOLUME_NAME, mountPath: "/host" }],
        ["read-only HostToContainer, as the webhook's own", OURS],
        ["with a subPath", { ...OURS, subPath: "agent" }],
      ];
      for (const [label, mount] of mounts)
        it(`[attack] denies an ephemeral container that mounts ${VOLUME_NAME} (${label})`, () => {
          const pod = injected();
          pod.spec.ephemeralContainers = [debugger_([mount])];
          const r = admitPod(ephemeralUpdate(pod), cfg, mintId);
          expect(deniedMessage(r))
            .to.include(`ephemeral container "debugger" (spec.ephemeralContainers[0])`)
            .and.include("Remove that volumeMount");
          expect((r as { code: number }).code).to.equal(403);
        });

      it("admits, unchanged, an ephemeral container that mounts other volumes or none", () => {
        const pod = injected();
        pod.spec.ephemeralContainers = [
          debugger_([{ name: "logs", mountPath: "/var/log/app" }]),
          { name: "shell", image: "busybox:1.36" },
        ];
        const r = admitPod(ephemeralUpdate(pod), cfg, mintId);
        expect(r.kind).to.equal("skipped");
        expect(r).to.not.have.property("patch");
      });

      it("[error] a pod whose ephemeralContainers is not a list: denied with 400, no exception", () => {
        const pod = injected() as unknown as Json;
        (pod.spec as Json).ephemeralContainers = { name: "x" };
        const r = admitPod(ephemeralUpdate(pod), cfg, mintId);
        deniedMessage(r);
        expect((r as { code: number }).code).to.equal(400);
      });

      it("still skips other sub-resources and plain pod UPDATEs", () => {
        const pod = injected();
        pod.spec.ephemeralContainers = [debugger_([OURS])];
        expect(admitPod(ephemeralUpdate(pod, { subResource: "status" }), cfg, mintId).kind).to.equal(
          "skipped",
        );
        const update = decodeAdmissionReview(admissionReview(pod, { operation: "UPDATE" }));
        expect(admitPod(update, cfg, mintId).kind).to.equal("skipped");
      });
    });

    describe("hostPaths through kernel aliases of the host's tree", () => {
      const victim = "/var/lib/dynamic-volumes/pods/0123456789abcdef0123456789abcdef";
      const aliases: Array<[string, string]> = [
        [`/proc/self/root${victim}`, "/proc"],
        ["/proc/1/root/var/lib/dynamic-volumes", "/proc"],
        ["/proc/1/cwd", "/proc"],
        ["/proc/sys/kernel", "/proc"],
        ["/proc", "/proc"],
        ["/proc/", "/proc"],
        ["//proc/self/root/", "/proc"],
        ["/./proc/./self/root", "/proc"],
        [`proc/self/root${victim}`, "/proc"],
        ["/dev/fd/3/pods", "/dev/fd"],
        ["/dev/fd", "/dev/fd"],
        ["/dev//fd/", "/dev/fd"],
        ["/dev/stdin", "/dev/stdin"],
        ["/dev/stdout/x", "/dev/stdout"],
        ["/dev/stderr/", "/dev/stderr"],
      ];
      for (const [path, alias] of aliases) {
        it(`[attack] denies hostPath ${JSON.stringify(path)}, naming ${alias} as the reason`, () => {
          const pod = barePod();
          (pod.spec as Json).volumes = [{ name: "peek", hostPath: { path, type: "Directory" } }];
          expect(deniedMessage(mutatePod(pod, "team-a", cfg, mintId)))
            .to.include(`volume "peek" mounts hostPath ${JSON.stringify(path)}, under ${alias}`)
            .and.include("by its real path");
          expect(kernelAliasOf(path)).to.equal(alias);
        });

        it(`[attack] denies hostPath ${JSON.stringify(path)} in a pod that opts out, or beside a verified injection`, () => {
          const optedOut = deploymentPod({ [ANNOTATIONS.inject]: "false" });
          ((optedOut.spec as Json).volumes as Json[]).push({ name: "peek", hostPath: { path } });
          deniedMessage(mutatePod(optedOut, "team-a", cfg, mintId));
          const reinvoked = injected();
          reinvoked.spec.volumes.push({ name: "peek", hostPath: { path } });
          deniedMessage(mutatePod(reinvoked, "team-a", cfg, mintId));
        });
      }

      for (const path of [
        "/procfs",
        "/proc-data",
        "/dev/fdx",
        "/dev/fuse",
        "/var/proc",
        "/data/proc/self/root",
      ])
        it(`allows hostPath ${path}, which only looks like an alias`, () => {
          const pod = barePod();
          (pod.spec as Json).volumes = [{ name: "near", hostPath: { path } }];
          expect(mutatePod(pod, "team-a", cfg, mintId).kind).to.equal("patched");
          expect(kernelAliasOf(path)).to.equal(undefined);
        });

      it("lists /proc, /dev/fd and the /dev/std* links into /proc/self/fd", () => {
        expect(KERNEL_ALIASES).to.have.members([
          "/proc",
          "/dev/fd",
          "/dev/stdin",
          "/dev/stdout",
          "/dev/stderr",
        ]);
      });
    });
  });
