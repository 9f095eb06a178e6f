/**
 * From dvctl's global flags to a console connection: `--agent` directly, or discovery through the
 * kubeconfig and an API port-forward (discovery.ts, port-forward.ts). Files (token, CA, kubeconfig)
 * are read here, once per run.
 *
 * Tokens: `--token`, else `--token-file`; with discovery, else the kubeconfig user's bearer token.
 * The agent's CA: `--ca-file`; with discovery, else the ConfigMap the certificate bootstrap
 * publishes it in (never the TLS Secret, which holds the private keys).
 * With `--agent` the kubeconfig's credentials are never used: an address typed on the command line
 * must not receive the user's cluster token.
 */
import { readFileSync } from "node:fs";
import { AppError } from "../shared/errors.js";
import {
  parseAgentUrl,
  parseOutput,
  parseServerName,
  parseTimeoutSeconds,
  type OutputFormat,
  type PodRef,
} from "./args.js";
import { DvctlClient } from "./client.js";
import { AGENT_PORT, CA_CONFIG_MAP, DEFAULT_AGENT_SERVER_NAME } from "./agent-names.js";
import { UsageError } from "./errors.js";
import { PortForwardTunnel } from "./port-forward.js";

/** The global flags, validated. */
export interface Settings {
  readonly agent?: string;
  readonly token?: string;
  readonly tokenFile?: string;
  readonly caFile?: string;
  readonly tlsServerName?: string;
  readonly insecureSkipTlsVerify: boolean;
  readonly node?: string;
  readonly kubeconfig?: string;
  readonly context?: string;
  readonly output: OutputFormat;
  readonly debug: boolean;
  readonly requestTimeoutMs: number;
}

/** commander's option values to {@link Settings}; throws UsageError. */
export function settingsFrom(o: Record<string, unknown>): Settings {
  const str = (k: string): string | undefined => (typeof o[k] === "string" ? o[k] : undefined);
  const agent = str("agent");
  const tlsServerName = str("tlsServerName");
  const token = str("token");
  if (token !== undefined && str("tokenFile") !== undefined)
    throw new UsageError("--token and --token-file exclude each other");
  const node = str("node");
  if (node !== undefined && !/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(node))
    throw new UsageError(`--node: "${node.slice(0, 60)}" is not a node name`);
  const opt = <T>(key: string, v: T | undefined): Record<string, T> => (v === undefined ? {} : { [key]: v });
  return {
    ...opt("agent", agent !== undefined ? parseAgentUrl(agent) : undefined),
    ...opt("token", token !== undefined ? checkToken(token, "--token") : undefined),
    ...opt("tokenFile", str("tokenFile")),
    ...opt("caFile", str("caFile")),
    ...opt("tlsServerName", tlsServerName !== undefined ? parseServerName(tlsServerName) : undefined),
    insecureSkipTlsVerify: o.insecureSkipTlsVerify === true,
    ...opt("node", node),
    ...opt("kubeconfig", str("kubeconfig")),
    ...opt("context", str("context")),
    output: parseOutput(str("output") ?? "table"),
    debug: o.debug === true,
    requestTimeoutMs: parseTimeoutSeconds(str("requestTimeout") ?? "30", "--request-timeout") * 1000,
  };
}

/** The settings for `--debug`, with the token replaced. */
export function describeSettings(s: Settings): string {
  return JSON.stringify({ ...s, ...(s.token !== undefined ? { token: "[REDACTED]" } : {}) });
}

/** A token must fit in an HTTP header as one word; a token file may end with a newline. */
function checkToken(token: string, where: string): string {
  if (token === "") throw new AppError("Unauthenticated", `${where} is empty`);
  if (!/^[\x21-\x7e]+$/.test(token))
    throw new UsageError(`${where}: a bearer token is one word of printable ASCII characters`);
  return token;
}

function readFlagFile(flag: string, path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    throw new UsageError(
      `${flag}: cannot read "${path}": ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  }
}

/** Whom to connect for: the pod a command is about, or the node given with `--node`. */
export interface Target {
  readonly pod?: PodRef;
}

/** Where the console is; `connect` may be called again after a connection is lost. */
export interface Endpoint {
  connect(): Promise<DvctlClient>;
  close(): Promise<void>;
}

export interface EndpointIo {
  readonly debug: (line: string) => void;
  readonly warn: (line: string) => void;
}

/** Resolves the flags (and, without `--agent`, the kubeconfig and the API) to an {@link Endpoint}. */
export async function resolveEndpoint(s: Settings, target: Target, io: EndpointIo): Promise<Endpoint> {
  io.debug(`settings ${describeSettings(s)}`);
  const ca = s.caFile !== undefined ? readFlagFile("--ca-file", s.caFile) : undefined;
  if (s.insecureSkipTlsVerify)
    io.warn(
      "WARNING: --insecure-skip-tls-verify: the agent's certificate is not verified; anyone on the path could read the token",
    );
  let token = s.token;
  if (token === undefined && s.tokenFile !== undefined)
    token = checkToken(readFlagFile("--token-file", s.tokenFile).trim(), `--token-file "${s.tokenFile}"`);
  const tls = {
    ...(ca !== undefined ? { ca } : {}),
    insecureSkipTlsVerify: s.insecureSkipTlsVerify,
    requestTimeoutMs: s.requestTimeoutMs,
  };

  if (s.agent !== undefined) {
    if (token === undefined)
      throw new UsageError(
        "--agent needs --token or --token-file (the kubeconfig's credentials are only used when dvctl finds the agent itself)",
      );
    const url = s.agent;
    const bearer = token;
    io.debug(`connecting to ${url}`);
    return {
      connect: () =>
        DvctlClient.connect({
          url,
          token: bearer,
          ...tls,
          ...(s.tlsServerName !== undefined ? { servername: s.tlsServerName } : {}),
        }),
      close: async () => undefined,
    };
  }
  return discover(s, target, io, token, tls);
}

/**
 * The kubeconfig (`--kubeconfig`, else KUBECONFIG, ~/.kube/config or in-cluster; `--context`) and a
 * core/v1 client for it. `namespace` is the context's namespace, or `default`.
 */
export async function loadKubeConfig(s: Settings, io: EndpointIo) {
  // Loaded only here: --agent does not need the Kubernetes client, which takes a while to import.
  const k8s = await import("@kubernetes/client-node");
  const kc = new k8s.KubeConfig();
  try {
    if (s.kubeconfig !== undefined) kc.loadFromFile(s.kubeconfig);
    else kc.loadFromDefault();
    if (s.context !== undefined) kc.setCurrentContext(s.context);
  } catch (e) {
    throw new UsageError(`cannot load the kubeconfig: ${(e as Error).message}`);
  }
  const server = kc.getCurrentCluster()?.server ?? "(no cluster)";
  io.debug(`kubeconfig context "${kc.getCurrentContext()}", API server ${server}`);
  const namespace = kc.getContextObject(kc.getCurrentContext())?.namespace || "default";
  return { k8s, kc, server, namespace, core: kc.makeApiClient(k8s.CoreV1Api) };
}

async function discover(
  s: Settings,
  target: Target,
  io: EndpointIo,
  token: string | undefined,
  tls: { ca?: string; insecureSkipTlsVerify: boolean; requestTimeoutMs: number },
): Promise<Endpoint> {
  if (target.pod === undefined && s.node === undefined)
    throw new UsageError(
      "without --agent, dvctl finds the agent of a pod's node: give NS/POD, or --node NODE for this command",
    );
  const { k8s, kc, server, core } = await loadKubeConfig(s, io);
  const { agentCaFromConfigMap, agentPodOnNode, kubeconfigBearerToken, nodeOfPod } =
    await import("./discovery.js");
  const node = target.pod !== undefined ? await nodeOfPod(core, target.pod, server) : s.node!;
  const agent = await agentPodOnNode(core, node, server);
  io.debug(`node ${node}: agent pod ${agent.namespace}/${agent.name}`);
  let ca = tls.ca;
  if (ca === undefined && !tls.insecureSkipTlsVerify) {
    ca = await agentCaFromConfigMap(core, server);
    io.debug(`the agent's CA: ConfigMap ${CA_CONFIG_MAP} in namespace ${agent.namespace}`);
  }
  if (token === undefined) {
    token = await kubeconfigBearerToken(kc);
    if (token === undefined)
      throw new AppError(
        "Unauthenticated",
        `the kubeconfig user of context "${kc.getCurrentContext()}" has no bearer token (client certificates cannot be passed on to the console); give one with --token-file, e.g. from kubectl create token`,
      );
  }
  const tunnel = await PortForwardTunnel.start(
    new k8s.PortForward(kc),
    { namespace: agent.namespace, pod: agent.name, port: AGENT_PORT },
    io.debug,
  );
  const url = `wss://127.0.0.1:${tunnel.localPort}/console`;
  const servername = s.tlsServerName ?? DEFAULT_AGENT_SERVER_NAME;
  io.debug(`connecting to ${url} (certificate name ${servername})`);
  const bearer = token;
  return {
    connect: () =>
      DvctlClient.connect({
        url,
        token: bearer,
        ...tls,
        ...(ca !== undefined ? { ca } : {}),
        servername,
        explainFailure: () => tunnel.lastError,
      }),
    close: () => tunnel.close(),
  };
}
