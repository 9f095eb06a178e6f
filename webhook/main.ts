/**
 * Webhook entry point: configuration, logger, app, HTTPS with certificate reload, in-cluster
 * certificate renewal when asked (`--renew-certificates`, certs/renewer.ts), and a graceful shutdown
 * on SIGTERM/SIGINT. Wiring only.
 */
import { defaultKubeApi } from "../certs/kube-client.js";
import { startCertificateRenewal, type RenewalLoop } from "../certs/renewer.js";
import { usage } from "../shared/config.js";
import { isAppError } from "../shared/errors.js";
import { startHttpsServer } from "../shared/https-server.js";
import { createLogger } from "../shared/logger.js";
import { mintPodId } from "../shared/signing.js";
import { WEBHOOK_OPTIONS, loadWebhookConfig } from "./config.js";
import { Registry } from "../shared/metrics.js";
import { createWebhookApp, createWebhookMetrics } from "./server.js";

async function main(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(usage("dynamic-volumes-webhook", Object.values(WEBHOOK_OPTIONS)));
    return 0;
  }
  const config = loadWebhookConfig(argv, process.env);
  if (process.getuid?.() === 0)
    process.stderr.write(
      "dynamic-volumes webhook: running as root; the shipped image runs it as a non-root user\n",
    );
  const root = createLogger({ name: "dynamic-volumes-webhook", level: config.logLevel });
  const log = root.child({ component: "webhook" });
  let ready = false;
  const metrics = createWebhookMetrics(new Registry().collectDefaults());
  const app = createWebhookApp({
    mutate: {
      root: config.root,
      defaultMountPath: config.defaultMountPath,
      volumeMode: config.volumeMode,
      signingKey: config.signingKey,
    },
    log,
    metrics,
    mintId: mintPodId,
    isReady: () => ready,
  });
  const server = await startHttpsServer({
    handler: app,
    tls: { certFile: config.tlsCertFile, keyFile: config.tlsKeyFile },
    host: config.listen.host,
    port: config.listen.port,
    log,
    onCertificate: (notAfter) => metrics.certificateExpiry.set(notAfter),
  });
  let renewal: RenewalLoop | undefined;
  if (config.certificateRenewal !== undefined) {
    const r = config.certificateRenewal;
    renewal = startCertificateRenewal(defaultKubeApi(), {
      ...r,
      intervalMs: r.checkIntervalMs,
      certFile: config.tlsCertFile,
      keyFile: config.tlsKeyFile,
      reload: () => server.reload(),
      log: root.child({ component: "certificates" }),
    });
  }
  ready = true;
  log.info(
    { host: config.listen.host, port: server.port, root: config.root, volumeMode: config.volumeMode },
    "serving AdmissionReview on /mutate",
  );

  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      ready = false;
      log.info({ signal }, "shutting down: draining in-flight requests");
      void Promise.all([renewal?.stop(), server.close(config.shutdownGraceMs)]).then(() => resolve());
    };
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
  log.info("stopped");
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(
      `dynamic-volumes webhook: ${isAppError(e) ? e.message : String((e as Error)?.stack ?? e)}\n`,
    );
    process.exit(isAppError(e) && e.code === "InvalidConfig" ? 2 : 1);
  },
);
