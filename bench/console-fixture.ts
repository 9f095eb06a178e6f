/**
 * What the console benchmark's processes agree on: the user, the pods, and the frames (requests,
 * the baseline's constant reply, the event frames the baseline broadcasts). Pure: no I/O.
 */
import { encodeEvent, type StateEvent } from "../shared/protocol.js";

/** The one user of the bench: `Authorization: Bearer <BENCH_TOKEN>`, sent to both servers. */
export const BENCH_TOKEN = "bench-console-token";
export const BENCH_NAMESPACE = "team-a";
/** The pod that `status` asks about; it has one mounted bucket. */
export const STATUS_POD = "trainer";
/** The pod whose annotation the fan-out edits (mount, unmount) so that the reconciler emits events. */
export const WATCHED_POD = "watched";
export const FANOUT_BUCKET = "bucket-b";
/** The id of every watcher's `watch` request, hence the `watch` field of its events. */
export const WATCH_ID = 1;
/** Frames the baseline relays to every other client start with this; everything else is echoed. */
export const BROADCAST_PREFIX = '{"event"';

/** The state whose event closes a trigger: `mounted` after a mount, `removed` after an unmount. */
export type FinalState = "mounted" | "removed";

export function statusRequest(id: number): string {
  return JSON.stringify({ id, op: "status", namespace: BENCH_NAMESPACE, pod: STATUS_POD });
}

/** A constant JSON reply padded to exactly `bytes` bytes (or its minimal size when that is larger). */
export function constantReply(bytes: number): string {
  const empty = '{"id":0,"ok":true,"result":{"pad":""}}';
  return `{"id":0,"ok":true,"result":{"pad":"${"x".repeat(Math.max(0, bytes - empty.length))}"}}`;
}

/**
 * The event a watcher of the console receives when mount `name` of the watched pod reaches `state`,
 * byte for byte as the console encodes it; the baseline broadcasts exactly this frame.
 */
export function eventFrame(name: string, state: FinalState): string {
  const e: Omit<StateEvent, "event"> =
    state === "mounted"
      ? {
          watch: WATCH_ID,
          namespace: BENCH_NAMESPACE,
          pod: WATCHED_POD,
          name,
          state,
          bucket: FANOUT_BUCKET,
          prefix: "",
          readOnly: false,
        }
      : { watch: WATCH_ID, namespace: BENCH_NAMESPACE, pod: WATCHED_POD, name, state };
  return encodeEvent(e);
}

/** How a watcher names an event it waits for. */
export function eventKey(name: string, state: string): string {
  return `${name}:${state}`;
}
