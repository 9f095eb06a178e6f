import { expect } from "chai";
import { planPod, specKey, type ActualMount, type MountSpec } from "../../../../agent/reconcile/plan.js";

const spec = (name: string, over: Partial<MountSpec> = {}): MountSpec => ({
  name,
  bucket: `bucket-${name}`,
  prefix: "",
  readOnly: false,
  mounter: "s3fs",
  secretName: "dynamic-volumes-credentials",
  options: {},
  ...over,
});
const actual = (
  name: string,
  recorded: MountSpec | undefined,
  health: "ok" | "stale" = "ok",
): ActualMount => ({
  name,
  recorded,
  health,
});

describe("planPod", () => {
  it("mounts every desired entry when nothing is mounted, in annotation order", () => {
    expect(planPod([spec("b"), spec("a")], [])).to.deep.equal([
      { kind: "mount", name: "b", spec: spec("b") },
      { kind: "mount", name: "a", spec: spec("a") },
    ]);
  });

  it("does nothing when actual equals desired (idempotent)", () => {
    expect(planPod([spec("a")], [actual("a", spec("a"))])).to.deep.equal([]);
  });

  it("unmounts what is no longer desired", () => {
    expect(planPod([], [actual("a", spec("a"))])).to.deep.equal([
      { kind: "unmount", name: "a", reason: "removed" },
    ]);
  });

  it("remounts when the spec changed, unmounting first", () => {
    const next = spec("a", { readOnly: true });
    expect(planPod([next], [actual("a", spec("a"))])).to.deep.equal([
      { kind: "unmount", name: "a", reason: "changed" },
      { kind: "mount", name: "a", spec: next },
    ]);
  });

  it("remounts a stale mount", () => {
    expect(planPod([spec("a")], [actual("a", spec("a"), "stale")]).map((a) => a.kind)).to.deep.equal([
      "unmount",
      "mount",
    ]);
  });

  it("remounts a mount it has no record of, and unmounts nested mounts it did not make", () => {
    const plan = planPod([spec("a")], [actual("a/inner", undefined), actual("a", undefined)]);
    expect(plan).to.deep.equal([
      { kind: "unmount", name: "a/inner", reason: "unknown" },
      { kind: "unmount", name: "a", reason: "unknown" },
      { kind: "mount", name: "a", spec: spec("a") },
    ]);
  });

  it("puts every unmount before any mount", () => {
    const plan = planPod([spec("new")], [actual("old", spec("old"))]);
    expect(plan.map((a) => a.kind)).to.deep.equal(["unmount", "mount"]);
  });
});

describe("specKey", () => {
  it("ignores option order and sees every field", () => {
    expect(specKey(spec("a", { options: { x: "1", y: true } }))).to.equal(
      specKey(spec("a", { options: { y: true, x: "1" } })),
    );
    for (const over of [
      { bucket: "other" },
      { prefix: "p" },
      { readOnly: true },
      { mounter: "rclone" as const },
      { secretName: "s" },
      { options: { x: "2" } },
    ])
      expect(specKey(spec("a", over))).to.not.equal(specKey(spec("a")));
  });
});
