import { expect } from "chai";
import { backoffCeiling, backoffDelay } from "../../../shared/backoff.js";

const policy = { baseMs: 100, maxMs: 1000 };

describe("backoffCeiling", () => {
  const rows: Array<[number, number]> = [
    [1, 100],
    [2, 200],
    [3, 400],
    [4, 800],
    [5, 1000],
    [60, 1000],
    [5000, 1000],
    [0, 100],
  ];
  for (const [attempt, ceiling] of rows)
    it(`[ok] attempt ${attempt} → ${ceiling} ms`, () => {
      expect(backoffCeiling(attempt, policy)).to.equal(ceiling);
    });
});

describe("backoffDelay", () => {
  it("is 0 at the bottom of the random range", () => {
    expect(backoffDelay(3, policy, () => 0)).to.equal(0);
  });

  it("reaches the ceiling at the top of the random range", () => {
    expect(backoffDelay(3, policy, () => 0.999_999_9)).to.equal(400);
    expect(backoffDelay(9, policy, () => 0.999_999_9)).to.equal(1000);
  });

  it("spreads retries over the whole window (full jitter)", () => {
    const seen = Array.from({ length: 2000 }, () => backoffDelay(4, policy));
    expect(Math.min(...seen)).to.be.at.least(0);
    expect(Math.max(...seen)).to.be.at.most(800);
    // Uniform over [0, 800]: both halves of the window are used.
    expect(seen.filter((d) => d < 400).length).to.be.within(800, 1200);
  });

  it("returns whole milliseconds", () => {
    expect(Number.isInteger(backoffDelay(2, policy, () => 0.123))).to.equal(true);
  });
});
