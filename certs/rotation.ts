/**
 * What the in-cluster renewal does next, decided from the certificates' validity and the caBundle
 * alone (pure: no I/O, no clock, no logging). `renewer.ts` carries the decision out.
 *
 * The order that keeps every admission working while the certificates change:
 *
 * 1. The serving certificate is due and its CA can still issue one that would not be due at once
 *    (`ca.key` is kept and the CA outlives the renewal window): a new serving certificate from the
 *    same CA. Nothing in the caBundle changes.
 * 2. The CA itself is due (or its key was never kept, and the serving certificate is due): a new CA
 *    is *staged* in the Secret (`next-ca.crt`, `next-ca.key`) and added to every caBundle, beside the
 *    current one. Nothing served changes yet.
 * 3. Once the staged CA is in every caBundle and has been for {@link RotationPolicy.caOverlapMs}
 *    (counted from its creation, which is when it was staged), it is *promoted*: a serving
 *    certificate from it is stored, and it becomes `ca.crt`/`ca.key`.
 * 4. The previous CA stays in the caBundle until it expires: nothing it signed can verify after
 *    that, so nothing can still be serving a certificate that needs it.
 */
import { BACKDATE_MS } from "./generate.js";

/** Validity of one certificate. */
export interface CertTimes {
  readonly notBefore: Date;
  readonly notAfter: Date;
}

export interface RotationState {
  /** The CA that issued the serving certificate; `hasKey` when the Secret keeps its key. */
  readonly ca: CertTimes & { readonly hasKey: boolean };
  /** The serving certificate in the Secret. */
  readonly serving: CertTimes;
  /** A CA staged for the next rotation, with its key, if any. */
  readonly nextCa?: CertTimes;
  /** True when the caBundle of every webhook of the configuration holds the staged CA. */
  readonly nextCaTrusted: boolean;
}

export interface RotationPolicy {
  /** Renew the serving certificate when it expires within this many ms. */
  readonly renewBeforeMs: number;
  /** Stage a new CA when the CA expires within this many ms. */
  readonly caRenewBeforeMs: number;
  /**
   * How long a staged CA is trusted before a certificate it signed is served: the time every API
   * server (and dvctl, through the CA ConfigMap) needs to see the new caBundle.
   */
  readonly caOverlapMs: number;
}

export type RotationStep =
  | { readonly action: "none" }
  | { readonly action: "renew-serving"; readonly reason: string }
  | { readonly action: "stage-ca"; readonly reason: string }
  | { readonly action: "promote-ca"; readonly reason: string }
  | { readonly action: "wait"; readonly reason: string };

/** When a CA was created: generate.ts backdates notBefore by {@link BACKDATE_MS}. */
export function createdAt(cert: CertTimes): Date {
  return new Date(cert.notBefore.getTime() + BACKDATE_MS);
}

/** Pure: the next step for the Secret at `now` (see the module comment). */
export function planRotation(state: RotationState, policy: RotationPolicy, now: Date): RotationStep {
  const t = now.getTime();
  const iso = (ms: number): string => new Date(ms).toISOString();
  const { ca, serving, nextCa } = state;
  const servingDue = serving.notAfter.getTime() - policy.renewBeforeMs <= t;
  // A serving certificate never outlives its CA (generate.ts), so a CA that expires within the
  // renewal window could only issue certificates that are due at once.
  const caCanIssue = ca.hasKey && ca.notAfter.getTime() - policy.renewBeforeMs > t;
  const caDue = ca.notAfter.getTime() - policy.caRenewBeforeMs <= t;
  const servingReason = `the serving certificate expires at ${iso(serving.notAfter.getTime())}, within the renewal window`;

  if (nextCa !== undefined) {
    if (nextCa.notAfter.getTime() - policy.renewBeforeMs <= t)
      return {
        action: "stage-ca",
        reason: `the staged CA expires at ${iso(nextCa.notAfter.getTime())} before it was used`,
      };
    const servedFrom = createdAt(nextCa).getTime() + policy.caOverlapMs;
    if (state.nextCaTrusted && servedFrom <= t)
      return {
        action: "promote-ca",
        reason: `the new CA has been in every caBundle since ${iso(servedFrom - policy.caOverlapMs)} at least`,
      };
    if (servingDue && caCanIssue) return { action: "renew-serving", reason: servingReason };
    if (servingDue && state.nextCaTrusted)
      return {
        action: "promote-ca",
        reason: `${servingReason}, and the current CA cannot issue another; the new CA is in every caBundle`,
      };
    return {
      action: "wait",
      reason: state.nextCaTrusted
        ? `the new CA is served from ${iso(servedFrom)}, once every API server trusts it`
        : "the new CA is not yet in every caBundle",
    };
  }
  if (caDue)
    return {
      action: "stage-ca",
      reason: `the CA expires at ${iso(ca.notAfter.getTime())}, within the CA renewal window`,
    };
  if (servingDue)
    return caCanIssue
      ? { action: "renew-serving", reason: servingReason }
      : {
          action: "stage-ca",
          reason: `${servingReason}, and ${ca.hasKey ? "the CA expires too soon to issue another" : "the Secret does not keep the CA's key"}`,
        };
  return { action: "none" };
}
