/**
 * A small Prometheus registry: counters and histograms with labels, rendered in the text
 * exposition format (version 0.0.4). Pure: values change only through the methods below.
 */

type Labels = Record<string, string>;

// Called on every observation (once per admission in the webhook), so it avoids sorting and regex
// replacement in the common cases: no labels, one label, values with nothing to escape.
function labelKey(labels: Labels): string {
  const keys = Object.keys(labels);
  if (keys.length === 0) return "";
  if (keys.length > 1) keys.sort();
  let key = "";
  for (const k of keys) key += `${key === "" ? "" : ","}${k}="${escapeLabel(labels[k]!)}"`;
  return key;
}

const NEEDS_ESCAPE = /[\\\n"]/;

function escapeLabel(v: string): string {
  if (!NEEDS_ESCAPE.test(v)) return v;
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function braces(key: string, extra?: string): string {
  const all = [key, extra].filter((s) => s !== undefined && s !== "").join(",");
  return all === "" ? "" : `{${all}}`;
}

interface Metric {
  render(): string;
}

/** One label set of a counter, bound once so that a hot path skips building the series key. */
export interface CounterSeries {
  inc(by?: number): void;
}

export class Counter implements Metric {
  private readonly values = new Map<string, { value: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  private cell(labels: Labels): { value: number } {
    const k = labelKey(labels);
    let c = this.values.get(k);
    if (c === undefined) {
      c = { value: 0 };
      this.values.set(k, c);
    }
    return c;
  }

  inc(labels: Labels = {}, by = 1): void {
    this.cell(labels).value += by;
  }

  /** The series for `labels`, shown (at 0) from now on even before its first increment. */
  series(labels: Labels = {}): CounterSeries {
    const c = this.cell(labels);
    return {
      inc: (by = 1) => {
        c.value += by;
      },
    };
  }

  get(labels: Labels = {}): number {
    return this.values.get(labelKey(labels))?.value ?? 0;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    for (const [k, c] of this.values) lines.push(`${this.name}${braces(k)} ${c.value}`);
    return lines.join("\n");
  }
}

export class Gauge implements Metric {
  private readonly values = new Map<string, number>();

  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  set(labels: Labels, value: number): void {
    this.values.set(labelKey(labels), value);
  }

  /** Replaces every series at once, so that series whose label set disappeared are dropped. */
  reset(series: ReadonlyArray<[Labels, number]>): void {
    this.values.clear();
    for (const [l, v] of series) this.set(l, v);
  }

  get(labels: Labels = {}): number {
    return this.values.get(labelKey(labels)) ?? 0;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} gauge`];
    for (const [k, v] of this.values) lines.push(`${this.name}${braces(k)} ${v}`);
    return lines.join("\n");
  }
}

/** Default buckets, in seconds, from 0.5 ms to 30 s. */
export const DEFAULT_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

/** One label set of a histogram, bound once so that a hot path skips building the series key. */
export interface HistogramSeries {
  observe(value: number): void;
}

interface HistogramCells {
  /** Observations per bucket, not cumulative: `counts[i]` holds those above bucket i-1 and up to bucket i. */
  readonly counts: number[];
  sum: number;
  count: number;
}

export class Histogram implements Metric {
  private readonly byLabels = new Map<string, HistogramCells>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[] = DEFAULT_BUCKETS,
  ) {}

  private cells(labels: Labels): HistogramCells {
    const k = labelKey(labels);
    let s = this.byLabels.get(k);
    if (!s) {
      s = { counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.byLabels.set(k, s);
    }
    return s;
  }

  private static record(buckets: readonly number[], s: HistogramCells, value: number): void {
    // One bucket per observation; render() sums them into Prometheus' cumulative buckets.
    for (let i = 0; i < buckets.length; i++)
      if (value <= buckets[i]!) {
        s.counts[i]!++;
        break;
      }
    s.sum += value;
    s.count++;
  }

  observe(labels: Labels, value: number): void {
    Histogram.record(this.buckets, this.cells(labels), value);
  }

  /** The series for `labels`, shown from now on even before its first observation. */
  series(labels: Labels = {}): HistogramSeries {
    const s = this.cells(labels);
    return { observe: (value) => Histogram.record(this.buckets, s, value) };
  }

  count(labels: Labels = {}): number {
    return this.byLabels.get(labelKey(labels))?.count ?? 0;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const [k, s] of this.byLabels) {
      let cumulative = 0;
      this.buckets.forEach((b, i) => {
        cumulative += s.counts[i]!;
        lines.push(`${this.name}_bucket${braces(k, `le="${b}"`)} ${cumulative}`);
      });
      lines.push(`${this.name}_bucket${braces(k, 'le="+Inf"')} ${s.count}`);
      lines.push(`${this.name}_sum${braces(k)} ${s.sum}`);
      lines.push(`${this.name}_count${braces(k)} ${s.count}`);
    }
    return lines.join("\n");
  }
}

export class Registry {
  private readonly metrics: Metric[] = [];

  counter(name: string, help: string): Counter {
    return this.add(new Counter(name, help));
  }

  gauge(name: string, help: string): Gauge {
    return this.add(new Gauge(name, help));
  }

  histogram(name: string, help: string, buckets?: readonly number[]): Histogram {
    return this.add(new Histogram(name, help, buckets));
  }

  private add<M extends Metric>(m: M): M {
    this.metrics.push(m);
    return m;
  }

  /** The exposition text, served with content type {@link METRICS_CONTENT_TYPE}. */
  render(): string {
    return `${this.metrics.map((m) => m.render()).join("\n")}\n`;
  }
}

export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";
