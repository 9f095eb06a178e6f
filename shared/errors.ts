/**
 * Typed errors. Every error the programs raise on purpose is an {@link AppError} with a stable
 * string code; the edges (AdmissionReview status, websocket reply, exit code) map the code.
 */

export type ErrorCode =
  | "InvalidConfig"
  | "InvalidArgument"
  | "BadRequest"
  | "PayloadTooLarge"
  | "Unauthenticated"
  | "Forbidden"
  | "NotFound"
  | "Conflict"
  | "Timeout"
  | "Unavailable"
  | "MountFailed"
  | "Internal";

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
