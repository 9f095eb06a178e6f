/**
 * Where the manifests run the agents (`manifests/base/agent.yaml`), as dvctl's discovery looks for
 * them. Kept apart from discovery.ts so that the help text and `--agent` runs do not load the
 * Kubernetes client.
 */
export const AGENT_NAMESPACE = "dynamic-volumes";
export const AGENT_LABEL_SELECTOR = "app.kubernetes.io/name=dynamic-volumes-agent";
/** The agent container's console port (`containerPort: 9443`). */
export const AGENT_PORT = 9443;
/**
 * The name dvctl checks the agent's certificate against when it goes through a port-forward (the
 * headless Service's name, which the serving certificate of `dynamic-volumes-tls` carries).
 */
export const DEFAULT_AGENT_SERVER_NAME = `dynamic-volumes-agent.${AGENT_NAMESPACE}.svc`;
/**
 * The ConfigMap of {@link AGENT_NAMESPACE} in which the certificate bootstrap publishes the CA of
 * the agents' certificates (key {@link CA_CONFIG_MAP_KEY}, no private key), readable by every
 * authenticated user. dvctl verifies the agent with it when it finds the agent itself and no
 * `--ca-file` is given.
 */
export const CA_CONFIG_MAP = "dynamic-volumes-ca";
export const CA_CONFIG_MAP_KEY = "ca.crt";
/**
 * `source.component` and `reportingComponent` of the Events the agents record on pods
 * (agent/sources/kubernetes.ts), by which `dvctl describe` picks ours.
 */
export const EVENT_COMPONENT = "dynamic-volumes-agent";
