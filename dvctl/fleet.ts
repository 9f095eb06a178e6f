/**
 * The fleet view: what every pod carrying our injection asks for and has, read from the Kubernetes
 * API alone (no agent): `dvctl ls` without `--agent`/`--node`, and `dvctl describe NS/POD`.
 *
 * A pod is ours when it has the `dynamic-volumes/id` annotation or the `dynamic-volumes` volume (the
 * webhook writes both). Its mounts are the entries of the status annotation the agents write; an
 * entry of the buckets annotation with no status yet shows as `pending`, and one that does not parse
 * as `invalid` with the reason. `describe` adds the pod's Events recorded by the agents.
 *
 * The API is passed in (a `CoreV1Api`), so this file only imports the client's types.
 */
import type { CoreV1Api, CoreV1Event, V1Pod } from "@kubernetes/client-node";
import { describeBucketError, parseBuckets } from "../shared/buckets.js";
import { AppError } from "../shared/errors.js";
import { kubeError } from "../shared/kube-errors.js";
import { ANNOTATIONS, DEFAULT_MOUNT_PATH, MOUNT_STATES, VOLUME_NAME } from "../shared/names.js";
import { EVENT_COMPONENT } from "./agent-names.js";
import type { PodRef } from "./args.js";
import { readPod } from "./discovery.js";

export type FleetApi = Pick<
  CoreV1Api,
  "listNamespacedPod" | "listPodForAllNamespaces" | "readNamespacedPod" | "listNamespacedEvent"
>;

export interface FleetMount {
  readonly name: string;
  /** The agent's state; `pending` before it wrote one; `invalid` for an entry that does not parse. */
  readonly state: (typeof MOUNT_STATES)[number] | "pending" | "invalid";
  readonly bucket?: string;
  readonly prefix?: string;
  readonly readOnly?: boolean;
  /** ISO 8601 time the mount entered this state (from the status annotation). */
  readonly since?: string;
  readonly error?: string;
}

export interface FleetPod {
  readonly namespace: string;
  readonly pod: string;
  /** `spec.nodeName`; null while the pod is not scheduled. */
  readonly node: string | null;
  readonly phase?: string;
  readonly mountPath: string;
  /** Why the mounts cannot be told (a status annotation that is not JSON). */
  readonly problem?: string;
  readonly mounts: readonly FleetMount[];
}

export interface FleetEvent {
  readonly type: string;
  readonly reason: string;
  readonly message: string;
  readonly count: number;
  /** ISO 8601 time it was last seen. */
  readonly lastSeen?: string;
  /** The agent that recorded it (its node). */
  readonly from?: string;
}

/** Whether the webhook injected `pod`. */
export function isInjected(pod: V1Pod): boolean {
  return (
    pod.metadata?.annotations?.[ANNOTATIONS.id] !== undefined ||
    (pod.spec?.volumes ?? []).some((v) => v.name === VOLUME_NAME)
  );
}

function text(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

/** The status annotation's entries, loosely: whatever the agent wrote, without throwing. */
function statusEntries(value: string | undefined): { entries: Map<string, FleetMount>; problem?: string } {
  const entries = new Map<string, FleetMount>();
  if (value === undefined || value.trim() === "") return { entries };
  let raw: unknown;
  try {
    raw = JSON.parse(value);
  } catch {
    return { entries, problem: `the ${ANNOTATIONS.status} annotation is not JSON` };
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw))
    return { entries, problem: `the ${ANNOTATIONS.status} annotation is not a JSON object` };
  for (const [name, v] of Object.entries(raw as Record<string, unknown>)) {
    if (typeof v !== "object" || v === null) continue;
    const o = v as Record<string, unknown>;
    const state = (MOUNT_STATES as readonly string[]).includes(String(o.state))
      ? (o.state as FleetMount["state"])
      : "pending";
    const bucket = text(o.bucket);
    const prefix = text(o.prefix);
    const since = text(o.since);
    const error = text(o.error);
    entries.set(name, {
      name,
      state,
      ...(bucket !== undefined ? { bucket } : {}),
      ...(prefix !== undefined ? { prefix } : {}),
      ...(typeof o.readOnly === "boolean" ? { readOnly: o.readOnly } : {}),
      ...(since !== undefined ? { since } : {}),
      ...(error !== undefined ? { error } : {}),
    });
  }
  return { entries };
}

/** One pod's view: the status entries, then buckets entries that have none yet, in annotation order. */
export function fleetPodOf(pod: V1Pod): FleetPod {
  const annotations = pod.metadata?.annotations ?? {};
  const status = statusEntries(annotations[ANNOTATIONS.status]);
  const buckets = parseBuckets(annotations[ANNOTATIONS.buckets]);
  const mounts: FleetMount[] = [];
  const seen = new Set<string>();
  // Annotation order first, as the user wrote the entries; then what only the status still has
  // (an entry being unmounted).
  const rows: Array<{ index: number; mount: FleetMount }> = [];
  for (const [i, e] of buckets.entries.entries()) {
    if (seen.has(e.name)) continue;
    seen.add(e.name);
    const st = status.entries.get(e.name);
    rows.push({
      index: i,
      mount: st ?? {
        name: e.name,
        state: "pending",
        bucket: e.bucket,
        prefix: e.prefix,
        readOnly: e.readOnly,
      },
    });
  }
  for (const err of buckets.errors) {
    const name = err.name ?? err.raw;
    if (seen.has(name)) continue;
    seen.add(name);
    const st = err.name !== undefined ? status.entries.get(err.name) : undefined;
    rows.push({
      index: err.index,
      mount: st ?? { name, state: "invalid", error: describeBucketError(err) },
    });
  }
  rows.sort((a, b) => a.index - b.index);
  mounts.push(...rows.map((r) => r.mount));
  for (const [name, m] of status.entries) if (!seen.has(name)) mounts.push(m);
  const node = pod.spec?.nodeName;
  return {
    namespace: pod.metadata?.namespace ?? "",
    pod: pod.metadata?.name ?? "",
    node: node !== undefined && node !== "" ? node : null,
    ...(pod.status?.phase !== undefined ? { phase: pod.status.phase } : {}),
    mountPath: annotations[ANNOTATIONS.mountPath] ?? DEFAULT_MOUNT_PATH,
    ...(status.problem !== undefined ? { problem: status.problem } : {}),
    mounts,
  };
}

export interface FleetQuery {
  /** Undefined: every namespace. */
  readonly namespace?: string;
  readonly selector?: string;
}

/** The injected pods matching `q`, sorted by namespace and name; pages through long lists. */
export async function listFleet(api: FleetApi, q: FleetQuery, server: string): Promise<FleetPod[]> {
  const pods: V1Pod[] = [];
  let cont: string | undefined;
  const where = q.namespace !== undefined ? `in namespace "${q.namespace}"` : "in all namespaces";
  do {
    const page = {
      limit: 500,
      ...(q.selector !== undefined ? { labelSelector: q.selector } : {}),
      ...(cont !== undefined ? { _continue: cont } : {}),
    };
    try {
      const list =
        q.namespace !== undefined
          ? await api.listNamespacedPod({ namespace: q.namespace, ...page })
          : await api.listPodForAllNamespaces(page);
      pods.push(...list.items);
      cont = list.metadata?._continue || undefined;
    } catch (e) {
      throw kubeError(e, `listing pods ${where}`, server, `list on pods ${where}`);
    }
  } while (cont !== undefined);
  return pods
    .filter(isInjected)
    .map(fleetPodOf)
    .sort((a, b) => a.namespace.localeCompare(b.namespace) || a.pod.localeCompare(b.pod));
}

/** One pod, and the Events the agents recorded on it, oldest first. NotFound for no such pod. */
export async function describePod(
  api: FleetApi,
  ref: PodRef,
  server: string,
): Promise<{ pod: FleetPod; injected: boolean; events: FleetEvent[] }> {
  const pod = await readPod(api, ref, server);
  let events: CoreV1Event[];
  try {
    events = (
      await api.listNamespacedEvent({
        namespace: ref.namespace,
        fieldSelector: `involvedObject.name=${ref.pod}`,
      })
    ).items;
  } catch (e) {
    throw kubeError(
      e,
      `listing the Events of pod ${ref.namespace}/${ref.pod}`,
      server,
      `list on events in namespace "${ref.namespace}"`,
    );
  }
  const uid = pod.metadata?.uid;
  const ours = events.filter(
    (e) =>
      (e.involvedObject.kind ?? "Pod") === "Pod" &&
      e.involvedObject.name === ref.pod &&
      (uid === undefined || e.involvedObject.uid === undefined || e.involvedObject.uid === uid) &&
      (e.reportingComponent === EVENT_COMPONENT || e.source?.component === EVENT_COMPONENT),
  );
  const seenAt = (e: CoreV1Event): string | undefined => {
    const t = e.series?.lastObservedTime ?? e.lastTimestamp ?? e.eventTime ?? e.firstTimestamp;
    if (t === undefined) return undefined;
    const d = new Date(t);
    return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
  };
  const list: FleetEvent[] = ours.map((e) => {
    const lastSeen = seenAt(e);
    const from = e.reportingInstance ?? e.source?.host;
    return {
      type: e.type ?? "Normal",
      reason: e.reason ?? "",
      message: e.message ?? "",
      count: e.series?.count ?? e.count ?? 1,
      ...(lastSeen !== undefined ? { lastSeen } : {}),
      ...(from !== undefined ? { from } : {}),
    };
  });
  list.sort((a, b) => (a.lastSeen ?? "").localeCompare(b.lastSeen ?? ""));
  return { pod: fleetPodOf(pod), injected: isInjected(pod), events: list };
}

/** `describe` of a pod the webhook did not inject: said plainly, not shown as an empty pod. */
export function notInjected(ref: PodRef): AppError {
  return new AppError(
    "NotFound",
    `pod ${ref.namespace}/${ref.pod} has no dynamic-volumes volume: the webhook did not inject it. Label the namespace dynamic-volumes/injection=enabled and recreate the pod`,
  );
}
