import { expect } from "chai";
import { trustBundle } from "../../../certs/bootstrap.js";
import { BACKDATE_MS, generateCa } from "../../../certs/generate.js";
import {
  planRotation,
  type CertTimes,
  type RotationPolicy,
  type RotationState,
} from "../../../certs/rotation.js";

const DAY = 24 * 60 * 60 * 1000;
const NOW = new Date("2030-06-01T00:00:00Z");
const POLICY: RotationPolicy = {
  renewBeforeMs: 30 * DAY,
  caRenewBeforeMs: 60 * DAY,
  caOverlapMs: 60 * 60 * 1000,
};

/** A certificate created `createdDaysAgo` days before NOW (backdated as generate.ts does), expiring in `expiresInDays`. */
function cert(createdDaysAgo: number, expiresInDays: number): CertTimes {
  return {
    notBefore: new Date(NOW.getTime() - createdDaysAgo * DAY - BACKDATE_MS),
    notAfter: new Date(NOW.getTime() + expiresInDays * DAY),
  };
}

function state(over: Partial<RotationState> = {}): RotationState {
  return {
    ca: { ...cert(1000, 2650), hasKey: true },
    serving: cert(100, 265),
    nextCaTrusted: false,
    ...over,
  };
}

describe("planRotation", () => {
  const cases: [string, RotationState, string, RegExp?][] = [
    ["[none] everything valid, outside both windows", state(), "none"],
    [
      "[renew-serving] the serving certificate is within 30 days and the CA keeps its key",
      state({ serving: cert(340, 25) }),
      "renew-serving",
      /serving certificate expires at .*within the renewal window/,
    ],
    [
      "[renew-serving] an expired serving certificate, CA fine",
      state({ serving: cert(400, -35) }),
      "renew-serving",
    ],
    [
      "[stage-ca] the serving certificate is due but the Secret has no CA key (written before ca.key)",
      state({ ca: { ...cert(1000, 2650), hasKey: false }, serving: cert(340, 25) }),
      "stage-ca",
      /does not keep the CA's key/,
    ],
    ["[none] no CA key, but nothing is due", state({ ca: { ...cert(1000, 2650), hasKey: false } }), "none"],
    [
      "[stage-ca] the CA is within its 60-day window, whatever the serving certificate",
      state({ ca: { ...cert(3600, 50), hasKey: true } }),
      "stage-ca",
      /the CA expires at .*within the CA renewal window/,
    ],
    [
      "[stage-ca] the serving certificate is due and the CA would clamp a new one inside the window",
      state({
        ca: { ...cert(3600, 20), hasKey: true },
        serving: cert(340, 10),
      }),
      "stage-ca",
    ],
    [
      "[wait] a staged CA not yet in every caBundle",
      state({ ca: { ...cert(3600, 50), hasKey: true }, nextCa: cert(0, 3650), nextCaTrusted: false }),
      "wait",
      /not yet in every caBundle/,
    ],
    [
      "[wait] a staged CA in every caBundle, but for less than the overlap",
      state({
        ca: { ...cert(3600, 50), hasKey: true },
        nextCa: {
          notBefore: new Date(NOW.getTime() - BACKDATE_MS - 60_000),
          notAfter: cert(0, 3650).notAfter,
        },
        nextCaTrusted: true,
      }),
      "wait",
      /served from 2030-06-01T00:59:00/,
    ],
    [
      "[promote-ca] a staged CA in every caBundle for the overlap",
      state({ ca: { ...cert(3600, 50), hasKey: true }, nextCa: cert(1, 3649), nextCaTrusted: true }),
      "promote-ca",
      /in every caBundle since/,
    ],
    [
      "[renew-serving] during the overlap the serving certificate falls due and the old CA can still issue",
      state({
        ca: { ...cert(3600, 50), hasKey: true },
        serving: cert(340, 25),
        nextCa: cert(0, 3650),
        nextCaTrusted: true,
      }),
      "renew-serving",
    ],
    [
      "[promote-ca] during the overlap the serving certificate falls due and the old CA cannot issue",
      state({
        ca: { ...cert(3600, 20), hasKey: true },
        serving: cert(340, 10),
        nextCa: cert(0, 3650),
        nextCaTrusted: true,
      }),
      "promote-ca",
      /cannot issue another/,
    ],
    [
      "[wait] the serving certificate is due, the old CA cannot issue, the new one is not trusted yet",
      state({
        ca: { ...cert(3600, 20), hasKey: true },
        serving: cert(340, 10),
        nextCa: cert(0, 3650),
        nextCaTrusted: false,
      }),
      "wait",
    ],
    [
      "[stage-ca] a staged CA that expires before it was used is replaced",
      state({ ca: { ...cert(3600, 50), hasKey: true }, nextCa: cert(3600, 10), nextCaTrusted: true }),
      "stage-ca",
      /staged CA expires/,
    ],
  ];
  for (const [what, input, action, reason] of cases)
    it(what, () => {
      const step = planRotation(input, POLICY, NOW);
      expect(step.action).to.equal(action);
      if (reason) expect("reason" in step ? step.reason : "").to.match(reason);
    });

  it("never renews the serving certificate when a fresh one from the CA would be due at once (no loop)", () => {
    // CA expires in 29 days: a new serving certificate would be clamped to 29 days, inside 30.
    const s = state({ ca: { ...cert(3600, 29), hasKey: true }, serving: cert(340, 5) });
    expect(planRotation(s, { ...POLICY, caRenewBeforeMs: 10 * DAY }, NOW).action).to.equal("stage-ca");
  });
});

describe("trustBundle with several CAs (the current one and a staged one)", () => {
  const now = new Date();
  const a = generateCa({ commonName: "current", now });
  const b = generateCa({ commonName: "staged", now });
  const old = generateCa({ commonName: "old", now });
  const expired = generateCa({
    commonName: "expired",
    now: new Date(now.getTime() - 10_000),
    validityMs: 5000,
  });
  const count = (t: string): number => t.match(/BEGIN CERTIFICATE/g)?.length ?? 0;
  const norm = (p: string): string => p.replace(/\r\n/g, "\n").trim();

  it("holds both, first in the order given, then the previous CAs that have not expired", () => {
    const t = trustBundle([a.certPem, b.certPem], `${old.certPem}${expired.certPem}`, now);
    expect(t.unchanged).to.equal(false);
    expect(count(t.text)).to.equal(3);
    expect(t.text.startsWith(a.certPem.trimEnd())).to.equal(true);
    const text = norm(t.text);
    expect(text).to.include(norm(b.certPem));
    expect(text).to.include(norm(old.certPem));
    expect(text).to.not.include(norm(expired.certPem));
  });

  it("is unchanged when the previous bundle holds exactly that, and drops the staged CA once it is current", () => {
    const both = trustBundle([a.certPem, b.certPem], undefined, now).text;
    expect(trustBundle([a.certPem, b.certPem], both, now).unchanged).to.equal(true);
    // Promotion: b is current, a stays until it expires.
    const promoted = trustBundle(b.certPem, both, now);
    expect(count(promoted.text)).to.equal(2);
    expect(promoted.text.startsWith(b.certPem.trimEnd())).to.equal(true);
  });
});
