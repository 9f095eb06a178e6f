/**
 * Agent entry point: configuration, host set-up (shared root), pod source (Kubernetes API or local
 * files), FUSE engine and reconciler, and a clean stop on SIGTERM/SIGINT. Wiring only.
 *
 * Stopping the agent does not unmount anything: mounts outlive the agent, and a restarted agent
 * adopts the healthy ones and remounts the stale ones.
 */
import { usage } from "../shared/config.js";
import { isAppError } from "../shared/errors.js";
import { createLogger } from "../shared/logger.js";
import { AGENT_OPTIONS, loadAgentConfig } from "./config.js";
import { FuseMounter } from "./fuse-mount.js";
import { ensureSharedRoot } from "./host.js";
import type { PodSource } from "./pod-source.js";
import { DEFAULT_RECONCILER_CONFIG, Reconciler } from "./reconciler.js";
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
  await ensureSharedRoot(config.root, log);

  let source: PodSource;
  if (config.local) {
    source = new LocalPodSource({ ...config.local, log });
  } else {
    const { KubernetesPodSource } = await import("./sources/kubernetes.js");
    source = await KubernetesPodSource.fromDefaultConfig({ nodeName: config.nodeName, log });
  }
  const engine = new FuseMounter({
    readyTimeoutMs: config.mountTimeoutMs,
    log: log.child({ component: "fuse" }),
  });
  const reconciler = new Reconciler(
    source,
    engine,
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
  );
  await reconciler.start();
  log.info(
    { root: config.root, mode: config.local ? "local" : "kubernetes", pods: reconciler.podViews().length },
    "agent started",
  );

  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      log.info({ signal }, "stopping; mounts stay in place");
      void reconciler.stop().then(resolve);
    };
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
  return 0;
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
