/**
 * Typed errors. Every error the programs raise on purpose is an {@link AppError} with a stable
 * string code; the edges (AdmissionReview status, websocket reply, exit code) map the code.
 */

/** Every code an {@link AppError} may carry. */
export const ERROR_CODES = [
  "InvalidConfig",
  "InvalidArgument",
  "BadRequest",
  "PayloadTooLarge",
  "Unauthenticated",
  "Forbidden",
  "NotFound",
  "Conflict",
  "Timeout",
  "Unavailable",
  "MountFailed",
  "Internal",
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export class AppError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AppError";
    this.code = code;
  }
}

/** A configuration value (flag, environment variable or file) is missing or wrong. */
export class ConfigError extends AppError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("InvalidConfig", message, options);
    this.name = "ConfigError";
  }
}

export function isAppError(e: unknown): e is AppError {
  return e instanceof AppError;
}

/** A message safe to show to a client: AppError messages are written for users, anything else is not. */
export function publicMessage(e: unknown): string {
  return isAppError(e) ? e.message : "internal error";
}

/**
 * A short, safe rendering of an untrusted value for an error message: strings quoted and clipped,
 * anything else named by its type. Never serializes a structure (which can be deep or huge).
 */
export function describeValue(v: unknown, max = 60): string {
  if (v === undefined) return "nothing";
  if (typeof v === "string") return JSON.stringify(v.length > max ? `${v.slice(0, max)}…` : v);
  if (v === null || typeof v === "number" || typeof v === "boolean") return String(v);
  return Array.isArray(v) ? "a list" : `a ${typeof v}`;
}
