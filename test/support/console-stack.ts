/**
 * An agent for console tests: local pod source on a temp directory, fake mount engine, real
 * reconciler, real HTTPS server (test PKI) with `/healthz`, `/readyz`, `/metrics` and the console.
 *
 *     const stack = new ConsoleStack({ pki, authenticator, authorizer });
 *     stack.writePod("trainer.json", stack.mk("team-a", "trainer", "a=bucket-a"));
 *     await stack.start();
 *     ...
 *     await stack.close();
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Authenticator, Authorizer } from "../../agent/console/auth.js";
import { ConsoleServer, type ConsoleLimits } from "../../agent/console/server.js";
import { createAgentHttpHandler, createAgentMetrics, type AgentMetrics } from "../../agent/console/http.js";
import { DEFAULT_RECONCILER_CONFIG, Reconciler } from "../../agent/reconcile/reconciler.js";
import { LocalPodSource } from "../../agent/sources/local.js";
import { startHttpsServer, type RunningHttpsServer } from "../../shared/https-server.js";
import { createLogger } from "../../shared/logger.js";
import { ANNOTATIONS } from "../../shared/names.js";
import { injectedPod, type Pod } from "../../scripts/lib/pods.js";
import { FakeEngine } from "./fake-engine.js";
import type { TestPki } from "./tls.js";

export const SIGNING_KEY = Buffer.from("console-test-signing-key-0123456");
export const NODE_NAME = "node-1";
const log = createLogger({ name: "test", level: process.env.TEST_LOG_LEVEL ?? "silent" });

export interface ConsoleStackOptions {
  readonly pki: TestPki;
  readonly authenticator: Authenticator;
  readonly authorizer: Authorizer;
  readonly limits?: Partial<ConsoleLimits>;
  readonly namespaces?: readonly string[];
}

export class ConsoleStack {
  readonly dir = mkdtempSync(join(tmpdir(), "dv-console-"));
  readonly root = join(this.dir, "root");
  readonly podsDir = join(this.dir, "pods");
  readonly engine = new FakeEngine();
  readonly metrics: AgentMetrics = createAgentMetrics();
  readonly source: LocalPodSource;
  readonly reconciler: Reconciler;
  https: RunningHttpsServer | undefined;
  console: ConsoleServer | undefined;

  constructor(private readonly opts: ConsoleStackOptions) {
    mkdirSync(this.podsDir);
    for (const ns of opts.namespaces ?? ["team-a", "team-b"]) {
      mkdirSync(join(this.dir, "secrets", ns), { recursive: true });
      writeFileSync(
        join(this.dir, "secrets", ns, "dynamic-volumes-credentials.json"),
        JSON.stringify({
          stringData: {
            endpoint: "http://127.0.0.1:9",
            region: "us-east-1",
            accessKeyID: "AK",
            secretAccessKey: "SK",
          },
        }),
      );
    }
    this.source = new LocalPodSource({
      podsDir: this.podsDir,
      secretsDir: join(this.dir, "secrets"),
      log,
      rescanMs: 50,
    });
    this.reconciler = new Reconciler(
      this.source,
      this.engine,
      {
        ...DEFAULT_RECONCILER_CONFIG,
        root: this.root,
        signingKey: SIGNING_KEY,
        defaultMounter: "s3fs",
        backoffBaseMs: 50,
        backoffMaxMs: 200,
        resyncMs: 200,
      },
      log,
    );
  }

  get port(): number {
    return this.https!.port;
  }

  get ca(): string {
    return this.opts.pki.ca.certPem;
  }

  /**
   * True when the engine holds `n` mounts and the reconciler reports `n` entries mounted: the engine
   * has a mount a little before the reconciler has recorded it and says so.
   */
  settledMounts(n: number): boolean {
    const mounted = this.reconciler
      .podViews()
      .flatMap((v) => Object.values(this.reconciler.statusOf(v.key) ?? {}))
      .filter((m) => m.state === "mounted").length;
    return this.engine.mounted.size === n && mounted === n;
  }

  /** A pod as the webhook would have injected it. */
  mk(namespace: string, name: string, buckets?: string): Pod {
    return injectedPod(
      { namespace, name, ...(buckets !== undefined ? { buckets } : {}) },
      { root: this.root, signingKey: SIGNING_KEY },
    );
  }

  writePod(file: string, pod: unknown): void {
    writeFileSync(join(this.podsDir, file), JSON.stringify(pod, null, 2));
  }

  podText(file: string): string {
    return readFileSync(join(this.podsDir, file), "utf8");
  }

  /** The pod file's `dynamic-volumes/buckets` annotation, as stored. */
  buckets(file: string): string | undefined {
    return (JSON.parse(this.podText(file)) as Pod).metadata.annotations[ANNOTATIONS.buckets];
  }

  async start(): Promise<void> {
    await this.reconciler.start();
    this.https = await startHttpsServer({
      handler: createAgentHttpHandler({ registry: this.metrics.registry, isReady: () => true }),
      tls: { certFile: this.opts.pki.certFile, keyFile: this.opts.pki.keyFile },
      host: "127.0.0.1",
      port: 0,
      log,
    });
    this.console = new ConsoleServer({
      server: this.https.server,
      reconciler: this.reconciler,
      source: this.source,
      nodeName: NODE_NAME,
      authenticator: this.opts.authenticator,
      authorizer: this.opts.authorizer,
      metrics: this.metrics,
      log,
      pollMs: 50,
      ...(this.opts.limits !== undefined ? { limits: this.opts.limits } : {}),
    });
  }

  async close(): Promise<void> {
    await this.console?.close();
    await this.https?.close(500);
    await this.reconciler.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
