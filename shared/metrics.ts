/**
 * Prometheus metrics through prom-client. Each program keeps one {@link Registry}; its components
 * add their metrics to it with declared label names, and `/metrics` serves `render()`.
 */
import * as prom from "prom-client";

export type Counter = prom.Counter;
export type Gauge = prom.Gauge;
export type Histogram = prom.Histogram;

/** Default histogram buckets, in seconds, from 0.5 ms to 30 s. */
export const DEFAULT_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

export const METRICS_CONTENT_TYPE = prom.Registry.PROMETHEUS_CONTENT_TYPE;

/** A program's metrics, with a creator per kind that registers the metric here. */
export class Registry {
  readonly prom = new prom.Registry();

  /**
   * Adds prom-client's process, heap, GC and event-loop series. Once per program, in `main`: each
   * call starts its own event-loop-delay monitor.
   */
  collectDefaults(): this {
    prom.collectDefaultMetrics({ register: this.prom });
    return this;
  }

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    return new prom.Counter({ name, help, labelNames, registers: [this.prom] });
  }

  gauge(name: string, help: string, labelNames: readonly string[] = []): Gauge {
    return new prom.Gauge({ name, help, labelNames, registers: [this.prom] });
  }

  histogram(
    name: string,
    help: string,
    labelNames: readonly string[] = [],
    buckets: readonly number[] = DEFAULT_BUCKETS,
  ): Histogram {
    return new prom.Histogram({ name, help, labelNames, buckets: [...buckets], registers: [this.prom] });
  }

  /** The exposition text, served with content type {@link METRICS_CONTENT_TYPE}. */
  render(): Promise<string> {
    return this.prom.metrics();
  }
}

/**
 * The current value of one series: a counter's or gauge's value, or for a histogram its
 * `_count` or `_sum` (by `part`). 0 for a series that has not been touched.
 */
export async function seriesValue(
  metric: Counter | Gauge | Histogram,
  labels: Record<string, string> = {},
  part?: "count" | "sum",
): Promise<number> {
  const { name, values } = await metric.get();
  const wanted = part === undefined ? name : `${name}_${part}`;
  const keys = Object.keys(labels);
  const hit = (values as Array<prom.MetricValue<string> & { metricName?: string }>).find(
    (v) =>
      (v.metricName ?? name) === wanted &&
      Object.keys(v.labels).filter((k) => k !== "le").length === keys.length &&
      keys.every((k) => String(v.labels[k]) === labels[k]),
  );
  return hit?.value ?? 0;
}
