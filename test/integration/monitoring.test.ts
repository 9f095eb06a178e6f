/**
 * manifests/monitoring against the real programs: the webhook app and the agent's HTTP handler, each
 * behind the real HTTPS server with its real registry, are scraped on /metrics, and every metric
 * name and label the Grafana dashboard and the PrometheusRule use must be in the scrape. Also checks
 * the rule file's and the dashboard's structure, and the certificate-expiry gauges.
 */
import { expect } from "chai";
import { X509Certificate } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { load } from "js-yaml";
import { createAgentHttpHandler, createAgentMetrics, type AgentMetrics } from "../../agent/console/http.js";
import { createReconcilerMetrics, type ReconcilerMetrics } from "../../agent/reconcile/metrics.js";
import { certExpiry, generateServingCert } from "../../certs/generate.js";
import { startHttpsServer, type RunningHttpsServer } from "../../shared/https-server.js";
import { createLogger } from "../../shared/logger.js";
import { Registry } from "../../shared/metrics.js";
import { mintPodId } from "../../shared/signing.js";
import { createWebhookApp, createWebhookMetrics, type WebhookMetrics } from "../../webhook/server.js";
import { admissionReview, deploymentPod } from "../fixtures/pods.js";
import { httpsRequest } from "../support/https-client.js";
import { TEST_SERVER_NAME, makeAgentTestPki, makeTestPki, type TestPki } from "../support/tls.js";

const REPO_ROOT = join(import.meta.dirname, "..", "..");
const MONITORING_DIR = join(REPO_ROOT, "manifests", "monitoring");
const silent = createLogger({ name: "test", level: "silent" });

/** Labels Prometheus adds from the scrape target (ServiceMonitor), never in the exposition itself. */
const TARGET_LABELS = new Set(["job", "instance", "namespace", "pod", "service", "endpoint", "container"]);

interface Family {
  type: string;
  /** Label names seen on the family's samples, per sample name (`x`, `x_bucket`, `x_sum`, ...). */
  samples: Map<string, Set<string>>;
}

/** Parses Prometheus text exposition: families from `# TYPE`, label names from the samples. */
export function parseExposition(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const owner = (sample: string): Family | undefined => {
    const exact = families.get(sample);
    if (exact) return exact;
    const m = /^(.*)_(bucket|sum|count)$/.exec(sample);
    const base = m ? families.get(m[1] ?? "") : undefined;
    return base && (base.type === "histogram" || base.type === "summary") ? base : undefined;
  };
  for (const line of text.split("\n")) {
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)$/.exec(line);
    if (type) {
      families.set(type[1] ?? "", { type: type[2] ?? "", samples: new Map() });
      continue;
    }
    if (line === "" || line.startsWith("#")) continue;
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+/.exec(line);
    if (!sample) throw new Error(`unparsable exposition line: ${line}`);
    const [, name = "", labelText = ""] = sample;
    const family = owner(name);
    if (!family) throw new Error(`sample ${name} has no # TYPE line`);
    const labels = family.samples.get(name) ?? new Set<string>();
    for (const [, l = ""] of labelText.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) labels.add(l);
    family.samples.set(name, labels);
  }
  return families;
}

export interface MetricRef {
  /** Where it was found: a panel title or an alert name. */
  where: string;
  metric: string;
  labels: string[];
}

/**
 * The dynamic_volumes_ metrics a PromQL expression reads, each with the labels it needs: those of
 * its own `{...}` matchers, plus every `by (...)` / `without (...)` label of the expression
 * (rough: grouping labels are applied to each metric of the expression).
 */
export function promqlRefs(where: string, expr: string): MetricRef[] {
  const grouping = [...expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)].flatMap(([, list = ""]) =>
    list
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== ""),
  );
  return [...expr.matchAll(/\b(dynamic_volumes_[a-z_]+)(\{[^}]*\})?/g)].map(([, metric = "", sel = ""]) => {
    const matchers = [...sel.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g)].map(([, l = ""]) => l);
    return { where, metric, labels: [...new Set([...matchers, ...grouping])] };
  });
}

/** Each reference's metric or label the scrape lacks, as readable lines; [] when all are there. */
export function missingFrom(scrape: Map<string, Family>, refs: readonly MetricRef[]): string[] {
  const missing: string[] = [];
  for (const r of refs) {
    const suffix = /^(.*)_(bucket|sum|count)$/.exec(r.metric);
    let family = scrape.get(r.metric);
    let sampleName = r.metric;
    if (!family && suffix) {
      const base = scrape.get(suffix[1] ?? "");
      if (base && (base.type === "histogram" || base.type === "summary")) family = base;
    }
    if (!family) {
      missing.push(`${r.where}: metric ${r.metric} is not in the scrape`);
      continue;
    }
    if (family.samples.size === 0) {
      missing.push(`${r.where}: metric ${r.metric} has no sample in the scrape`);
      continue;
    }
    // A bare histogram name is read through its _bucket series.
    if (!family.samples.has(sampleName)) sampleName = `${r.metric}_bucket`;
    const seen = new Set([...(family.samples.get(sampleName) ?? [])]);
    for (const l of r.labels)
      if (!TARGET_LABELS.has(l) && !seen.has(l))
        missing.push(`${r.where}: metric ${r.metric} has no label ${l} in the scrape`);
  }
  return missing;
}

interface Rule {
  alert?: unknown;
  expr?: unknown;
  for?: unknown;
  labels?: { severity?: unknown };
  annotations?: { summary?: unknown };
}
interface RuleFile {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string };
  spec: { groups: Array<{ name: string; rules: Rule[] }> };
}
interface Panel {
  title: string;
  type: string;
  datasource?: { type?: string; uid?: string };
  targets?: Array<{ expr?: string; refId?: string }>;
}

const ruleFile = load(readFileSync(join(MONITORING_DIR, "prometheusrule.yaml"), "utf8")) as RuleFile;
const dashboardText = readFileSync(join(MONITORING_DIR, "dashboard.json"), "utf8");
const dashboard = JSON.parse(dashboardText) as {
  panels: Panel[];
  templating: { list: Array<{ name: string }> };
};

function dashboardRefs(): MetricRef[] {
  return dashboard.panels.flatMap((p) => (p.targets ?? []).flatMap((t) => promqlRefs(p.title, t.expr ?? "")));
}
function ruleRefs(): MetricRef[] {
  return ruleFile.spec.groups.flatMap((g) =>
    g.rules.flatMap((r) => promqlRefs(String(r.alert), String(r.expr))),
  );
}

const notAfterOf = (pem: string): number => Date.parse(new X509Certificate(pem).validTo) / 1000;

describe("monitoring: dashboard and alerts against the real /metrics", function () {
  let webhookPki: TestPki;
  let agentPki: TestPki;
  let webhookSrv: RunningHttpsServer;
  let agentSrv: RunningHttpsServer;
  let webhookMetrics: WebhookMetrics;
  let agentMetrics: AgentMetrics;
  let reconcilerMetrics: ReconcilerMetrics;
  let mounterConnected = false;

  const scrape = async (srv: RunningHttpsServer, pki: TestPki, servername: string): Promise<string> => {
    const r = await httpsRequest({ port: srv.port, path: "/metrics", ca: pki.ca.certPem, servername });
    expect(r.status).to.equal(200);
    return r.text;
  };
  const scrapeWebhook = () => scrape(webhookSrv, webhookPki, TEST_SERVER_NAME);
  const scrapeAgent = () => scrape(agentSrv, agentPki, "localhost");
  const both = async () => {
    const all = new Map(parseExposition(await scrapeWebhook()));
    for (const [k, v] of parseExposition(await scrapeAgent())) all.set(k, v);
    return all;
  };
  const gauge = (text: string, name: string): number => {
    const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
    if (!m) throw new Error(`${name} not in the scrape`);
    return Number(m[1]);
  };

  before(async () => {
    webhookPki = makeTestPki();
    agentPki = makeAgentTestPki();
    // As webhook/main.ts wires them.
    webhookMetrics = createWebhookMetrics(new Registry());
    const app = createWebhookApp({
      mutate: {
        root: "/var/lib/dynamic-volumes",
        defaultMountPath: "/datasets",
        signingKey: Buffer.from("monitoring-signing-key-0123456789"),
      },
      log: silent,
      metrics: webhookMetrics,
      mintId: mintPodId,
    });
    webhookSrv = await startHttpsServer({
      handler: app,
      tls: { certFile: webhookPki.certFile, keyFile: webhookPki.keyFile },
      host: "127.0.0.1",
      port: 0,
      log: silent,
      pollIntervalMs: 60_000,
      onCertificate: (notAfter) => webhookMetrics.certificateExpiry.set(notAfter),
    });
    // As agent/main.ts wires them: one registry for the console and the reconciler.
    agentMetrics = createAgentMetrics(new Registry());
    reconcilerMetrics = createReconcilerMetrics(agentMetrics.registry);
    agentMetrics.watchMounter(() => mounterConnected);
    agentSrv = await startHttpsServer({
      handler: createAgentHttpHandler({ registry: agentMetrics.registry, isReady: () => true }),
      tls: { certFile: agentPki.certFile, keyFile: agentPki.keyFile },
      host: "127.0.0.1",
      port: 0,
      log: silent,
      pollIntervalMs: 60_000,
      onCertificate: (notAfter) => agentMetrics.certificateExpiry.set(notAfter),
    });

    // Traffic, so that the series with labels exist as they do in a running cluster. The webhook's
    // through a real review; the agent's as the reconciler records them (reconciler.ts), since a
    // real mount needs a mounter and FUSE.
    const r = await httpsRequest({
      port: webhookSrv.port,
      path: "/mutate",
      ca: webhookPki.ca.certPem,
      servername: TEST_SERVER_NAME,
      body: JSON.stringify(admissionReview(deploymentPod())),
    });
    expect(r.status).to.equal(200);
    reconcilerMetrics.mounts.set({ state: "ready", mounter: "s3fs" }, 1);
    reconcilerMetrics.mountDuration.observe({ mounter: "s3fs", result: "mounted" }, 0.3);
    reconcilerMetrics.failures.inc({ reason: "NotFound" });
    agentMetrics.consoleUnauthenticated.set({ stage: "handshake" }, 0);
  });

  after(async () => {
    await webhookSrv?.close(1000);
    await agentSrv?.close(1000);
    if (webhookPki) rmSync(webhookPki.dir, { recursive: true, force: true });
    if (agentPki) rmSync(agentPki.dir, { recursive: true, force: true });
  });

  describe("the certificate-expiry gauges", () => {
    it("the webhook's equals the served certificate's notAfter", async () => {
      const want = notAfterOf(webhookPki.serving.certPem);
      expect(want).to.equal(certExpiry(webhookPki.serving.certPem).getTime() / 1000);
      expect(
        gauge(await scrapeWebhook(), "dynamic_volumes_webhook_certificate_expiry_timestamp_seconds"),
      ).to.equal(want);
      expect(webhookSrv.certificateNotAfter()).to.equal(want);
    });

    it("the agent's equals the console certificate's notAfter", async () => {
      expect(
        gauge(await scrapeAgent(), "dynamic_volumes_agent_certificate_expiry_timestamp_seconds"),
      ).to.equal(notAfterOf(agentPki.serving.certPem));
    });

    it("follows a reloaded certificate", async () => {
      const before = notAfterOf(webhookPki.serving.certPem);
      const renewed = generateServingCert({
        ca: webhookPki.ca,
        service: "dynamic-volumes-webhook",
        namespace: "dynamic-volumes",
        extraDnsNames: ["localhost"],
        extraIps: ["127.0.0.1"],
        validityDays: 5,
      });
      writeFileSync(webhookPki.certFile, renewed.certPem);
      writeFileSync(webhookPki.keyFile, renewed.keyPem, { mode: 0o600 });
      expect(webhookSrv.reload()).to.equal(true);
      const after = gauge(
        await scrapeWebhook(),
        "dynamic_volumes_webhook_certificate_expiry_timestamp_seconds",
      );
      expect(after).to.equal(notAfterOf(renewed.certPem));
      expect(after).to.not.equal(before);
      expect(after - Date.now() / 1000).to.be.within(4 * 86400, 5 * 86400 + 60);
    });
  });

  it("the mounter-connected gauge reads the link's state at each scrape", async () => {
    mounterConnected = false;
    expect(gauge(await scrapeAgent(), "dynamic_volumes_agent_mounter_connected")).to.equal(0);
    mounterConnected = true;
    expect(gauge(await scrapeAgent(), "dynamic_volumes_agent_mounter_connected")).to.equal(1);
  });

  describe("the dashboard", () => {
    it("parses, and every panel has a datasource and PromQL targets", () => {
      expect(dashboard.panels).to.not.be.empty;
      expect(dashboard.templating.list.map((v) => v.name)).to.include("datasource");
      for (const p of dashboard.panels) {
        expect(p.datasource?.uid, p.title).to.equal("${datasource}");
        expect(p.targets, p.title).to.be.an("array").that.is.not.empty;
        for (const t of p.targets ?? [])
          expect(t.expr, p.title)
            .to.be.a("string")
            .and.match(/dynamic_volumes_/);
      }
    });

    it("uses only metrics and labels the webhook and the agent export", async () => {
      const refs = dashboardRefs();
      expect(refs.length).to.be.greaterThan(10);
      expect(missingFrom(await both(), refs)).to.deep.equal([]);
    });

    it("is shipped as a ConfigMap the Grafana sidecar loads, outside the main install", () => {
      const k = load(readFileSync(join(MONITORING_DIR, "kustomization.yaml"), "utf8")) as {
        configMapGenerator: Array<{ files: string[]; options: { labels: Record<string, string> } }>;
      };
      const gen = k.configMapGenerator.find((g) => g.files.includes("dashboard.json"));
      expect(gen?.options.labels.grafana_dashboard).to.equal("1");
      for (const f of ["manifests/kustomization.yaml", "manifests/base/kustomization.yaml"])
        expect(readFileSync(join(REPO_ROOT, f), "utf8"), f).to.not.include("monitoring");
    });
  });

  describe("the PrometheusRule", () => {
    it("has groups of rules with alert, expr, for, a severity and a summary", () => {
      expect(ruleFile.apiVersion).to.equal("monitoring.coreos.com/v1");
      expect(ruleFile.kind).to.equal("PrometheusRule");
      expect(ruleFile.spec.groups).to.be.an("array").that.is.not.empty;
      const names = new Set<string>();
      for (const g of ruleFile.spec.groups) {
        expect(g.name).to.be.a("string");
        expect(g.rules).to.be.an("array").that.is.not.empty;
        for (const r of g.rules) {
          expect(r.alert)
            .to.be.a("string")
            .and.match(/^[A-Z][A-Za-z0-9]+$/);
          expect(names.has(r.alert as string), `duplicate ${String(r.alert)}`).to.equal(false);
          names.add(r.alert as string);
          expect(r.expr, String(r.alert)).to.be.a("string").that.is.not.empty;
          expect(r.for, String(r.alert))
            .to.be.a("string")
            .and.match(/^\d+[smhd]$/);
          expect(r.labels?.severity, String(r.alert)).to.be.oneOf(["warning", "critical"]);
          expect(r.annotations?.summary, String(r.alert)).to.be.a("string").that.is.not.empty;
        }
      }
    });

    it("alerts on every condition the install cares about", () => {
      const exprs = ruleFile.spec.groups.flatMap((g) => g.rules.map((r) => String(r.expr))).join("\n");
      for (const m of [
        "dynamic_volumes_mount_failures_total",
        "dynamic_volumes_stale_recoveries_total",
        'up{job="dynamic-volumes-agent"}',
        "absent(",
        "dynamic_volumes_agent_mounter_connected",
        "dynamic_volumes_webhook_internal_errors_total",
        "dynamic_volumes_webhook_request_duration_seconds_bucket",
        "dynamic_volumes_webhook_certificate_expiry_timestamp_seconds",
        "dynamic_volumes_agent_certificate_expiry_timestamp_seconds",
      ])
        expect(exprs).to.include(m);
    });

    it("uses only metrics and labels the webhook and the agent export", async () => {
      const refs = ruleRefs();
      expect(refs.length).to.be.greaterThan(8);
      expect(missingFrom(await both(), refs)).to.deep.equal([]);
    });
  });

  describe("the check itself", () => {
    it("reports a made-up metric and a made-up label as missing", async () => {
      const scraped = await both();
      const refs = [
        ...promqlRefs("made-up metric", "sum(rate(dynamic_volumes_made_up_total[5m]))"),
        ...promqlRefs(
          "made-up label",
          'sum by (flavour) (dynamic_volumes_mount_failures_total{reason="NotFound"})',
        ),
        ...promqlRefs("made-up bucket", "dynamic_volumes_mount_failures_total_bucket"),
      ];
      expect(missingFrom(scraped, refs)).to.deep.equal([
        "made-up metric: metric dynamic_volumes_made_up_total is not in the scrape",
        "made-up label: metric dynamic_volumes_mount_failures_total has no label flavour in the scrape",
        "made-up bucket: metric dynamic_volumes_mount_failures_total_bucket is not in the scrape",
      ]);
    });

    it("parses suffixes, matchers and grouping", () => {
      expect(
        promqlRefs(
          "x",
          'histogram_quantile(0.99, sum by (le, mounter) (rate(dynamic_volumes_mount_duration_seconds_bucket{result="mounted"}[5m])))',
        ),
      ).to.deep.equal([
        {
          where: "x",
          metric: "dynamic_volumes_mount_duration_seconds_bucket",
          labels: ["result", "le", "mounter"],
        },
      ]);
    });
  });
});
