/**
 * Capped exponential backoff with full jitter: the delay before retry `attempt` (1 for the first
 * retry) is drawn uniformly from [0, min(maxMs, baseMs · 2^(attempt-1))]. Spreading retries over
 * the whole window keeps many agents that failed together (an API server restart, an S3 outage)
 * from retrying together. Pure: the random source is a parameter.
 */
export interface BackoffPolicy {
  /** The window of the first retry, in ms. */
  readonly baseMs: number;
  /** The largest window, in ms. */
  readonly maxMs: number;
}

/** The window (upper bound) of retry `attempt`, before jitter. */
export function backoffCeiling(attempt: number, policy: BackoffPolicy): number {
  const n = Math.max(1, Math.floor(attempt));
  // 2^(n-1) overflows to Infinity long after it passed any sane cap; min() keeps it finite.
  return Math.min(policy.maxMs, policy.baseMs * 2 ** (n - 1));
}

/** The delay before retry `attempt`, in whole ms. `random` returns a number in [0, 1). */
export function backoffDelay(
  attempt: number,
  policy: BackoffPolicy,
  random: () => number = Math.random,
): number {
  return Math.floor(random() * (backoffCeiling(attempt, policy) + 1));
}
