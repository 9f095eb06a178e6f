/**
 * Where the agent learns about pods and reports back. Two implementations: the Kubernetes API
 * (`sources/kubernetes.ts`) and a directory of pod files for local mode (`sources/local.ts`).
 */
import type { PodObject } from "../reconcile/pod.js";

export type PodEvent =
  { readonly type: "upsert"; readonly pod: PodObject } | { readonly type: "delete"; readonly pod: PodObject };

export interface PodRef {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
}

export interface PodEventRecord {
  readonly type: "Normal" | "Warning";
  /** `Mounted`, `MountFailed` or `Unmounted`. */
  readonly reason: string;
  readonly message: string;
}

export interface PodSource {
  /**
   * Starts delivering pod events for this node. Resolves once the pods that exist now have been
   * delivered, so that a caller can garbage-collect against a complete view.
   */
  start(onEvent: (e: PodEvent) => void): Promise<void>;
  stop(): Promise<void>;
  /** A Secret's decoded data, or undefined when it does not exist. */
  getSecret(namespace: string, name: string): Promise<Record<string, string> | undefined>;
  /** Writes the `dynamic-volumes/status` annotation (JSON text). */
  writeStatus(pod: PodRef, status: string): Promise<void>;
  recordEvent(pod: PodRef, event: PodEventRecord): Promise<void>;
  /**
   * Rewrites the pod's `dynamic-volumes/buckets` annotation, and nothing else, with `edit` applied
   * to its current value; retried on conflict so that concurrent edits are never lost.
   */
  updateBuckets(
    namespace: string,
    name: string,
    edit: (current: string | undefined) => string,
  ): Promise<PodObject>;
  /** The current pod, when it exists on this node. */
  getPod(namespace: string, name: string): PodObject | undefined;
}
