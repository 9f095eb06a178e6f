import { expect } from "chai";
import { Registry, seriesValue } from "../../../shared/metrics.js";

/** The value of one exposition line, by its exact series name and labels. */
function value(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe("metrics registry", () => {
  it("renders counters by label set, with HELP and TYPE, escaping label values", async () => {
    const r = new Registry();
    const c = r.counter("x_total", "Things.", ["result"]);
    c.inc({ result: "ok" });
    c.inc({ result: "ok" }, 2);
    c.inc({ result: 'say "hi"\\\n' });
    const text = await r.render();
    expect(text).to.contain("# HELP x_total Things.\n# TYPE x_total counter\n");
    expect(value(text, 'x_total{result="ok"}')).to.equal(3);
    expect(value(text, 'x_total{result="say \\"hi\\"\\\\\\n"}')).to.equal(1);
    expect(text.endsWith("\n")).to.equal(true);
  });

  it("shows a series at 0 once it is touched with inc(labels, 0)", async () => {
    const r = new Registry();
    const c = r.counter("z_total", "Z.", ["result"]);
    c.inc({ result: "failed" }, 0);
    expect(value(await r.render(), 'z_total{result="failed"}')).to.equal(0);
    c.inc({ result: "failed" });
    expect(value(await r.render(), 'z_total{result="failed"}')).to.equal(1);
  });

  it("renders histograms with cumulative buckets, +Inf, sum and count", async () => {
    const r = new Registry();
    const h = r.histogram("d_seconds", "D.", ["op"], [0.1, 1]);
    h.observe({ op: "a" }, 0.05);
    h.observe({ op: "a" }, 0.5);
    h.observe({ op: "a" }, 5);
    const text = await r.render();
    expect(value(text, 'd_seconds_bucket{le="0.1",op="a"}')).to.equal(1);
    expect(value(text, 'd_seconds_bucket{le="1",op="a"}')).to.equal(2);
    expect(value(text, 'd_seconds_bucket{le="+Inf",op="a"}')).to.equal(3);
    expect(value(text, 'd_seconds_sum{op="a"}')).to.equal(5.55);
    expect(await seriesValue(h, { op: "a" }, "count")).to.equal(3);
    expect(await seriesValue(h, { op: "a" }, "sum")).to.equal(5.55);
  });

  it("reads one series' value, and 0 for an untouched one", async () => {
    const r = new Registry();
    const c = r.counter("y_total", "Y.", ["a", "b"]);
    c.inc({ b: "2", a: "1" });
    c.inc({ a: "1", b: "2" });
    expect(await seriesValue(c, { a: "1", b: "2" })).to.equal(2);
    expect(await seriesValue(c, { a: "1", b: "3" })).to.equal(0);
    const g = r.gauge("g", "G.");
    g.set(7);
    expect(await seriesValue(g)).to.equal(7);
  });

  it("adds the process, GC and event-loop series when asked", async () => {
    const text = await new Registry().collectDefaults().render();
    for (const name of [
      "process_resident_memory_bytes",
      "nodejs_eventloop_lag_seconds",
      "nodejs_gc_duration_seconds",
    ])
      expect(text).to.contain(`# TYPE ${name} `);
  });

  it("refuses a label it was not declared with", () => {
    const c = new Registry().counter("w_total", "W.", ["result"]);
    expect(() => c.inc({ other: "x" })).to.throw(/label/i);
  });
});
