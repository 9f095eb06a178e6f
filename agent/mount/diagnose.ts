/**
 * The cause of a failed mount, read from what the client said, and what to do about it: the line
 * a user reads first, before the client's own output. Pure.
 */

export interface Diagnosis {
  /** What went wrong, in the user's terms. */
  readonly cause: string;
  /** What to change. */
  readonly fix: string;
}

interface Rule {
  readonly pattern: RegExp;
  readonly diagnose: (bucket: string, endpoint: string) => Diagnosis;
}

// Phrases of s3fs (its check of the service at start), rclone and GeeseFS (the AWS error codes).
const RULES: readonly Rule[] = [
  {
    pattern: /bucket or key not found|NoSuchBucket|specified bucket does not exist/i,
    diagnose: (bucket, endpoint) => ({
      cause: `bucket "${bucket}" was not found at ${endpoint}`,
      fix: "check the bucket's name in the annotation, or create the bucket",
    }),
  },
  {
    pattern: /invalid credentials|InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|status code: 403/i,
    diagnose: (bucket, endpoint) => ({
      cause: `${endpoint} refused the credentials for bucket "${bucket}"`,
      fix: "check accessKeyID and secretAccessKey in the Secret, and that they may read the bucket",
    }),
  },
  {
    pattern:
      /Could not resolve host|no such host|Connection refused|connect: connection refused|Couldn't connect|Failed to connect to/i,
    diagnose: (_bucket, endpoint) => ({
      cause: `${endpoint} could not be reached from the node`,
      fix: "check endpoint in the Secret, and that the node can reach it",
    }),
  },
];

/** The first diagnosis whose phrase appears in `output`, if any. */
export function diagnose(output: string, bucket: string, endpoint: string): Diagnosis | undefined {
  for (const r of RULES) if (r.pattern.test(output)) return r.diagnose(bucket, endpoint);
  return undefined;
}
