import { expect } from "chai";
import {
  checkPublish,
  checkUnpublish,
  GRPC_CODE,
  podUidOfTarget,
  type NodePublishVolumeMessage,
} from "../../../../../agent/mounter/csi/requests.js";

const ROOT = "/var/lib/dynamic-volumes";
const UID = "3f2b8c1e-9d4a-4e6f-8a7b-0c1d2e3f4a5b";
const TARGET = `/var/lib/kubelet/pods/${UID}/volumes/kubernetes.io~csi/dynamic-volumes/mount`;

/** What the kubelet sends for the injected inline volume (proto-loader's decoding, defaults on). */
function kubeletRequest(): NodePublishVolumeMessage {
  return {
    volume_id: "csi-0b1c2d3e4f",
    target_path: TARGET,
    staging_target_path: "",
    volume_capability: {
      access_type: "mount",
      mount: { fs_type: "", mount_flags: [] },
      block: null,
      access_mode: { mode: "SINGLE_NODE_WRITER" },
    },
    readonly: true,
    secrets: {},
    volume_context: {
      "csi.storage.k8s.io/pod.name": "web-0",
      "csi.storage.k8s.io/pod.namespace": "team-a",
      "csi.storage.k8s.io/pod.uid": UID,
      "csi.storage.k8s.io/serviceAccount.name": "default",
      "csi.storage.k8s.io/ephemeral": "true",
    },
  };
}

function withContext(over: Record<string, string>): NodePublishVolumeMessage {
  const r = kubeletRequest();
  return { ...r, volume_context: { ...r.volume_context, ...over } };
}

describe("checkPublish", () => {
  it("[ok] the kubelet's request for an inline volume gives the pod", () => {
    expect(checkPublish(kubeletRequest(), ROOT)).to.deep.equal({
      ok: {
        volumeId: "csi-0b1c2d3e4f",
        targetPath: TARGET,
        podUid: UID,
        podNamespace: "team-a",
        podName: "web-0",
        serviceAccount: "default",
      },
    });
  });

  it("[ok] a kubelet with another root directory, and any access mode", () => {
    const r = kubeletRequest();
    r.target_path = `/data/kubelet/pods/${UID}/volumes/kubernetes.io~csi/v/mount`;
    r.volume_capability!.access_mode = { mode: "SINGLE_NODE_READER_ONLY" };
    expect(checkPublish(r, ROOT)).to.have.property("ok");
  });

  const rows: Array<[string, () => NodePublishVolumeMessage, RegExp]> = [
    ["[error] no volume_id", () => ({ ...kubeletRequest(), volume_id: "" }), /volume_id is missing/],
    [
      "[error] a volume_id over 128 characters",
      () => ({ ...kubeletRequest(), volume_id: "v".repeat(129) }),
      /longer/,
    ],
    ["[error] no target_path", () => ({ ...kubeletRequest(), target_path: "" }), /target_path is missing/],
    [
      "[error] a relative target_path",
      () => ({ ...kubeletRequest(), target_path: TARGET.slice(1) }),
      /absolute, clean/,
    ],
    [
      "[error] a target_path with ..",
      () => ({ ...kubeletRequest(), target_path: `/var/lib/kubelet/x/..${TARGET}` }),
      /absolute, clean/,
    ],
    [
      "[error] a target_path ending in /",
      () => ({ ...kubeletRequest(), target_path: `${TARGET}/` }),
      /absolute, clean/,
    ],
    [
      "[error] a target_path inside the root",
      () => ({ ...kubeletRequest(), target_path: `${ROOT}/pods/${UID}/volumes/kubernetes.io~csi/v/mount` }),
      /inside the driver's root/,
    ],
    [
      "[error] a target_path not of the kubelet's form",
      () => ({ ...kubeletRequest(), target_path: "/mnt/somewhere" }),
      /not a kubelet CSI target/,
    ],
    [
      "[error] no volume_capability",
      () => ({ ...kubeletRequest(), volume_capability: null }),
      /volume_capability is missing/,
    ],
    [
      "[error] a block volume",
      () => ({
        ...kubeletRequest(),
        volume_capability: {
          access_type: "block",
          block: {},
          mount: null,
          access_mode: { mode: "SINGLE_NODE_WRITER" },
        },
      }),
      /block volumes/,
    ],
    [
      "[error] mount flags",
      () => ({
        ...kubeletRequest(),
        volume_capability: {
          access_type: "mount",
          mount: { fs_type: "", mount_flags: ["exec"] },
          access_mode: { mode: 1 },
        },
      }),
      /mount_flags/,
    ],
    [
      "[error] no access mode",
      () => ({
        ...kubeletRequest(),
        volume_capability: { access_type: "mount", mount: {}, access_mode: null },
      }),
      /access_mode is missing/,
    ],
    [
      "[error] access mode UNKNOWN",
      () => ({
        ...kubeletRequest(),
        volume_capability: { access_type: "mount", mount: {}, access_mode: { mode: "UNKNOWN" } },
      }),
      /UNKNOWN/,
    ],
    ["[error] readonly false", () => ({ ...kubeletRequest(), readonly: false }), /readonly must be true/],
    [
      "[error] a persistent volume (not ephemeral)",
      () => withContext({ "csi.storage.k8s.io/ephemeral": "false" }),
      /only ephemeral inline volumes/,
    ],
    [
      "[error] no pod info (podInfoOnMount off)",
      () => ({ ...kubeletRequest(), volume_context: { "csi.storage.k8s.io/ephemeral": "true" } }),
      /podInfoOnMount: true/,
    ],
    [
      "[error] a pod uid that is not a UUID",
      () => withContext({ "csi.storage.k8s.io/pod.uid": "../../etc" }),
      /is not a pod uid/,
    ],
    [
      "[error] a pod uid in upper case",
      () => withContext({ "csi.storage.k8s.io/pod.uid": UID.toUpperCase() }),
      /is not a pod uid/,
    ],
    [
      "[error] a target of another pod",
      () => withContext({ "csi.storage.k8s.io/pod.uid": "00000000-0000-4000-8000-000000000000" }),
      /belongs to pod/,
    ],
    [
      "[error] a bad namespace",
      () => withContext({ "csi.storage.k8s.io/pod.namespace": "Team_A" }),
      /not a namespace name/,
    ],
    [
      "[error] a bad pod name",
      () => withContext({ "csi.storage.k8s.io/pod.name": "web 0" }),
      /not a pod name/,
    ],
    [
      "[error] a bad service account",
      () => withContext({ "csi.storage.k8s.io/serviceAccount.name": "-x" }),
      /not a service account/,
    ],
  ];
  for (const [what, req, message] of rows)
    it(`${what}: INVALID_ARGUMENT`, () => {
      const r = checkPublish(req(), ROOT);
      expect(r).to.have.property("error");
      if ("error" in r) {
        expect(r.error.code).to.equal(GRPC_CODE.INVALID_ARGUMENT);
        expect(r.error.message).to.match(message);
      }
    });

  it("reports every problem at once", () => {
    const r = checkPublish({ volume_context: {} }, ROOT);
    expect("error" in r && r.error.message.split("; ").length).to.be.greaterThan(5);
  });

  it("never puts secrets in a message", () => {
    const r = checkPublish({ ...kubeletRequest(), readonly: false, secrets: { key: "s3cr3t" } }, ROOT);
    expect(JSON.stringify(r)).to.not.include("s3cr3t");
  });
});

describe("checkUnpublish", () => {
  it("[ok] the kubelet's request", () => {
    expect(checkUnpublish({ volume_id: "csi-1", target_path: TARGET }, ROOT)).to.deep.equal({
      ok: { volumeId: "csi-1", targetPath: TARGET },
    });
  });
  const rows: Array<[string, Record<string, string>]> = [
    ["[error] no volume_id", { volume_id: "", target_path: TARGET }],
    ["[error] no target_path", { volume_id: "csi-1", target_path: "" }],
    ["[error] a target that is not the kubelet's", { volume_id: "csi-1", target_path: "/etc" }],
  ];
  for (const [what, req] of rows)
    it(`${what}: INVALID_ARGUMENT`, () => {
      const r = checkUnpublish(req, ROOT);
      expect("error" in r && r.error.code).to.equal(GRPC_CODE.INVALID_ARGUMENT);
    });
});

describe("podUidOfTarget", () => {
  it("finds the pod uid in the kubelet's target, and nothing in anything else", () => {
    expect(podUidOfTarget(TARGET)).to.equal(UID);
    expect(podUidOfTarget(`/var/lib/kubelet/pods/${UID}/volumes/kubernetes.io~csi/v/mount/x`)).to.equal(
      undefined,
    );
    expect(podUidOfTarget(`/var/lib/kubelet/pods/abc/volumes/kubernetes.io~csi/v/mount`)).to.equal(undefined);
  });
});
