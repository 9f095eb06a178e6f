/**
 * Maps failures of `@kubernetes/client-node` 2.x (an `ApiException` from a generated API call, or the
 * plain `Error` with a `statusCode` that its `Watch` raises) to {@link AppError}s whose messages tell
 * an operator what to do.
 */
import { ApiException } from "@kubernetes/client-node";
import { AppError, type ErrorCode } from "./errors.js";

/**
 * The HTTP status of a failed client call, or undefined when the API server never answered
 * (connection refused, TLS, DNS, timeout before a response).
 */
export function kubeStatusCode(e: unknown): number | undefined {
  if (e instanceof ApiException && typeof e.code === "number") return e.code;
  // Watch answers a non-200 response with `new Error(statusText)` carrying `statusCode`.
  if (e instanceof Error && "statusCode" in e && typeof e.statusCode === "number") return e.statusCode;
  return undefined;
}

/**
 * Maps an error from the client to an {@link AppError}: 404 NotFound, 409 Conflict, 401
 * Unauthenticated, 403 Forbidden (naming the RBAC needed when `requiredRbac` is given, e.g.
 * `"get on secrets in namespace \"ns\""`), 400/422 InvalidArgument, 408/504 Timeout, anything else
 * (429, 5xx, network) Unavailable.
 *
 * @param doing what was attempted, e.g. `reading Secret ns/name`; starts the message.
 * @param server the API server URL, quoted when it cannot be reached.
 */
export function kubeError(e: unknown, doing: string, server: string, requiredRbac?: string): AppError {
  const status = kubeStatusCode(e);
  if (status === undefined)
    return new AppError(
      "Unavailable",
      `${doing}: cannot reach the Kubernetes API at ${server}: ${causeMessage(e)}. Check the kubeconfig or the in-cluster service account`,
      { cause: e },
    );
  const detail = statusMessage(e) ?? `HTTP ${status}`;
  const [code, hint] = ((): [ErrorCode, string] => {
    switch (status) {
      case 404:
        return ["NotFound", ""];
      case 409:
        return ["Conflict", ""];
      case 401:
        return [
          "Unauthenticated",
          "; the credentials were refused, check the kubeconfig or service account token",
        ];
      case 403:
        return [
          "Forbidden",
          requiredRbac !== undefined
            ? `; the service account needs ${requiredRbac}`
            : "; the service account lacks the RBAC permission for this request",
        ];
      case 400:
      case 422:
        return ["InvalidArgument", ""];
      case 408:
      case 504:
        return ["Timeout", "; the API server timed out, try again"];
      default:
        return ["Unavailable", "; the API server failed, try again"];
    }
  })();
  return new AppError(code, `${doing}: ${detail}${hint}`, { cause: e });
}

/** The `message` of the Kubernetes Status in the error body, when there is one. */
function statusMessage(e: unknown): string | undefined {
  if (!(e instanceof ApiException)) return undefined;
  const body: unknown = e.body;
  let parsed: unknown = body;
  if (typeof body === "string") {
    try {
      parsed = JSON.parse(body);
    } catch {
      return body.trim() === "" ? undefined : body.trim().slice(0, 300);
    }
  }
  if (
    parsed !== null &&
    typeof parsed === "object" &&
    "message" in parsed &&
    typeof parsed.message === "string"
  )
    return parsed.message;
  return undefined;
}

function causeMessage(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const cause = e.cause instanceof Error ? `: ${e.cause.message}` : "";
  return `${e.message}${cause}`;
}
