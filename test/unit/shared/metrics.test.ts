import { expect } from "chai";
import { Registry } from "../../../shared/metrics.js";

/** The value of one exposition line, by its exact series name and labels. */
function value(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe("metrics registry", () => {
  it("renders counters by label set, with HELP and TYPE, escaping label values", () => {
    const r = new Registry();
    const c = r.counter("x_total", "Things.");
    c.inc({ result: "ok" });
    c.inc({ result: "ok" }, 2);
    c.inc({ result: 'say "hi"\\\n' });
    const text = r.render();
    expect(text).to.contain("# HELP x_total Things.\n# TYPE x_total counter\n");
    expect(value(text, 'x_total{result="ok"}')).to.equal(3);
    expect(value(text, 'x_total{result="say \\"hi\\"\\\\\\n"}')).to.equal(1);
    expect(text.endsWith("\n")).to.equal(true);
  });

  it("sorts label names, so the same set in another order is the same series", () => {
    const c = new Registry().counter("y_total", "Y.");
    c.inc({ b: "2", a: "1" });
    c.inc({ a: "1", b: "2" });
    expect(c.get({ a: "1", b: "2" })).to.equal(2);
    expect(c.render()).to.contain('y_total{a="1",b="2"} 2');
  });

  it("binds a counter series once: shown at 0 from the start, counted with inc() like the unbound form", () => {
    const r = new Registry();
    const c = r.counter("z_total", "Z.");
    const ok = c.series({ result: "ok" });
    const failed = c.series({ result: "failed" });
    expect(value(r.render(), 'z_total{result="failed"}')).to.equal(0);
    ok.inc();
    ok.inc(4);
    c.inc({ result: "ok" });
    expect(c.get({ result: "ok" })).to.equal(6);
    failed.inc();
    expect(value(r.render(), 'z_total{result="failed"}')).to.equal(1);
  });

  it("renders histogram buckets cumulatively, with +Inf, sum and count", () => {
    const r = new Registry();
    const h = r.histogram("d_seconds", "D.", [0.1, 1, 10]);
    for (const v of [0.05, 0.1, 0.5, 2, 20]) h.observe({}, v);
    const text = r.render();
    expect(value(text, 'd_seconds_bucket{le="0.1"}')).to.equal(2);
    expect(value(text, 'd_seconds_bucket{le="1"}')).to.equal(3);
    expect(value(text, 'd_seconds_bucket{le="10"}')).to.equal(4);
    expect(value(text, 'd_seconds_bucket{le="+Inf"}')).to.equal(5);
    expect(value(text, "d_seconds_sum")).to.be.closeTo(22.65, 1e-9);
    expect(value(text, "d_seconds_count")).to.equal(5);
    expect(h.count()).to.equal(5);
  });

  it("binds a histogram series: observations through it and through observe() land in the same buckets", () => {
    const r = new Registry();
    const h = r.histogram("e_seconds", "E.", [1, 2]);
    const s = h.series({ op: "a" });
    s.observe(0.5);
    h.observe({ op: "a" }, 1.5);
    s.observe(3);
    const text = r.render();
    expect(value(text, 'e_seconds_bucket{op="a",le="1"}')).to.equal(1);
    expect(value(text, 'e_seconds_bucket{op="a",le="2"}')).to.equal(2);
    expect(value(text, 'e_seconds_bucket{op="a",le="+Inf"}')).to.equal(3);
    expect(h.count({ op: "a" })).to.equal(3);
  });

  it("replaces every gauge series on reset, dropping those no longer given", () => {
    const g = new Registry().gauge("g", "G.");
    g.reset([
      [{ k: "a" }, 1],
      [{ k: "b" }, 2],
    ]);
    g.reset([[{ k: "b" }, 5]]);
    expect(g.render()).to.not.contain('k="a"');
    expect(g.get({ k: "b" })).to.equal(5);
  });
});
