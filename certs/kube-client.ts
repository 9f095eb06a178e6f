/**
 * {@link CertsApi} backed by `@kubernetes/client-node` 2.x, and the mapping of its errors to
 * {@link AppError}s with messages an operator can act on.
 */
import {
  AdmissionregistrationV1Api,
  ApiException,
  CoreV1Api,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type V1MutatingWebhookConfiguration,
  type V1Secret,
} from "@kubernetes/client-node";
import { AppError, type ErrorCode } from "../shared/errors.js";
import type { CertsApi, JsonPatchOperation } from "./bootstrap.js";

/** What the bootstrap's service account must be allowed to do; quoted in Forbidden errors. */
export const REQUIRED_RBAC =
  "get, create and update on secrets in its namespace, and get and patch on mutatingwebhookconfigurations";

export class KubernetesCertsApi implements CertsApi {
  private readonly core: CoreV1Api;
  private readonly admission: AdmissionregistrationV1Api;
  private readonly server: string;

  constructor(kubeConfig: KubeConfig) {
    this.core = kubeConfig.makeApiClient(CoreV1Api);
    this.admission = kubeConfig.makeApiClient(AdmissionregistrationV1Api);
    this.server = kubeConfig.getCurrentCluster()?.server ?? "(no current cluster)";
  }

  async readSecret(namespace: string, name: string): Promise<V1Secret | undefined> {
    try {
      return await this.core.readNamespacedSecret({ name, namespace });
    } catch (e) {
      if (statusOf(e) === 404) return undefined;
      throw this.error(e, `reading Secret ${namespace}/${name}`);
    }
  }

  async createSecret(namespace: string, secret: V1Secret): Promise<V1Secret> {
    try {
      return await this.core.createNamespacedSecret({ namespace, body: secret });
    } catch (e) {
      throw this.error(e, `creating Secret ${namespace}/${secret.metadata?.name ?? ""}`);
    }
  }

  async replaceSecret(namespace: string, name: string, secret: V1Secret): Promise<V1Secret> {
    try {
      return await this.core.replaceNamespacedSecret({ name, namespace, body: secret });
    } catch (e) {
      throw this.error(e, `replacing Secret ${namespace}/${name}`);
    }
  }

  async readMutatingWebhookConfiguration(name: string): Promise<V1MutatingWebhookConfiguration | undefined> {
    try {
      return await this.admission.readMutatingWebhookConfiguration({ name });
    } catch (e) {
      if (statusOf(e) === 404) return undefined;
      throw this.error(e, `reading MutatingWebhookConfiguration ${name}`);
    }
  }

  async patchMutatingWebhookConfiguration(
    name: string,
    patch: readonly JsonPatchOperation[],
  ): Promise<V1MutatingWebhookConfiguration> {
    try {
      // The generated client picks the first patch media type it lists, which happens to be JSON patch;
      // say so explicitly rather than rely on that order.
      return await this.admission.patchMutatingWebhookConfiguration(
        { name, body: patch },
        setHeaderOptions("Content-Type", PatchStrategy.JsonPatch),
      );
    } catch (e) {
      throw this.error(e, `patching MutatingWebhookConfiguration ${name}`);
    }
  }

  private error(e: unknown, doing: string): AppError {
    return kubeError(e, doing, this.server);
  }
}

/**
 * Maps an error from the client to an {@link AppError}: 404 NotFound, 409 Conflict, 401
 * Unauthenticated, 403 Forbidden (naming the RBAC needed), 400/422 InvalidArgument, 408/504 Timeout,
 * anything else (429, 5xx, network) Unavailable.
 */
export function kubeError(e: unknown, doing: string, server: string): AppError {
  const status = statusOf(e);
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
        return ["Forbidden", `; the service account needs ${REQUIRED_RBAC}`];
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

function statusOf(e: unknown): number | undefined {
  return e instanceof ApiException && typeof e.code === "number" ? e.code : undefined;
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
