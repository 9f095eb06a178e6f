import { expect } from "chai";
import { parseMountOptions, readPod, type PodObject } from "../../../../agent/reconcile/pod.js";
import { ANNOTATIONS, CSI_DRIVER_NAME, VOLUME_NAME } from "../../../../shared/names.js";
import { signPodId } from "../../../../shared/signing.js";

const key = Buffer.from("pod-test-signing-key-0123456789");
const cfg = { root: "/var/lib/dynamic-volumes", signingKey: key, defaultMounter: "s3fs" as const };
const ID = "0123456789abcdef0123456789abcdef";

function pod(
  over: {
    ns?: string;
    id?: string;
    sig?: string;
    hostPath?: string;
    annotations?: Record<string, string>;
  } = {},
): PodObject {
  const ns = over.ns ?? "team-a";
  const id = over.id ?? ID;
  return {
    metadata: {
      name: "trainer-x",
      namespace: ns,
      uid: "u1",
      creationTimestamp: "2026-11-26T00:00:00Z",
      annotations: {
        [ANNOTATIONS.id]: id,
        [ANNOTATIONS.idSignature]: over.sig ?? signPodId(key, ns, id),
        ...over.annotations,
      },
    },
    spec: {
      nodeName: "n1",
      volumes: [
        { name: VOLUME_NAME, hostPath: { path: over.hostPath ?? `/var/lib/dynamic-volumes/pods/${ID}` } },
      ],
    },
  };
}

describe("readPod", () => {
  it("ignores pods without the dynamic-volumes volume", () => {
    expect(readPod({ metadata: { name: "x", namespace: "y" }, spec: { volumes: [] } }, cfg)).to.equal(
      undefined,
    );
  });

  it("takes the directory from the hostPath and accepts a verified claim", () => {
    const v = readPod(pod({ annotations: { [ANNOTATIONS.buckets]: "a=bucket-a:ro" } }), cfg)!;
    expect(v).to.include({
      key: "team-a/trainer-x",
      id: ID,
      dir: `/var/lib/dynamic-volumes/pods/${ID}`,
      refusal: undefined,
    });
    expect(v.buckets.entries).to.have.length(1);
    expect(v.createdAt).to.equal(Date.parse("2026-11-26T00:00:00Z"));
  });

  it("refuses a claim signed for another namespace", () => {
    const v = readPod(pod({ sig: signPodId(key, "team-b", ID) }), cfg)!;
    expect(v.refusal).to.match(/does not verify for namespace "team-a"/);
  });

  it("refuses an id annotation that disagrees with the hostPath, even when signed", () => {
    const other = "ffffffffffffffffffffffffffffffff";
    const v = readPod(pod({ id: other }), cfg)!;
    expect(v.id).to.equal(ID);
    expect(v.refusal).to.match(/does not verify/);
  });

  it("refuses a hostPath outside the pods directory or not naming an id", () => {
    expect(readPod(pod({ hostPath: "/etc" }), cfg)!.refusal).to.match(/not a hostPath under/);
    expect(readPod(pod({ hostPath: "/var/lib/dynamic-volumes/pods/../agent" }), cfg)!.refusal).to.match(
      /does not name/,
    );
  });

  it("reports an unknown mounter and bad options as a pod-level problem", () => {
    expect(readPod(pod({ annotations: { [ANNOTATIONS.mounter]: "goofys" } }), cfg)!.problem).to.match(
      /goofys/,
    );
    expect(
      readPod(pod({ annotations: { "dynamic-volumes/mount-options": "-o allow_root" } }), cfg)!.problem,
    ).to.match(/not an option name/);
    expect(readPod(pod({ annotations: { [ANNOTATIONS.mounter]: "rclone" } }), cfg)!.mounter).to.equal(
      "rclone",
    );
  });

  it("marks pods whose containers have stopped for good as finished", () => {
    expect(readPod({ ...pod(), status: { phase: "Succeeded" } }, cfg)!.finished).to.equal(true);
    expect(readPod({ ...pod(), status: { phase: "Running" } }, cfg)!.finished).to.equal(false);
  });
});

describe("parseMountOptions", () => {
  it("[ok] parses key=value and switches", () => {
    expect(parseMountOptions("uid=1000, gid=1000 ,ro")).to.deep.equal({
      options: { uid: "1000", gid: "1000", ro: true },
    });
  });
  it("[error] refuses option names that could be flags", () => {
    expect(parseMountOptions("--allow-root")).to.have.property("error");
  });
});

describe("readPod, pod directories", () => {
  describe("in CSI mode (the volume is a csi volume of our driver)", () => {
    const UID = "3f2b8c1e-9d4a-4e6f-8a7b-0c1d2e3f4a5b";
    function csiPod(driver: string = CSI_DRIVER_NAME, uid: string | null = UID): PodObject {
      return {
        metadata: {
          name: "web-0",
          namespace: "team-a",
          ...(uid !== null ? { uid } : {}),
          annotations: { [ANNOTATIONS.buckets]: "a=bucket-a" },
        },
        spec: { volumes: [{ name: VOLUME_NAME, csi: { driver } }] },
      };
    }

    it("takes the directory from metadata.uid, with no id or signature needed", () => {
      const v = readPod(csiPod(), cfg)!;
      expect(v).to.include({ id: UID, dir: `/var/lib/dynamic-volumes/pods/${UID}`, refusal: undefined });
      expect(v.buckets.entries).to.have.length(1);
    });

    it("ignores id annotations: the kubelet, not the pod, names the directory", () => {
      const p = csiPod();
      p.metadata!.annotations = { ...p.metadata!.annotations, [ANNOTATIONS.id]: ID };
      expect(readPod(p, cfg)!.id).to.equal(UID);
    });

    it("refuses another driver's CSI volume", () => {
      const v = readPod(csiPod("hostpath.csi.k8s.io"), cfg)!;
      expect(v.id).to.equal(undefined);
      expect(v.refusal).to.match(/hostpath\.csi\.k8s\.io/);
    });

    it("refuses a pod without a uid", () => {
      const v = readPod(csiPod(CSI_DRIVER_NAME, null), cfg)!;
      expect(v.id).to.equal(undefined);
      expect(v.refusal).to.match(/no uid/);
    });
  });

  it("refuses a hostPath naming a UUID directory, even with a signature (only the kubelet publishes those)", () => {
    const uid = "3f2b8c1e-9d4a-4e6f-8a7b-0c1d2e3f4a5b";
    const p = pod({ id: uid, hostPath: `/var/lib/dynamic-volumes/pods/${uid}` });
    const v = readPod(p, cfg)!;
    expect(v.id).to.equal(undefined);
    expect(v.refusal).to.match(/does not name a pod directory/);
  });
});
