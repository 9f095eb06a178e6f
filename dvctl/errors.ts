/**
 * dvctl's exit codes, which scripts may rely on, and the mapping from every error dvctl can meet
 * (its own {@link AppError}s, the console's `{ok:false}` codes, commander's usage errors) to them.
 * Pure: no I/O.
 */
import { AppError, isAppError, type ErrorCode } from "../shared/errors.js";
import { ConsoleError, type ConsoleErrorCode } from "../shared/protocol.js";

export const EXIT = Object.freeze({
  /** The operation succeeded. */
  ok: 0,
  /** The operation failed: a mount ended `failed`, the pod or mount does not exist, a conflict. */
  failed: 1,
  /** The command line is wrong; nothing was sent anywhere. */
  usage: 2,
  /** The token is missing, refused, or does not allow the operation. */
  auth: 3,
  /** The agent cannot be reached (connection, TLS, discovery, port-forward) or cannot serve now. */
  unreachable: 4,
  /** The operation did not finish in time (the agent keeps working on a mount or unmount). */
  timeout: 5,
});
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** The exit code table as `--help` shows it. */
export const EXIT_CODES_HELP = `Exit codes:
  0  ok
  1  operation failed (mount ended "failed", pod or mount not found, wrong node, conflict)
  2  usage error (bad flags or arguments; nothing was sent)
  3  authentication or authorization error (token missing, refused or not allowed)
  4  cannot reach the agent (connection, TLS verification, discovery, port-forward) or it cannot serve now
  5  timeout (the agent keeps working on a mount or unmount; see dvctl status)`;

const BY_APP_CODE: Readonly<Record<ErrorCode, ExitCode>> = {
  InvalidConfig: EXIT.usage,
  InvalidArgument: EXIT.usage,
  BadRequest: EXIT.usage,
  PayloadTooLarge: EXIT.usage,
  Unauthenticated: EXIT.auth,
  Forbidden: EXIT.auth,
  Unavailable: EXIT.unreachable,
  Timeout: EXIT.timeout,
  NotFound: EXIT.failed,
  Conflict: EXIT.failed,
  MountFailed: EXIT.failed,
  Internal: EXIT.failed,
};

const BY_CONSOLE_CODE: Readonly<Record<ConsoleErrorCode, ExitCode>> = {
  // dvctl validates every request as the agent does, so a BadRequest means the command line was wrong.
  BadRequest: EXIT.usage,
  TooLarge: EXIT.usage,
  Unauthenticated: EXIT.auth,
  Forbidden: EXIT.auth,
  NotFound: EXIT.failed,
  WrongNode: EXIT.failed,
  Conflict: EXIT.failed,
  RateLimited: EXIT.failed,
  Internal: EXIT.failed,
  Timeout: EXIT.timeout,
  Unavailable: EXIT.unreachable,
};

/** A command-line mistake: exit 2, before anything is sent. */
export class UsageError extends AppError {
  constructor(message: string) {
    super("InvalidArgument", message);
    this.name = "UsageError";
  }
}

/** The exit code for any thrown value; unknown errors are operation failures. */
export function exitCodeOf(e: unknown): ExitCode {
  if (e instanceof ConsoleError) return BY_CONSOLE_CODE[e.code] ?? EXIT.failed;
  if (isAppError(e)) return BY_APP_CODE[e.code] ?? EXIT.failed;
  return EXIT.failed;
}

/** The line to print for an error: console errors keep their code, so users can search for it. */
export function messageOf(e: unknown): string {
  if (e instanceof ConsoleError) return `${e.code}: ${e.message}`;
  if (e instanceof Error) return e.message;
  return String(e);
}
