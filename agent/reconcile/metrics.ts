/**
 * The reconciler's Prometheus metrics: mounts by state and mounter, mount and unmount durations,
 * failures by reason, queue depth, stale-mount recoveries.
 */
import type { Counter, Gauge, Histogram, Registry } from "../../shared/metrics.js";

export interface ReconcilerMetrics {
  readonly mounts: Gauge;
  readonly mountDuration: Histogram;
  readonly unmountDuration: Histogram;
  readonly failures: Counter;
  readonly queueDepth: Gauge;
  readonly staleRecoveries: Counter;
  readonly reconciles: Counter;
}

const MOUNT_BUCKETS = [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export function createReconcilerMetrics(registry: Registry): ReconcilerMetrics {
  const queueDepth = registry.gauge(
    "dynamic_volumes_reconcile_queue_depth",
    "Pods waiting to be reconciled or being reconciled now.",
  );
  queueDepth.set({}, 0);
  return {
    mounts: registry.gauge("dynamic_volumes_mounts", "Mounts this agent reports, by state and mounter.", [
      "state",
      "mounter",
    ]),
    mountDuration: registry.histogram(
      "dynamic_volumes_mount_duration_seconds",
      "From starting a mount to ready or failed, by mounter and result.",
      ["mounter", "result"],
      MOUNT_BUCKETS,
    ),
    unmountDuration: registry.histogram(
      "dynamic_volumes_unmount_duration_seconds",
      "Time to unmount, by reason (removed, changed, stale, unknown).",
      ["reason"],
      MOUNT_BUCKETS,
    ),
    failures: registry.counter(
      "dynamic_volumes_mount_failures_total",
      "Failed mounts by reason: the error code (NotFound for a missing Secret, InvalidArgument, MountFailed, ...).",
      ["reason"],
    ),
    queueDepth,
    staleRecoveries: registry.counter(
      "dynamic_volumes_stale_recoveries_total",
      "Stale (ENOTCONN) mounts unmounted to be mounted again.",
    ),
    reconciles: registry.counter(
      "dynamic_volumes_reconciles_total",
      "Pod reconciles by result (ok, error).",
      ["result"],
    ),
  };
}
