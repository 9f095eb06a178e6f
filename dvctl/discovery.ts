/**
 * Finding the agent without `--agent`, through the kubeconfig: the pod's `spec.nodeName`, then the
 * agent pod of that DaemonSet on that node, the CA that signed its certificate, and the kubeconfig
 * user's bearer token for the console. dvctl never reads the agents' TLS Secret (it holds their
 * private key): the CA comes from `--ca-file`, or else from the ConfigMap in which the certificate
 * bootstrap publishes it alone. The Kubernetes API is passed in (a `CoreV1Api` or a fake), so these
 * functions only import the client's types and its error class.
 */
import type { CoreV1Api, KubeConfig, V1Pod } from "@kubernetes/client-node";
import type { RequestOptions } from "node:https";
import { AppError } from "../shared/errors.js";
import { kubeError } from "../shared/kube-errors.js";
import { AGENT_LABEL_SELECTOR, AGENT_NAMESPACE, CA_CONFIG_MAP, CA_CONFIG_MAP_KEY } from "./agent-names.js";
import type { PodRef } from "./args.js";

export {
  AGENT_LABEL_SELECTOR,
  AGENT_NAMESPACE,
  AGENT_PORT,
  CA_CONFIG_MAP,
  CA_CONFIG_MAP_KEY,
  DEFAULT_AGENT_SERVER_NAME,
} from "./agent-names.js";

export type PodApi = Pick<CoreV1Api, "readNamespacedPod" | "listNamespacedPod">;
export type ConfigMapApi = Pick<CoreV1Api, "readNamespacedConfigMap">;

export interface AgentPod {
  readonly namespace: string;
  readonly name: string;
  readonly node: string;
}

/** Reads one pod; an API failure becomes the error kubectl users would recognise. */
export async function readPod(api: PodApi, ref: PodRef, server: string): Promise<V1Pod> {
  try {
    return await api.readNamespacedPod({ namespace: ref.namespace, name: ref.pod });
  } catch (e) {
    throw kubeError(
      e,
      `reading pod ${ref.namespace}/${ref.pod}`,
      server,
      `get on pods in namespace "${ref.namespace}"`,
    );
  }
}

/** The node a pod runs on. NotFound for no such pod, Conflict while it is not scheduled. */
export async function nodeOfPod(api: PodApi, ref: PodRef, server: string): Promise<string> {
  const pod = await readPod(api, ref, server);
  const node = pod.spec?.nodeName;
  if (node === undefined || node === "")
    throw new AppError(
      "Conflict",
      `pod ${ref.namespace}/${ref.pod} is not scheduled on a node yet, so no agent serves it; wait until it is`,
    );
  return node;
}

function isReady(p: V1Pod): boolean {
  return p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
}

/**
 * The agent pod on `node`: running ones only, ready ones first (a rolling update briefly runs two).
 * Unavailable when the node has none.
 */
export async function agentPodOnNode(api: PodApi, node: string, server: string): Promise<AgentPod> {
  let pods: V1Pod[];
  try {
    pods = (
      await api.listNamespacedPod({
        namespace: AGENT_NAMESPACE,
        labelSelector: AGENT_LABEL_SELECTOR,
        fieldSelector: `spec.nodeName=${node}`,
      })
    ).items;
  } catch (e) {
    throw kubeError(
      e,
      `listing the agent pods on node ${node}`,
      server,
      `list on pods in namespace "${AGENT_NAMESPACE}"`,
    );
  }
  // The field selector is the API server's job; checked again so that a wrong answer cannot send
  // the token to another node's agent.
  const here = pods.filter((p) => p.spec?.nodeName === node && p.metadata?.name !== undefined);
  const running = here
    .filter((p) => p.status?.phase === "Running" && p.metadata?.deletionTimestamp === undefined)
    .sort(
      (a, b) => Number(isReady(b)) - Number(isReady(a)) || a.metadata!.name!.localeCompare(b.metadata!.name!),
    );
  const chosen = running[0];
  if (chosen === undefined) {
    const seen = here.map((p) => `${p.metadata!.name} (${p.status?.phase ?? "unknown"})`).join(", ");
    throw new AppError(
      "Unavailable",
      seen !== ""
        ? `the agent on node ${node} is not running: ${seen}; see kubectl -n ${AGENT_NAMESPACE} describe pod`
        : `no dynamic-volumes agent runs on node ${node}; check the DaemonSet: kubectl -n ${AGENT_NAMESPACE} get pods -l ${AGENT_LABEL_SELECTOR} -o wide`,
    );
  }
  return { namespace: AGENT_NAMESPACE, name: chosen.metadata!.name!, node };
}

/** The way round a missing ConfigMap, for the errors below. */
const CA_FILE_HINT = "or pass the CA that signed the agents' certificates with --ca-file";

/**
 * The CA (PEM) that signed the agents' certificates, from the ConfigMap {@link CA_CONFIG_MAP} that
 * the certificate bootstrap writes. Unavailable, saying what to do, when it is missing or holds no
 * certificate; Forbidden, naming the RBAC, when the user may not read it.
 */
export async function agentCaFromConfigMap(api: ConfigMapApi, server: string): Promise<string> {
  const where = `ConfigMap ${CA_CONFIG_MAP} in namespace ${AGENT_NAMESPACE}`;
  let data: Record<string, string> | undefined;
  try {
    data = (await api.readNamespacedConfigMap({ namespace: AGENT_NAMESPACE, name: CA_CONFIG_MAP })).data;
  } catch (e) {
    const err = kubeError(
      e,
      `reading the agents' CA from ${where}`,
      server,
      `get on configmaps "${CA_CONFIG_MAP}" in namespace "${AGENT_NAMESPACE}" (the manifests grant it to every authenticated user)`,
    );
    if (err.code !== "NotFound") throw err;
    throw new AppError(
      "Unavailable",
      `cannot verify the agent: the ${where} does not exist. The webhook's certificate bootstrap writes it when a webhook pod starts (see its init container: kubectl -n ${AGENT_NAMESPACE} logs deployment/dynamic-volumes-webhook -c certs); with cert-manager, publish it as docs/install.md says; ${CA_FILE_HINT}`,
      { cause: e },
    );
  }
  const pem = data?.[CA_CONFIG_MAP_KEY];
  if (pem === undefined || !pem.includes("-----BEGIN CERTIFICATE-----"))
    throw new AppError(
      "Unavailable",
      `cannot verify the agent: the ${where} has no certificate under "${CA_CONFIG_MAP_KEY}"; ${CA_FILE_HINT}`,
    );
  return pem;
}

/**
 * The bearer token the kubeconfig's current user sends to the API server, from a static token, a
 * token file, an exec plugin or an auth provider: whatever `applyToHTTPSOptions` puts in the
 * `Authorization` header. Undefined for users with client certificates or basic auth only.
 */
export async function kubeconfigBearerToken(kc: KubeConfig): Promise<string | undefined> {
  const opts: RequestOptions = {};
  await kc.applyToHTTPSOptions(opts);
  const headers = (opts.headers ?? {}) as Record<string, unknown>;
  const value = headers.Authorization ?? headers.authorization;
  if (typeof value !== "string") return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(value);
  return m?.[1];
}
