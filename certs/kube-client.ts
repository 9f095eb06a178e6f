/**
 * {@link CertsApi} backed by `@kubernetes/client-node` 2.x. Its errors become {@link AppError}s
 * through `shared/kube-errors.ts`, naming the RBAC the bootstrap needs.
 */
import {
  AdmissionregistrationV1Api,
  CoreV1Api,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1ConfigMap,
  type V1MutatingWebhookConfiguration,
  type V1Secret,
} from "@kubernetes/client-node";
import { AppError } from "../shared/errors.js";
import { kubeError, kubeStatusCode as statusOf } from "../shared/kube-errors.js";
import type { CertsApi, JsonPatchOperation } from "./bootstrap.js";

/** What the bootstrap's service account must be allowed to do; quoted in Forbidden errors. */
export const REQUIRED_RBAC =
  "get, create and update on secrets and configmaps in its namespace, and get and patch on mutatingwebhookconfigurations";

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

  async readConfigMap(namespace: string, name: string): Promise<V1ConfigMap | undefined> {
    try {
      return await this.core.readNamespacedConfigMap({ name, namespace });
    } catch (e) {
      if (statusOf(e) === 404) return undefined;
      throw this.error(e, `reading ConfigMap ${namespace}/${name}`);
    }
  }

  async createConfigMap(namespace: string, configMap: V1ConfigMap): Promise<V1ConfigMap> {
    try {
      return await this.core.createNamespacedConfigMap({ namespace, body: configMap });
    } catch (e) {
      throw this.error(e, `creating ConfigMap ${namespace}/${configMap.metadata?.name ?? ""}`);
    }
  }

  async replaceConfigMap(namespace: string, name: string, configMap: V1ConfigMap): Promise<V1ConfigMap> {
    try {
      return await this.core.replaceNamespacedConfigMap({ name, namespace, body: configMap });
    } catch (e) {
      throw this.error(e, `replacing ConfigMap ${namespace}/${name}`);
    }
  }

  private error(e: unknown, doing: string): AppError {
    return kubeError(e, doing, this.server, REQUIRED_RBAC);
  }
}

/**
 * A {@link KubernetesCertsApi} for the default configuration: KUBECONFIG, ~/.kube/config, or the
 * in-cluster service account. Throws InvalidConfig, saying where it looked, when none loads.
 */
export function defaultKubeApi(): CertsApi {
  const kc = new KubeConfig();
  try {
    kc.loadFromDefault();
  } catch (e) {
    throw new AppError(
      "InvalidConfig",
      `cannot load the Kubernetes client configuration (KUBECONFIG, ~/.kube/config, or the in-cluster service account): ${(e as Error).message}`,
      { cause: e },
    );
  }
  return new KubernetesCertsApi(kc);
}
