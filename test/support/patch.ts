/** Applies a JSON patch with an independent RFC 6902 implementation and validates the pod schema. */
import { applyPatch } from "rfc6902";
import { Pod } from "kubernetes-models/v1";
import type { JsonPatchOp } from "../../webhook/review.js";

export function applyJsonPatch<T>(doc: T, patch: readonly JsonPatchOp[]): T {
  const copy = structuredClone(doc) as object;
  const errors = applyPatch(copy, patch as Parameters<typeof applyPatch>[1]);
  const failed = errors
    .map((e, i) => (e ? `${JSON.stringify(patch[i])}: ${e.message}` : null))
    .filter(Boolean);
  if (failed.length > 0) throw new Error(`patch did not apply: ${failed.join("; ")}`);
  return copy as T;
}

/** Throws when `pod` does not validate against the published Kubernetes Pod schema. */
export function validatePod(pod: unknown): void {
  new Pod(pod as ConstructorParameters<typeof Pod>[0]).validate();
}
