/**
 * Agent entry point: configuration, pod source (Kubernetes API or local files), the link to the
 * node's mounter and the reconciler, the wss console with `/healthz`, `/readyz` and `/metrics` when
 * `--listen` is given, and a clean stop on SIGTERM/SIGINT. Wiring only. The agent needs no
 * privilege: every change on the host is a request to the mounter (`agent/mounter/`).
 *
 * Stopping the agent does not unmount anything: the mounts and their clients belong to the
 * mounter, and a restarted agent adopts the healthy ones and has the stale ones made again.
 */
import { usage } from "../shared/config.js";
import { isAppError } from "../shared/errors.js";
import { startHttpsServer } from "../shared/https-server.js";
import { createLogger, type Logger } from "../shared/logger.js";
import {
  AuthenticatedUserAuthorizer,
  StaticTokenAuthenticator,
  SubjectAccessReviewAuthorizer,
  TokenReviewAuthenticator,
  type Authenticator,
  type Authorizer,
} from "./console/auth.js";
import { AGENT_OPTIONS, loadAgentConfig, type AgentConfig, type ConsoleConfig } from "./config.js";
import { ConsoleServer } from "./console/server.js";
import { createAgentHttpHandler, createAgentMetrics, type AgentMetrics } from "./console/http.js";
import type { PodSource } from "./sources/pod-source.js";
import { DEFAULT_RECONCILER_CONFIG, Reconciler } from "./reconcile/reconciler.js";
import { MounterLink } from "./reconcile/mounter-link.js";
import { createReconcilerMetrics } from "./reconcile/metrics.js";
import { Registry } from "../shared/metrics.js";
import { LocalPodSource } from "./sources/local.js";

async function main(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(usage("dynamic-volumes-agent", Object.values(AGENT_OPTIONS)));
    return 0;
  }
  const config = loadAgentConfig(argv, process.env);
  const log = createLogger({ name: "dynamic-volumes-agent", level: config.logLevel }).child({
    node: config.nodeName,
  });

  let source: PodSource;
  if (config.local) {
    source = new LocalPodSource({ ...config.local, log });
  } else {
    const { KubernetesPodSource } = await import("./sources/kubernetes.js");
    source = await KubernetesPodSource.fromDefaultConfig({ nodeName: config.nodeName, log });
  }
  // One registry for the reconciler and the console; served on /metrics when --listen is set.
  const metrics = createAgentMetrics(new Registry().collectDefaults());
  // The mounter reports dead clients and comes back after restarts; the reconciler, built with
  // the link, looks at the mounts then.
  const later: { reconciler?: Reconciler } = {};
  const link = new MounterLink({
    root: config.root,
    socketPath: config.mounterSocket,
    log: log.child({ component: "mounter-link" }),
    onClientExit: (mp) => later.reconciler?.mountPointChanged(mp),
    onReconnect: () => later.reconciler?.resyncNow(),
  });
  link.start();
  metrics.watchMounter(() => link.connected);
  const reconciler = new Reconciler(
    source,
    link,
    {
      ...DEFAULT_RECONCILER_CONFIG,
      root: config.root,
      signingKey: config.signingKey,
      defaultMounter: config.defaultMounter,
      concurrency: config.concurrency,
      resyncMs: config.resyncMs,
      backoffMaxMs: config.backoffMaxMs,
    },
    log,
    undefined,
    createReconcilerMetrics(metrics.registry),
    { records: link, fs: link },
  );
  later.reconciler = reconciler;
  await reconciler.start();
  const stopConsole = config.console
    ? await startConsole(config, config.console, reconciler, source, log, metrics, () => link.connected)
    : async (): Promise<void> => undefined;
  log.info(
    { root: config.root, mode: config.local ? "local" : "kubernetes", pods: reconciler.podViews().length },
    "agent started",
  );

  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      log.info({ signal }, "stopping; mounts stay in place");
      void stopConsole()
        .catch((e: unknown) => log.warn({ err: (e as Error).message }, "console did not stop cleanly"))
        .then(() => reconciler.stop())
        .then(() => link.stop())
        .then(resolve);
    };
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
  return 0;
}

/** Serves the console, `/healthz`, `/readyz` and `/metrics`; returns the function that stops them. */
async function startConsole(
  config: AgentConfig,
  c: ConsoleConfig,
  reconciler: Reconciler,
  source: PodSource,
  log: Logger,
  metrics: AgentMetrics,
  mounterReachable: () => boolean,
): Promise<() => Promise<void>> {
  for (const w of c.tokenWarnings) log.warn(w);
  let authenticator: Authenticator;
  let authorizer: Authorizer;
  if (c.tokens !== undefined) {
    authenticator = new StaticTokenAuthenticator(c.tokens);
    authorizer = new AuthenticatedUserAuthorizer();
  } else {
    const k8s = await import("@kubernetes/client-node");
    const kc = new k8s.KubeConfig();
    kc.loadFromDefault();
    authenticator = new TokenReviewAuthenticator(kc.makeApiClient(k8s.AuthenticationV1Api), {
      audiences: c.audiences,
      log,
    });
    authorizer = new SubjectAccessReviewAuthorizer(kc.makeApiClient(k8s.AuthorizationV1Api));
  }
  let ready = true;
  const https = await startHttpsServer({
    handler: createAgentHttpHandler({
      registry: metrics.registry,
      isReady: () => ready && mounterReachable(),
    }),
    tls: c.tls,
    host: c.host,
    port: c.port,
    log,
    onCertificate: (notAfter) => metrics.certificateExpiry.set(notAfter),
  });
  const consoleServer = new ConsoleServer({
    server: https.server,
    reconciler,
    source,
    nodeName: config.nodeName,
    authenticator,
    authorizer,
    metrics,
    log,
    limits: {
      maxConnections: c.maxConnections,
      maxPayloadBytes: c.maxPayloadBytes,
      requestsPerSecond: c.requestsPerSecond,
      burst: c.burst,
      maxUnauthenticated: c.maxUnauthenticated,
      maxUnauthenticatedPerAddress: c.maxUnauthenticatedPerAddress,
      maxHandshakesPerAddress: c.maxHandshakesPerAddress,
      authTimeoutMs: c.authTimeoutMs,
    },
  });
  log.info(
    { listen: `${c.host}:${https.port}`, auth: c.tokens ? "token-file" : "kubernetes" },
    "console listening",
  );
  return async () => {
    ready = false;
    await consoleServer.close();
    await https.close(5000);
  };
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(
      `dynamic-volumes agent: ${isAppError(e) ? e.message : String((e as Error)?.stack ?? e)}\n`,
    );
    process.exit(isAppError(e) && e.code === "InvalidConfig" ? 2 : 1);
  },
);
