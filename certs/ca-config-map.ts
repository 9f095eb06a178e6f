/**
 * The CA, as a certificate without any key, in a ConfigMap that console users may read, the way the
 * cluster publishes its own CA in `kube-root-ca.crt`. dvctl verifies an agent it found through the
 * kubeconfig with it. The serving Secret cannot serve that purpose: it also holds the private key of
 * the webhook and of every agent.
 *
 * The ConfigMap holds one key, `ca.crt`: the current CA first, then the previous CAs it held that
 * have not expired. An agent picks up a renewed Secret a minute or so after the bootstrap wrote it,
 * and until then it still serves a certificate of the previous CA.
 */
import type { V1ConfigMap } from "@kubernetes/client-node";
import { AppError, isAppError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { CA_CERT_KEY, MAX_ATTEMPTS, managedMetadata, trustBundle, type CertsApi } from "./bootstrap.js";

export interface PublishCaOptions {
  readonly namespace: string;
  /** The ConfigMap's name. */
  readonly name: string;
  /** The current CA (PEM), or the current CA and one staged for rotation. */
  readonly caPem: string | readonly string[];
  /** For deciding which previous CAs have expired. Default: now. */
  readonly now?: Date;
  readonly log?: Logger;
}

/** `created`, `updated` (a new CA, or other content replaced), or `unchanged`. */
export type PublishCaOutcome = "created" | "updated" | "unchanged";

/**
 * Makes `namespace/name` a ConfigMap whose only key, `ca.crt`, holds the CA bundle (see the module
 * comment). Creates it when missing; replaces it, guarded by resourceVersion, when its content
 * differs; re-reads and decides again after losing a race to another replica.
 */
export async function publishCaConfigMap(api: CertsApi, opts: PublishCaOptions): Promise<PublishCaOutcome> {
  const { namespace, name } = opts;
  const now = opts.now ?? new Date();
  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    const existing = await api.readConfigMap(namespace, name);
    const bundle = trustBundle(opts.caPem, existing?.data?.[CA_CERT_KEY], now);
    if (existing === undefined) {
      try {
        await api.createConfigMap(namespace, configMapFor(namespace, name, bundle.text));
        opts.log?.info({ configMap: `${namespace}/${name}` }, "published the CA in a ConfigMap");
        return "created";
      } catch (e) {
        if (!isCode(e, "Conflict")) throw e;
        continue;
      }
    }
    if (bundle.unchanged && onlyCaKey(existing)) return "unchanged";
    try {
      await api.replaceConfigMap(namespace, name, configMapFor(namespace, name, bundle.text, existing));
      opts.log?.info({ configMap: `${namespace}/${name}` }, "updated the CA in the ConfigMap");
      return "updated";
    } catch (e) {
      if (!isCode(e, "Conflict") && !isCode(e, "NotFound")) throw e;
    }
  }
  throw new AppError(
    "Conflict",
    `ConfigMap ${namespace}/${name} kept changing while it was being written (${MAX_ATTEMPTS} attempts); is another bootstrap running in a loop?`,
  );
}

/** True when the ConfigMap holds `ca.crt` and nothing else: no other key may pass for a CA. */
function onlyCaKey(cm: V1ConfigMap): boolean {
  return Object.keys(cm.data ?? {}).join() === CA_CERT_KEY && Object.keys(cm.binaryData ?? {}).length === 0;
}

function configMapFor(namespace: string, name: string, bundle: string, previous?: V1ConfigMap): V1ConfigMap {
  return {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: managedMetadata(namespace, name, previous),
    data: { [CA_CERT_KEY]: bundle },
  };
}

function isCode(e: unknown, code: AppError["code"]): boolean {
  return isAppError(e) && e.code === code;
}
