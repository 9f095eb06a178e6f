import type { V1Container, V1PodSpec, V1Probe } from "@kubernetes/client-node";
import { expect } from "chai";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { createServer, type RequestListener, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, posix } from "node:path";
import { AGENT_NODE_FLAGS, AGENT_OPTIONS, loadAgentConfig } from "../../../agent/config.js";
import { createAgentHttpHandler, createAgentMetrics } from "../../../agent/console/http.js";
import { loadMounterConfig, MOUNTER_OPTIONS } from "../../../agent/mounter/config.js";
import { MOUNT_OPTIONS_ANNOTATION } from "../../../agent/reconcile/pod.js";
import { runCli } from "../../../certs/cli.js";
import { createLogger } from "../../../shared/logger.js";
import {
  ANNOTATIONS,
  DEFAULT_MOUNT_PATH,
  DEFAULT_ROOT,
  LABEL_INJECTION,
  LABEL_INJECTION_ENABLED,
  SIGNING_KEY_SECRET_KEY,
  VOLUME_NAME,
} from "../../../shared/names.js";
import { WEBHOOK_OPTIONS, loadWebhookConfig } from "../../../webhook/config.js";
import { KERNEL_ALIASES } from "../../../webhook/isolation.js";
import { mutatePod } from "../../../webhook/mutate.js";
import { createWebhookApp, createWebhookMetrics } from "../../../webhook/server.js";
import {
  CERT_MANAGER_OVERLAY_DIR,
  MANIFESTS_DIR,
  REPO_ROOT,
  containerOf,
  envValues,
  expandVars,
  findObject,
  mountOf,
  objectId,
  podSpecOf,
  render,
  selectorMatches,
  volumeOf,
  type KubeObject,
} from "../../support/manifests.js";
import { applyJsonPatch } from "../../support/patch.js";

const NS = "dynamic-volumes";
const NODE = "node-a";
/** Test values for the downward API fields the manifests use. */
const FIELDS = { "metadata.namespace": NS, "spec.nodeName": NODE };
const pkg = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { version: string };

type Spec = Record<string, unknown>;
const specOf = (o: KubeObject): Spec => o.spec as Spec;

/** The container port a probe, or a Service's targetPort, resolves to. */
function resolvePort(c: V1Container, port: number | string | undefined): number {
  if (typeof port === "number") return port;
  const p = (c.ports ?? []).find((x) => x.name === port);
  if (p === undefined) throw new Error(`container "${c.name}" has no port named ${String(port)}`);
  return p.containerPort;
}

/** GETs each path from a plain HTTP server around `handler`; returns the status codes. */
async function statuses(handler: RequestListener, requests: [string, string][]): Promise<number[]> {
  const server: Server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const { port } = server.address() as AddressInfo;
    const out: number[] = [];
    for (const [method, path] of requests) {
      const res = await fetch(`http://127.0.0.1:${port}${path}`, {
        method,
        ...(method === "POST" ? { headers: { "content-type": "application/json" }, body: "{}" } : {}),
      });
      await res.arrayBuffer();
      out.push(res.status);
    }
    return out;
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** The flag=value pairs of an argument list in `--flag=value` form. */
function flags(args: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const a of args) {
    const m = /^--([a-z][a-z0-9-]*)=(.*)$/.exec(a);
    if (!m) throw new Error(`"${a}" is not in --flag=value form`);
    out.set(m[1]!, m[2]!);
  }
  return out;
}

/**
 * The container's environment for its config loader: fieldRefs resolved, and every *_FILE path,
 * which must lie in one of the container's volume mounts, moved into `dir` (created there).
 */
async function loaderEnv(
  c: V1Container,
  dir: string,
  files: Record<string, string>,
): Promise<Record<string, string>> {
  const env = envValues(c, FIELDS);
  for (const [name, value] of Object.entries(env)) {
    if (!name.endsWith("_FILE")) continue;
    const mount = (c.volumeMounts ?? []).find((m) => value.startsWith(`${m.mountPath}/`));
    if (mount === undefined) throw new Error(`${name}=${value} is in none of the container's volume mounts`);
    const local = join(dir, value);
    await mkdir(dirname(local), { recursive: true });
    await writeFile(local, files[name] ?? "placeholder\n");
    env[name] = local;
  }
  return env;
}

const SIGNING_KEY_TEXT = `${Buffer.alloc(32, 7).toString("base64")}\n`;

/** The mounter's program in the agent's image (built from agent/mounter/main.ts). */
const MOUNTER_MAIN = "dist/agent/mounter/main.js";
/** Every flag the mounter takes (its command line, agent/mounter/config.ts). */
const MOUNTER_FLAGS = Object.values(MOUNTER_OPTIONS).map((o) => o.flag);
/** The flags that moved from the agent to the mounter: the agent's manifest must not set them. */
const MOVED_TO_MOUNTER = MOUNTER_FLAGS.filter(
  (f) => !["root", "socket", "agent-uid", "agent-gid", "log-level", "check"].includes(f),
);
/** Where the mounter listens, and the agent connects, unless told otherwise. */
const defaultSocket = (root: string): string => posix.join(root, "run", "mounter.sock");

/** The flag/value pairs of an argument list in `--flag value` form (`--flag=value` is accepted too). */
function flagPairs(args: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const eq = /^--([a-z][a-z0-9-]*)=(.*)$/.exec(args[i]!);
    if (eq) {
      out.set(eq[1]!, eq[2]!);
      continue;
    }
    const m = /^--([a-z][a-z0-9-]*)$/.exec(args[i]!);
    const value = args[i + 1];
    if (!m || value === undefined || value.startsWith("--"))
      throw new Error(`"${args.slice(i, i + 2).join(" ")}" is not --flag value`);
    if (out.has(m[1]!)) throw new Error(`--${m[1]!} is given twice`);
    out.set(m[1]!, value);
    i++;
  }
  return out;
}

/** A container's effective security settings: its own, else the pod's. */
function effectiveSecurity(pod: V1PodSpec, c: V1Container) {
  const p = pod.securityContext ?? {};
  const own = c.securityContext ?? {};
  return {
    runAsNonRoot: own.runAsNonRoot ?? p.runAsNonRoot,
    runAsUser: own.runAsUser ?? p.runAsUser,
    runAsGroup: own.runAsGroup ?? p.runAsGroup,
    seccomp: (own.seccompProfile ?? p.seccompProfile)?.type,
    privileged: own.privileged ?? false,
    allowPrivilegeEscalation: own.allowPrivilegeEscalation,
    readOnlyRootFilesystem: own.readOnlyRootFilesystem ?? false,
    capabilities: own.capabilities,
  };
}

describe("manifests match the code", function () {
  // Rendering, dynamic imports and local servers: slow on a busy machine, whatever the mocha config.
  this.timeout(30_000);
  let objects: readonly KubeObject[];
  let webhook: KubeObject;
  let webhookPod: V1PodSpec;
  let webhookContainer: V1Container;
  let certsInit: V1Container;
  let agent: KubeObject;
  let agentPod: V1PodSpec;
  let agentContainer: V1Container;
  let mounter: KubeObject;
  let mounterPod: V1PodSpec;
  let mounterContainer: V1Container;
  let mwc: KubeObject;
  let webhookService: KubeObject;
  let dir: string;

  before(async function () {
    this.timeout(60_000);
    objects = render(MANIFESTS_DIR).objects;
    webhook = findObject(objects, "Deployment", "dynamic-volumes-webhook");
    webhookPod = podSpecOf(webhook);
    webhookContainer = containerOf(webhookPod, "webhook");
    certsInit = containerOf(webhookPod, "certs", true);
    agent = findObject(objects, "DaemonSet", "dynamic-volumes-agent");
    agentPod = podSpecOf(agent);
    agentContainer = containerOf(agentPod, "agent");
    mounter = findObject(objects, "DaemonSet", "dynamic-volumes-mounter");
    mounterPod = podSpecOf(mounter);
    mounterContainer = containerOf(mounterPod, "mounter");
    mwc = findObject(objects, "MutatingWebhookConfiguration", "dynamic-volumes");
    webhookService = findObject(objects, "Service", "dynamic-volumes-webhook");
    dir = await mkdtemp(join(tmpdir(), "dv-manifests-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const mwcWebhook = (): Spec => {
    const hooks = mwc.webhooks as Spec[];
    expect(hooks).to.have.length(1);
    return hooks[0]!;
  };

  describe("the webhook Deployment", () => {
    it("runs two replicas, spread over nodes, that a PodDisruptionBudget keeps one of", () => {
      const spec = specOf(webhook);
      expect(spec.replicas).to.equal(2);
      const podLabels = (spec.template as { metadata: { labels: Record<string, string> } }).metadata.labels;
      expect(selectorMatches(spec.selector, podLabels)).to.equal(true);
      const preferred =
        webhookPod.affinity?.podAntiAffinity?.preferredDuringSchedulingIgnoredDuringExecution ?? [];
      expect(preferred).to.have.length(1);
      expect(preferred[0]!.podAffinityTerm.topologyKey).to.equal("kubernetes.io/hostname");
      expect(selectorMatches(preferred[0]!.podAffinityTerm.labelSelector, podLabels)).to.equal(true);
      const pdb = findObject(objects, "PodDisruptionBudget", "dynamic-volumes-webhook");
      expect(specOf(pdb).minAvailable).to.equal(1);
      expect(selectorMatches(specOf(pdb).selector, podLabels)).to.equal(true);
    });

    it("runs every container as the image's non-root user, read-only, without capabilities, under RuntimeDefault seccomp", () => {
      const user = /^USER\s+(\d+):(\d+)\s*$/m.exec(
        readFileSync(join(REPO_ROOT, "Dockerfile.webhook"), "utf8"),
      );
      expect(user, "Dockerfile.webhook sets USER uid:gid").to.not.equal(null);
      const sc = webhookPod.securityContext ?? {};
      expect(sc.runAsNonRoot).to.equal(true);
      expect(sc.runAsUser).to.equal(Number(user![1]));
      expect(sc.runAsGroup).to.equal(Number(user![2]));
      expect(sc.seccompProfile?.type).to.equal("RuntimeDefault");
      for (const c of [...(webhookPod.initContainers ?? []), ...webhookPod.containers]) {
        expect(c.securityContext?.readOnlyRootFilesystem, c.name).to.equal(true);
        expect(c.securityContext?.allowPrivilegeEscalation, c.name).to.equal(false);
        expect(c.securityContext?.capabilities?.drop, c.name).to.deep.equal(["ALL"]);
        expect(c.securityContext?.privileged ?? false, c.name).to.equal(false);
        expect(c.securityContext?.runAsUser ?? sc.runAsUser, c.name).to.not.equal(0);
      }
    });

    it("gives the webhook container an API token only for its certificate renewal, read-only, from the projected volume", () => {
      expect(webhookPod.automountServiceAccountToken).to.equal(false);
      expect(webhookContainer.args ?? []).to.include("--renew-certificates");
      expect(
        (webhookContainer.volumeMounts ?? []).filter((m) =>
          m.mountPath.startsWith("/var/run/secrets/kubernetes.io"),
        ),
      ).to.deep.equal([
        {
          name: "kube-api-access",
          mountPath: "/var/run/secrets/kubernetes.io/serviceaccount",
          readOnly: true,
        },
      ]);
      // The renewal rewrites the files the webhook serves, in the in-memory emptyDir.
      expect(mountOf(webhookContainer, "tls").readOnly ?? false).to.equal(false);
    });

    it("renews the certificate with the names, Secret, configuration and ConfigMap of the bootstrap", () => {
      const env = envValues(webhookContainer, FIELDS);
      const renewal = flags(
        (webhookContainer.args ?? [])
          .filter((a) => a !== "--renew-certificates")
          .map((a) => expandVars(a, env)),
      );
      const initEnv = envValues(certsInit, FIELDS);
      const [, ...rest] = certsInit.args ?? [];
      const init = flags(rest.map((a) => expandVars(a, initEnv)));
      expect({
        secret: renewal.get("certificate-secret"),
        namespace: env.DV_CERTIFICATE_NAMESPACE,
        service: renewal.get("certificate-service"),
        webhookConfig: renewal.get("webhook-config"),
        caConfigMap: renewal.get("ca-config-map"),
        extraDns: renewal.get("certificate-extra-dns"),
        extraIp: renewal.get("certificate-extra-ip"),
      }).to.deep.equal({
        secret: init.get("secret-name"),
        namespace: init.get("namespace"),
        service: init.get("service"),
        webhookConfig: init.get("webhook-config"),
        caConfigMap: init.get("ca-config-map"),
        extraDns: init.get("extra-dns"),
        extraIp: init.get("extra-ip"),
      });
    });

    it("sets only environment variables that webhook/config.ts reads", () => {
      const known = new Set(Object.values(WEBHOOK_OPTIONS).map((o) => o.env));
      const names = (webhookContainer.env ?? []).map((e) => e.name);
      expect(names.filter((n) => !known.has(n))).to.deep.equal([]);
    });

    it("is accepted by the webhook's own configuration loader, with its files inside mounted volumes", async () => {
      expect(webhookContainer.command, "the image's entrypoint runs the webhook").to.equal(undefined);
      const env = await loaderEnv(webhookContainer, join(dir, "webhook"), {
        DV_SIGNING_KEY_FILE: SIGNING_KEY_TEXT,
      });
      const config = loadWebhookConfig(
        (webhookContainer.args ?? []).map((a) => expandVars(a, env)),
        env,
      );
      expect(config.root).to.equal(DEFAULT_ROOT);
      expect(config.defaultMountPath).to.equal(DEFAULT_MOUNT_PATH);
      expect(config.certificateRenewal?.namespace).to.equal(NS);
      expect(config.certificateRenewal?.checkIntervalMs).to.equal(600_000);
    });

    it("listens on the port it declares, which the Service and the probes target", async () => {
      const env = await loaderEnv(webhookContainer, join(dir, "webhook-port"), {
        DV_SIGNING_KEY_FILE: SIGNING_KEY_TEXT,
      });
      const { port } = loadWebhookConfig([], env).listen;
      const defaultPort = Number(/:(\d+)$/.exec(WEBHOOK_OPTIONS.listen.default!)![1]);
      expect(port, "the manifest keeps the webhook's default port").to.equal(defaultPort);
      expect((webhookContainer.ports ?? []).map((p) => p.containerPort)).to.deep.equal([port]);
      const svcPorts =
        (specOf(webhookService).ports as { port: number; targetPort: number | string }[]) ?? [];
      expect(svcPorts).to.have.length(1);
      expect(svcPorts[0]!.port).to.equal(443);
      expect(resolvePort(webhookContainer, svcPorts[0]!.targetPort)).to.equal(port);
      const podLabels = (specOf(webhook).template as { metadata: { labels: Record<string, string> } })
        .metadata.labels;
      expect(selectorMatches({ matchLabels: specOf(webhookService).selector }, podLabels)).to.equal(true);
      for (const probe of [webhookContainer.readinessProbe, webhookContainer.livenessProbe])
        expect(resolvePort(webhookContainer, probe?.httpGet?.port)).to.equal(port);
    });

    it("probes /readyz and /healthz over HTTPS, and the webhook's app answers both with 200", async () => {
      const probes = [webhookContainer.readinessProbe, webhookContainer.livenessProbe] as (
        V1Probe | undefined
      )[];
      expect(probes.map((p) => p?.httpGet?.path)).to.deep.equal(["/readyz", "/healthz"]);
      expect(probes.map((p) => p?.httpGet?.scheme)).to.deep.equal(["HTTPS", "HTTPS"]);
      const app = createWebhookApp({
        mutate: { root: DEFAULT_ROOT, defaultMountPath: DEFAULT_MOUNT_PATH, signingKey: Buffer.alloc(32, 7) },
        log: createLogger({ name: "test", level: "silent" }),
        metrics: createWebhookMetrics(),
        mintId: () => "0".repeat(32),
        isReady: () => true,
      });
      expect(
        await statuses(
          app,
          probes.map((p) => ["GET", p!.httpGet!.path!]),
        ),
      ).to.deep.equal([200, 200]);
    });

    it("gives every container resource requests and a memory limit", () => {
      for (const c of [
        ...(webhookPod.initContainers ?? []),
        ...webhookPod.containers,
        ...agentPod.containers,
        ...mounterPod.containers,
      ]) {
        expect(c.resources?.requests?.cpu, c.name).to.be.a("string");
        expect(c.resources?.requests?.memory, c.name).to.be.a("string");
        expect(c.resources?.limits?.memory, c.name).to.be.a("string");
      }
    });

    it("injects a hostPath that lies inside the directory the mounter mounts Bidirectional", async () => {
      const env = await loaderEnv(webhookContainer, join(dir, "webhook-inject"), {
        DV_SIGNING_KEY_FILE: SIGNING_KEY_TEXT,
      });
      const config = loadWebhookConfig([], env);
      const pod = {
        apiVersion: "v1",
        kind: "Pod",
        metadata: {
          generateName: "app-",
          namespace: "team-a",
          annotations: { [ANNOTATIONS.buckets]: "data" },
        },
        spec: { containers: [{ name: "app", image: "busybox" }] },
      };
      const result = mutatePod(pod, "team-a", config, () => "ab".repeat(16));
      if (result.kind !== "patched") throw new Error(`expected a patch, got ${JSON.stringify(result)}`);
      const patched = applyJsonPatch(pod, result.patch) as unknown as { spec: V1PodSpec };
      const injected = volumeOf(patched.spec, VOLUME_NAME);
      const root = volumeOf(mounterPod, "root").hostPath!.path;
      expect(injected.hostPath!.path.startsWith(`${root}/pods/`), injected.hostPath!.path).to.equal(true);
      expect(mountOf(mounterContainer, "root").mountPath).to.equal(root);
      expect(mountOf(mounterContainer, "root").mountPropagation).to.equal("Bidirectional");
    });
  });

  describe("the certificate bootstrap init container", () => {
    let args: Map<string, string>;
    before(() => {
      const env = envValues(certsInit, FIELDS);
      const [command, ...rest] = certsInit.args ?? [];
      expect(command).to.equal("bootstrap");
      args = flags(rest.map((a) => expandVars(a, env)));
    });

    it("runs the certs command line of the webhook image", () => {
      expect(certsInit.image).to.equal(webhookContainer.image);
      expect(certsInit.command).to.deep.equal(["node", "dist/certs/main.js"]);
      expect(
        existsSync(join(REPO_ROOT, "certs/main.ts")),
        "dist/certs/main.js is built from certs/main.ts",
      ).to.equal(true);
    });

    it("passes only flags that `certs bootstrap` knows", async () => {
      const out: string[] = [];
      const code = await runCli(["bootstrap", "--help"], {
        env: {},
        stdout: (l) => out.push(l),
        stderr: (l) => out.push(l),
      });
      expect(code).to.equal(0);
      const known = new Set([...out.join("\n").matchAll(/--([a-z][a-z0-9-]*)/g)].map((m) => m[1]!));
      expect([...args.keys()].filter((f) => !known.has(f))).to.deep.equal([]);
    });

    it("names the webhook's Service and namespace, the MutatingWebhookConfiguration and the Secret the agents read", () => {
      const svc = (mwcWebhook().clientConfig as { service: { name: string; namespace: string } }).service;
      expect(args.get("service")).to.equal(webhookService.metadata.name).and.to.equal(svc.name);
      expect(args.get("namespace")).to.equal(webhookService.metadata.namespace).and.to.equal(svc.namespace);
      expect(args.get("webhook-config")).to.equal(mwc.metadata.name);
      expect(args.get("secret-name")).to.equal(volumeOf(agentPod, "tls").secret?.secretName);
    });

    it("writes the certificate where the webhook reads it, through an in-memory emptyDir", () => {
      const writeDir = args.get("write-dir")!;
      const volume = mountOf(certsInit, mountOf(webhookContainer, "tls").name);
      expect(volume.mountPath).to.equal(writeDir);
      expect(mountOf(webhookContainer, "tls").mountPath).to.equal(writeDir);
      expect(volumeOf(webhookPod, "tls").emptyDir?.medium).to.equal("Memory");
      const env = envValues(webhookContainer, FIELDS);
      expect(env.DV_TLS_CERT_FILE).to.equal(posix.join(writeDir, "tls.crt"));
      expect(env.DV_TLS_KEY_FILE).to.equal(posix.join(writeDir, "tls.key"));
    });

    it("gets an API token from a projected volume, mounted where in-cluster clients look", () => {
      const mount = mountOf(certsInit, "kube-api-access");
      expect(mount.mountPath).to.equal("/var/run/secrets/kubernetes.io/serviceaccount");
      const sources = volumeOf(webhookPod, "kube-api-access").projected?.sources ?? [];
      expect(
        sources.map(
          (s) =>
            s.serviceAccountToken?.path ?? s.configMap?.items?.[0]?.path ?? s.downwardAPI?.items?.[0]?.path,
        ),
      ).to.deep.equal(["token", "ca.crt", "namespace"]);
    });
  });

  describe("the MutatingWebhookConfiguration", () => {
    it("sends pods to POST /mutate on the webhook's Service, a route the webhook serves", async () => {
      const service = (
        mwcWebhook().clientConfig as {
          service: { name: string; namespace: string; path: string; port: number };
        }
      ).service;
      expect(service.name).to.equal(webhookService.metadata.name);
      expect(service.namespace).to.equal(webhookService.metadata.namespace);
      expect(service.port).to.equal((specOf(webhookService).ports as { port: number }[])[0]!.port);
      expect(service.path).to.equal("/mutate");
      const app = createWebhookApp({
        mutate: { root: DEFAULT_ROOT, defaultMountPath: DEFAULT_MOUNT_PATH, signingKey: Buffer.alloc(32, 7) },
        log: createLogger({ name: "test", level: "silent" }),
        metrics: createWebhookMetrics(),
        mintId: () => "0".repeat(32),
      });
      // A malformed review is a 400 from the route; a path the app does not serve would be a 404.
      expect(await statuses(app, [["POST", service.path]])).to.deep.equal([400]);
    });

    it("selects namespaces by the label in shared/names.ts, never kube-system or its own", () => {
      const selector = mwcWebhook().namespaceSelector as { matchLabels: Record<string, string> };
      expect(selector.matchLabels).to.deep.equal({ [LABEL_INJECTION]: LABEL_INJECTION_ENABLED });
      const labelled = (name: string) => ({
        "kubernetes.io/metadata.name": name,
        [LABEL_INJECTION]: LABEL_INJECTION_ENABLED,
      });
      expect(selectorMatches(selector, labelled("team-a"))).to.equal(true);
      expect(selectorMatches(selector, labelled("kube-system"))).to.equal(false);
      expect(selectorMatches(selector, labelled(NS))).to.equal(false);
    });

    it("admits pod CREATEs and ephemeral container UPDATEs with v1 reviews, no side effects, reinvocation, a short timeout and failurePolicy Fail", () => {
      const w = mwcWebhook();
      expect(w.name).to.equal("pods.dynamic-volumes.io");
      expect(w.rules).to.deep.equal([
        {
          operations: ["CREATE"],
          apiGroups: [""],
          apiVersions: ["v1"],
          resources: ["pods"],
          scope: "Namespaced",
        },
        {
          operations: ["UPDATE"],
          apiGroups: [""],
          apiVersions: ["v1"],
          resources: ["pods/ephemeralcontainers"],
          scope: "Namespaced",
        },
      ]);
      expect(w.admissionReviewVersions).to.deep.equal(["v1"]);
      expect(w.sideEffects).to.equal("None");
      expect(w.reinvocationPolicy).to.equal("IfNeeded");
      expect(w.matchPolicy).to.equal("Equivalent");
      expect(w.failurePolicy).to.equal("Fail");
      expect(w.timeoutSeconds).to.be.within(1, 10);
      expect((w.clientConfig as Spec).caBundle, "left to the bootstrap or cert-manager").to.equal(undefined);
    });
  });

  describe("the agent DaemonSet", () => {
    it("runs unprivileged: a non-root uid and gid, a read-only root, no capabilities, RuntimeDefault seccomp", () => {
      for (const c of [...(agentPod.initContainers ?? []), ...agentPod.containers]) {
        const sc = effectiveSecurity(agentPod, c);
        expect(sc.runAsNonRoot, c.name).to.equal(true);
        expect(sc.runAsUser, `${c.name}: runAsUser`).to.be.a("number").and.not.equal(0);
        expect(sc.runAsGroup, `${c.name}: runAsGroup`).to.be.a("number").and.not.equal(0);
        expect(sc.privileged, c.name).to.equal(false);
        expect(sc.allowPrivilegeEscalation, c.name).to.equal(false);
        expect(sc.readOnlyRootFilesystem, c.name).to.equal(true);
        expect(sc.capabilities?.drop, c.name).to.deep.equal(["ALL"]);
        expect(sc.capabilities?.add ?? [], c.name).to.deep.equal([]);
        expect(sc.seccomp, c.name).to.equal("RuntimeDefault");
      }
      expect(agentPod.hostPID ?? false).to.equal(false);
      expect(agentPod.hostNetwork ?? false).to.equal(false);
      expect(agentPod.hostIPC ?? false).to.equal(false);
    });

    it("can read its Secrets as that user: group-readable files owned by its fsGroup", () => {
      const sc = effectiveSecurity(agentPod, agentContainer);
      expect(agentPod.securityContext?.fsGroup).to.equal(sc.runAsGroup);
      for (const name of ["signing-key", "tls"]) {
        const mode = volumeOf(agentPod, name).secret?.defaultMode;
        expect(mode, name).to.be.a("number");
        expect(mode! & 0o040, `${name}: defaultMode ${mode!.toString(8)} is readable by the group`).to.equal(
          0o040,
        );
      }
    });

    it("mounts the host root from shared/names.ts at the same path, read-only, HostToContainer", () => {
      const root = volumeOf(agentPod, "root");
      expect(root.hostPath).to.deep.equal({ path: DEFAULT_ROOT, type: "DirectoryOrCreate" });
      const mount = mountOf(agentContainer, "root");
      expect(mount.mountPath).to.equal(DEFAULT_ROOT);
      expect(mount.mountPropagation).to.equal("HostToContainer");
      expect(mount.readOnly).to.equal(true);
      expect(mount.subPath ?? mount.subPathExpr).to.equal(undefined);
    });

    it("has no /dev/fuse, no device and no other hostPath than the root", () => {
      const hostPaths = (agentPod.volumes ?? []).filter((v) => v.hostPath !== undefined);
      expect(hostPaths.map((v) => v.hostPath!.path)).to.deep.equal([DEFAULT_ROOT]);
      for (const c of [...(agentPod.initContainers ?? []), ...agentPod.containers]) {
        expect(
          (c.volumeMounts ?? []).filter((m) => m.mountPath.startsWith("/dev")),
          c.name,
        ).to.deep.equal([]);
        expect(c.volumeDevices ?? [], c.name).to.deep.equal([]);
      }
    });

    it("sets none of the flags that moved to the mounter, as a flag or as an environment variable", () => {
      const envOf = (flag: string) => `DV_${flag.toUpperCase().replace(/-/g, "_")}`;
      const args = [...(agentContainer.command ?? []), ...(agentContainer.args ?? [])];
      const set = MOVED_TO_MOUNTER.filter(
        (f) =>
          args.some((a) => a === `--${f}` || a.startsWith(`--${f}=`)) ||
          (agentContainer.env ?? []).some((e) => e.name === envOf(f)),
      );
      expect(set).to.deep.equal([]);
    });

    it("sets only environment variables that agent/config.ts reads, NODE_NAME from spec.nodeName", () => {
      const known = new Set([...Object.values(AGENT_OPTIONS).map((o) => o.env), "NODE_NAME"]);
      const env = agentContainer.env ?? [];
      expect(env.map((e) => e.name).filter((n) => !known.has(n))).to.deep.equal([]);
      expect(env.find((e) => e.name === "NODE_NAME")?.valueFrom?.fieldRef?.fieldPath).to.equal(
        "spec.nodeName",
      );
      expect(readFileSync(join(REPO_ROOT, "agent/config.ts"), "utf8")).to.include("env.NODE_NAME");
    });

    it("is accepted by the agent's own configuration loader: this node, the console on its declared port, the webhook's root", async () => {
      expect(agentContainer.command, "the image's entrypoint runs the agent").to.equal(undefined);
      const env = await loaderEnv(agentContainer, join(dir, "agent"), {
        DV_SIGNING_KEY_FILE: SIGNING_KEY_TEXT,
      });
      const config = loadAgentConfig(agentContainer.args ?? [], env);
      expect(config.local).to.equal(undefined);
      expect(config.nodeName).to.equal(NODE);
      expect(config.root).to.equal(DEFAULT_ROOT);
      expect(config.console?.port).to.equal(resolvePort(agentContainer, "https"));
      expect(config.console?.tokens, "TokenReview in a cluster").to.equal(undefined);
      const webhookEnv = await loaderEnv(webhookContainer, join(dir, "webhook-root"), {
        DV_SIGNING_KEY_FILE: SIGNING_KEY_TEXT,
      });
      expect(loadWebhookConfig([], webhookEnv).root).to.equal(config.root);
    });

    it("probes /healthz (startup, liveness) and /readyz over HTTPS, and the agent answers both with 200", async () => {
      const probes = [
        agentContainer.startupProbe,
        agentContainer.livenessProbe,
        agentContainer.readinessProbe,
      ];
      expect(probes.map((p) => p?.httpGet?.path)).to.deep.equal(["/healthz", "/healthz", "/readyz"]);
      expect(probes.map((p) => p?.httpGet?.scheme)).to.deep.equal(["HTTPS", "HTTPS", "HTTPS"]);
      const port = resolvePort(agentContainer, "https");
      for (const p of probes) expect(resolvePort(agentContainer, p?.httpGet?.port)).to.equal(port);
      const handler = createAgentHttpHandler({
        registry: createAgentMetrics().registry,
        isReady: () => true,
      });
      expect(
        await statuses(handler, [
          ["GET", "/healthz"],
          ["GET", "/readyz"],
        ]),
      ).to.deep.equal([200, 200]);
    });

    it("runs on every node, last to be evicted, rolling one node at a time", () => {
      expect(agentPod.tolerations).to.deep.equal([{ operator: "Exists" }]);
      expect(agentPod.priorityClassName).to.equal("system-node-critical");
      expect(specOf(agent).updateStrategy).to.deep.equal({
        type: "RollingUpdate",
        rollingUpdate: { maxUnavailable: 1 },
      });
      expect(agentPod.terminationGracePeriodSeconds).to.be.a("number");
      const quota = findObject(objects, "ResourceQuota", "dynamic-volumes-critical-pods");
      const scope = (
        specOf(quota).scopeSelector as { matchExpressions: { scopeName: string; values: string[] }[] }
      ).matchExpressions[0]!;
      expect(scope.scopeName).to.equal("PriorityClass");
      expect(scope.values).to.include(agentPod.priorityClassName);
    });

    it("is reachable through a headless Service on its console port", () => {
      const svc = findObject(objects, "Service", "dynamic-volumes-agent");
      expect(specOf(svc).clusterIP).to.equal("None");
      const podLabels = (specOf(agent).template as { metadata: { labels: Record<string, string> } }).metadata
        .labels;
      expect(selectorMatches({ matchLabels: specOf(svc).selector }, podLabels)).to.equal(true);
      const ports = specOf(svc).ports as { targetPort: string | number }[];
      expect(resolvePort(agentContainer, ports[0]!.targetPort)).to.equal(
        resolvePort(agentContainer, "https"),
      );
    });
  });

  describe("the mounter DaemonSet", () => {
    let args: Map<string, string>;
    before(() => {
      args = flagPairs(mounterContainer.args ?? []);
    });

    it("runs the mounter program of the agent's image, with the agent's node flags", () => {
      expect(mounterContainer.image).to.equal(agentContainer.image);
      expect(mounterContainer.command).to.deep.equal(["node", ...AGENT_NODE_FLAGS, MOUNTER_MAIN]);
      expect(
        existsSync(join(REPO_ROOT, "agent/mounter/main.ts")),
        `${MOUNTER_MAIN} is built from agent/mounter/main.ts`,
      ).to.equal(true);
    });

    it("passes only flags the mounter takes, with the root from shared/names.ts", () => {
      const known = new Set<string>(MOUNTER_FLAGS);
      expect([...args.keys()].filter((f) => !known.has(f))).to.deep.equal([]);
      expect(args.get("root")).to.equal(DEFAULT_ROOT);
      expect(mounterContainer.env ?? [], "flags, not environment variables").to.deep.equal([]);
      const config = loadMounterConfig(
        [...args].map(([flag, value]) => `--${flag}=${value}`),
        {},
      );
      expect(config.root).to.equal(DEFAULT_ROOT);
      expect(config.check).to.equal(false);
    });

    it("gives the socket to the agent's runAsUser and runAsGroup (--agent-uid, --agent-gid)", () => {
      const sc = effectiveSecurity(agentPod, agentContainer);
      expect(args.get("agent-uid"), "--agent-uid").to.equal(String(sc.runAsUser));
      expect(args.get("agent-gid"), "--agent-gid").to.equal(String(sc.runAsGroup));
    });

    it("listens on the socket the agent connects to, inside the root both mount", () => {
      const mounterSocket = args.get("socket") ?? defaultSocket(args.get("root")!);
      const agentEnv = envValues(agentContainer, FIELDS);
      const agentRoot = agentEnv[AGENT_OPTIONS.root.env] ?? AGENT_OPTIONS.root.default!;
      const agentSocket = agentEnv[AGENT_OPTIONS.mounterSocket.env] ?? defaultSocket(agentRoot);
      expect(agentSocket).to.equal(mounterSocket);
      expect(agentRoot).to.equal(args.get("root"));
      for (const c of [agentContainer, mounterContainer])
        expect(mounterSocket.startsWith(`${mountOf(c, "root").mountPath}/`), c.name).to.equal(true);
    });

    it("has no container port, and no Service selects it", () => {
      for (const c of [...(mounterPod.initContainers ?? []), ...mounterPod.containers])
        expect(c.ports ?? [], c.name).to.deep.equal([]);
      expect(mounterPod.hostNetwork ?? false).to.equal(false);
      expect(mounterPod.hostPID ?? false).to.equal(false);
      expect(mounterPod.hostIPC ?? false).to.equal(false);
      const podLabels = (specOf(mounter).template as { metadata: { labels: Record<string, string> } })
        .metadata.labels;
      const selecting = objects.filter(
        (o) =>
          o.kind === "Service" &&
          specOf(o).selector !== undefined &&
          selectorMatches({ matchLabels: specOf(o).selector }, podLabels),
      );
      expect(selecting.map(objectId)).to.deep.equal([]);
      // And the agent's selector does not take in the mounter's pods, nor the other way round.
      const agentLabels = (specOf(agent).template as { metadata: { labels: Record<string, string> } })
        .metadata.labels;
      expect(selectorMatches(specOf(agent).selector, podLabels)).to.equal(false);
      expect(selectorMatches(specOf(mounter).selector, agentLabels)).to.equal(false);
    });

    it("is replaced only when its pod is deleted (updateStrategy OnDelete)", () => {
      expect(specOf(mounter).updateStrategy).to.deep.equal({ type: "OnDelete" });
    });

    it("holds no API token, under a service account of its own", () => {
      expect(mounterPod.automountServiceAccountToken).to.equal(false);
      expect(mounterPod.serviceAccountName).to.equal("dynamic-volumes-mounter");
      expect(mounterPod.serviceAccountName).to.not.equal(agentPod.serviceAccountName);
      const sa = findObject(objects, "ServiceAccount", mounterPod.serviceAccountName!);
      expect(sa.metadata.namespace).to.equal(NS);
      expect((sa as { automountServiceAccountToken?: boolean }).automountServiceAccountToken).to.equal(false);
      for (const v of mounterPod.volumes ?? []) {
        expect(v.projected, v.name).to.equal(undefined);
        expect(v.secret, `${v.name}: the mounter mounts no Secret`).to.equal(undefined);
      }
      for (const c of mounterPod.containers)
        expect(
          (c.volumeMounts ?? []).filter((m) => m.mountPath.startsWith("/var/run/secrets")),
          c.name,
        ).to.deep.equal([]);
    });

    it("runs privileged, as root, with /dev/fuse", () => {
      const sc = effectiveSecurity(mounterPod, mounterContainer);
      expect(sc.privileged).to.equal(true);
      expect(sc.runAsUser ?? 0).to.equal(0);
      expect(volumeOf(mounterPod, "fuse").hostPath).to.deep.equal({ path: "/dev/fuse", type: "CharDevice" });
      expect(mountOf(mounterContainer, "fuse").mountPath).to.equal("/dev/fuse");
    });

    it("mounts the agent's hostPath root at the same path, writable, Bidirectional", () => {
      const root = volumeOf(mounterPod, "root");
      expect(root.hostPath).to.deep.equal({ path: DEFAULT_ROOT, type: "DirectoryOrCreate" });
      expect(root.hostPath).to.deep.equal(volumeOf(agentPod, "root").hostPath);
      const mount = mountOf(mounterContainer, "root");
      expect(mount.mountPath).to.equal(DEFAULT_ROOT);
      expect(mount.mountPropagation).to.equal("Bidirectional");
      expect(mount.readOnly ?? false).to.equal(false);
      expect(mount.subPath ?? mount.subPathExpr).to.equal(undefined);
    });

    it("probes liveness and readiness by pinging its socket (`--check`)", () => {
      const check = ["node", MOUNTER_MAIN, "--check", "--root", args.get("root")!];
      for (const [kind, probe] of [
        ["liveness", mounterContainer.livenessProbe],
        ["readiness", mounterContainer.readinessProbe],
        ["startup", mounterContainer.startupProbe ?? { exec: { command: check } }],
      ] as const) {
        expect(probe?.exec?.command, kind).to.deep.equal(check);
        expect(probe?.httpGet ?? probe?.tcpSocket ?? probe?.grpc, kind).to.equal(undefined);
      }
    });

    it("runs on every node the agent runs on, as late to be evicted", () => {
      expect(mounterPod.tolerations).to.deep.equal(agentPod.tolerations);
      expect(mounterPod.nodeSelector).to.deep.equal(agentPod.nodeSelector);
      expect(mounterPod.affinity).to.deep.equal(agentPod.affinity);
      expect(mounterPod.priorityClassName).to.equal(agentPod.priorityClassName);
      const quota = findObject(objects, "ResourceQuota", "dynamic-volumes-critical-pods");
      const scope = (
        specOf(quota).scopeSelector as { matchExpressions: { scopeName: string; values: string[] }[] }
      ).matchExpressions[0]!;
      expect(scope.values).to.include(mounterPod.priorityClassName);
    });
  });

  describe("the signing key", () => {
    it(`is one Secret, mounted by the webhook and the agents under the key "${SIGNING_KEY_SECRET_KEY}"`, () => {
      const names = new Set<string | undefined>();
      for (const [pod, c] of [
        [webhookPod, webhookContainer],
        [agentPod, agentContainer],
      ] as const) {
        const secret = volumeOf(pod, "signing-key").secret!;
        names.add(secret.secretName);
        expect(secret.optional, "a missing key stops the pod instead of starting it unsigned").to.equal(
          false,
        );
        expect(secret.items).to.deep.equal([{ key: SIGNING_KEY_SECRET_KEY, path: SIGNING_KEY_SECRET_KEY }]);
        const mount = mountOf(c, "signing-key");
        expect(mount.readOnly).to.equal(true);
        expect(envValues(c, FIELDS).DV_SIGNING_KEY_FILE).to.equal(
          posix.join(mount.mountPath, SIGNING_KEY_SECRET_KEY),
        );
      }
      expect([...names]).to.deep.equal(["dynamic-volumes-signing-key"]);
    });
  });

  describe("the agents' serving certificate", () => {
    it("is the Secret the bootstrap writes, read-only, with the files DV_TLS_* name", () => {
      const secret = volumeOf(agentPod, "tls").secret!;
      expect(secret.optional).to.equal(false);
      const mount = mountOf(agentContainer, "tls");
      expect(mount.readOnly).to.equal(true);
      const env = envValues(agentContainer, FIELDS);
      const files = (secret.items ?? []).map((i) => posix.join(mount.mountPath, i.path));
      expect(files).to.include.members([env.DV_TLS_CERT_FILE, env.DV_TLS_KEY_FILE]);
    });
  });

  describe("the hostPath ValidatingAdmissionPolicy", () => {
    let policy: KubeObject;
    let bindings: KubeObject[];
    before(() => {
      policy = findObject(objects, "ValidatingAdmissionPolicy", "dynamic-volumes-hostpath");
      bindings = objects.filter((o) => o.kind === "ValidatingAdmissionPolicyBinding");
    });

    it("compares against the root from shared/names.ts, the agents' hostPath", () => {
      const variables = specOf(policy).variables as { name: string; expression: string }[];
      const rootDir = variables.find((v) => v.name === "rootDir")!.expression;
      expect(rootDir).to.equal(`'${DEFAULT_ROOT}/'`);
      expect(volumeOf(agentPod, "root").hostPath!.path).to.equal(DEFAULT_ROOT);
    });

    it("guards pods without volumes and volumes without hostPath, and denies with a message", () => {
      const expressions = (specOf(policy).variables as { expression: string }[])
        .map((v) => v.expression)
        .join("\n");
      expect(expressions).to.include("has(object.spec.volumes)");
      expect(expressions).to.include("has(v.hostPath)");
      const validations = specOf(policy).validations as {
        expression: string;
        messageExpression?: string;
        reason?: string;
      }[];
      expect(validations.map((v) => v.expression)).to.deep.equal([
        "size(variables.offending) == 0",
        "size(variables.throughKernel) == 0",
      ]);
      expect(validations[0]!.messageExpression).to.include(DEFAULT_ROOT);
      for (const v of validations) expect(v.reason).to.equal("Forbidden");
      expect(specOf(policy).failurePolicy).to.equal("Fail");
    });

    it("denies hostPaths under the same kernel aliases as the webhook", () => {
      const expression = (specOf(policy).variables as { name: string; expression: string }[]).find(
        (v) => v.name === "throughKernel",
      )!.expression;
      const prefixes = [...expression.matchAll(/h\.dir\.startsWith\('([^']*)'\)/g)].map((m) => m[1]);
      expect(prefixes).to.deep.equal(KERNEL_ALIASES.map((a) => `${a}/`));
    });

    it("is bound with Deny, to the policy by name", () => {
      expect(bindings.length).to.be.greaterThan(0);
      for (const b of bindings) {
        expect(specOf(b).policyName, objectId(b)).to.equal(policy.metadata.name);
        expect(specOf(b).validationActions, objectId(b)).to.deep.equal(["Deny"]);
      }
    });

    it("checks every namespace the webhook does not see, except its own", () => {
      const selector = mwcWebhook().namespaceSelector;
      const rows: string[] = [];
      for (const name of ["team-a", "default", "kube-system", "kube-public", NS])
        for (const labelled of [true, false]) {
          const labels = {
            "kubernetes.io/metadata.name": name,
            ...(labelled ? { [LABEL_INJECTION]: LABEL_INJECTION_ENABLED } : {}),
          };
          const webhookSees = selectorMatches(selector, labels);
          const policySees = bindings.some((b) =>
            selectorMatches((specOf(b).matchResources as Spec | undefined)?.namespaceSelector ?? {}, labels),
          );
          rows.push(
            `${name}${labelled ? " (labelled)" : ""}: ${webhookSees ? "webhook" : policySees ? "policy" : "neither"}${webhookSees && policySees ? "+policy" : ""}`,
          );
        }
      expect(rows).to.deep.equal([
        "team-a (labelled): webhook",
        "team-a: policy",
        "default (labelled): webhook",
        "default: policy",
        "kube-system (labelled): policy",
        "kube-system: policy",
        "kube-public (labelled): webhook",
        "kube-public: policy",
        `${NS} (labelled): neither`,
        `${NS}: neither`,
      ]);
    });
  });

  describe("images", () => {
    it(`are ghcr.io/dynamic-volumes/{webhook,agent} at the package version (${pkg.version})`, () => {
      const images = objects.flatMap((o) => {
        if (o.kind !== "Deployment" && o.kind !== "DaemonSet") return [];
        const spec = podSpecOf(o);
        return [...(spec.initContainers ?? []), ...spec.containers].map(
          (c) => `${o.kind}/${c.name}=${c.image}`,
        );
      });
      expect(images.sort()).to.deep.equal([
        `DaemonSet/agent=ghcr.io/dynamic-volumes/agent:${pkg.version}`,
        `DaemonSet/mounter=ghcr.io/dynamic-volumes/agent:${pkg.version}`,
        `Deployment/certs=ghcr.io/dynamic-volumes/webhook:${pkg.version}`,
        `Deployment/webhook=ghcr.io/dynamic-volumes/webhook:${pkg.version}`,
      ]);
    });
  });

  describe("the cert-manager overlay", () => {
    let overlay: readonly KubeObject[];
    let certificate: KubeObject;
    before(function () {
      this.timeout(60_000);
      overlay = render(CERT_MANAGER_OVERLAY_DIR).objects;
      certificate = findObject(overlay, "Certificate", "dynamic-volumes-webhook");
    });

    it("takes the bootstrap and the webhook's own renewal out, and the API token with them", () => {
      const pod = podSpecOf(findObject(overlay, "Deployment", "dynamic-volumes-webhook"));
      expect(pod.initContainers).to.equal(undefined);
      expect(pod.automountServiceAccountToken).to.equal(false);
      expect((pod.volumes ?? []).map((v) => v.name).sort()).to.deep.equal(["signing-key", "tls"]);
      const c = containerOf(pod, "webhook");
      expect(c.args).to.equal(undefined);
      expect((c.env ?? []).map((e) => e.name).filter((n) => n.startsWith("DV_CERTIFICATE"))).to.deep.equal(
        [],
      );
      expect((c.volumeMounts ?? []).map((m) => [m.name, m.readOnly])).to.deep.equal([
        ["tls", true],
        ["signing-key", true],
      ]);
    });

    it("mounts the Certificate's Secret where the webhook reads its files", () => {
      const pod = podSpecOf(findObject(overlay, "Deployment", "dynamic-volumes-webhook"));
      const tls = volumeOf(pod, "tls").secret!;
      expect(tls.secretName).to.equal((certificate.spec as Spec).secretName);
      const c = containerOf(pod, "webhook");
      const env = envValues(c, FIELDS);
      const files = (tls.items ?? []).map((i) => posix.join(mountOf(c, "tls").mountPath, i.path));
      expect(files).to.deep.equal([env.DV_TLS_CERT_FILE, env.DV_TLS_KEY_FILE]);
    });

    it("writes the Secret the agents read, issued by a CA Issuer whose CA a self-signed Issuer issues", () => {
      expect((certificate.spec as Spec).secretName).to.equal(volumeOf(agentPod, "tls").secret?.secretName);
      const issuerOf = (c: KubeObject): KubeObject => {
        const ref = (c.spec as Spec).issuerRef as { name: string; kind: string; group: string };
        expect(ref.group).to.equal("cert-manager.io");
        const issuer = findObject(overlay, ref.kind, ref.name);
        expect(issuer.metadata.namespace).to.equal(c.metadata.namespace);
        return issuer;
      };
      // serving Certificate → CA Issuer → its Secret, written by the CA Certificate → self-signed Issuer.
      const caIssuer = issuerOf(certificate);
      const caSecret = ((caIssuer.spec as Spec).ca as { secretName: string } | undefined)?.secretName;
      expect(caSecret, "the serving certificate's Issuer is a CA Issuer").to.be.a("string");
      const caCertificates = overlay.filter(
        (o) => o.kind === "Certificate" && (o.spec as Spec).secretName === caSecret,
      );
      expect(caCertificates).to.have.length(1);
      const ca = caCertificates[0]!;
      expect(issuerOf(ca).spec).to.deep.equal({ selfSigned: {} });
      expect((ca.spec as Spec).isCA).to.equal(true);
      expect(caSecret).to.not.equal((certificate.spec as Spec).secretName);
    });

    it("keeps the CA across renewals: its key is never rotated, and it outlives many serving certificates", () => {
      const hours = (d: unknown): number => Number(/^(\d+)h$/.exec(String(d))![1]);
      const ca = overlay.find((o) => o.kind === "Certificate" && (o.spec as Spec).isCA === true)!;
      const caSpec = ca.spec as {
        duration: string;
        renewBefore: string;
        privateKey: { rotationPolicy: string };
      };
      const serving = certificate.spec as { duration: string; renewBefore: string };
      expect(caSpec.privateKey.rotationPolicy).to.equal("Never");
      expect(hours(caSpec.duration)).to.be.at.least(5 * hours(serving.duration));
      expect(hours(caSpec.renewBefore)).to.be.greaterThan(hours(serving.renewBefore));
      expect(hours(serving.renewBefore)).to.be.lessThan(hours(serving.duration));
    });

    it("lets the CA injector fill the caBundle from that Certificate", () => {
      const m = findObject(overlay, "MutatingWebhookConfiguration", "dynamic-volumes");
      expect(m.metadata.annotations?.["cert-manager.io/inject-ca-from"]).to.equal(
        `${certificate.metadata.namespace}/${certificate.metadata.name}`,
      );
    });

    it("names exactly what the bootstrap's certificate names", () => {
      const env = envValues(certsInit, FIELDS);
      const args = flags((certsInit.args ?? []).slice(1).map((a) => expandVars(a, env)));
      const service = args.get("service")!;
      const ns = args.get("namespace")!;
      const dns = [
        service,
        `${service}.${ns}`,
        `${service}.${ns}.svc`,
        `${service}.${ns}.svc.cluster.local`,
        ...args.get("extra-dns")!.split(","),
      ];
      expect((certificate.spec as Spec).dnsNames).to.deep.equal(dns);
      expect((certificate.spec as Spec).ipAddresses).to.deep.equal(args.get("extra-ip")!.split(","));
    });

    it("drops the bootstrap's RBAC and changes nothing else but the webhook, its configuration and the certificate", () => {
      const base = new Map(objects.map((o) => [objectId(o), o]));
      const over = new Map(overlay.map((o) => [objectId(o), o]));
      const removed = [...base.keys()].filter((id) => !over.has(id));
      expect(removed.sort()).to.deep.equal([
        "ClusterRole//dynamic-volumes-webhook-certs",
        "ClusterRoleBinding//dynamic-volumes-webhook-certs",
        "Role/dynamic-volumes/dynamic-volumes-webhook-certs",
        "RoleBinding/dynamic-volumes/dynamic-volumes-webhook-certs",
      ]);
      expect([...over.keys()].filter((id) => !base.has(id)).sort()).to.deep.equal([
        "Certificate/dynamic-volumes/dynamic-volumes-webhook",
        "Certificate/dynamic-volumes/dynamic-volumes-webhook-ca",
        "Issuer/dynamic-volumes/dynamic-volumes-selfsigned",
        "Issuer/dynamic-volumes/dynamic-volumes-webhook-ca",
      ]);
      const changed = [...over.keys()].filter(
        (id) => base.has(id) && JSON.stringify(base.get(id)) !== JSON.stringify(over.get(id)),
      );
      expect(changed.sort()).to.deep.equal([
        "Deployment/dynamic-volumes/dynamic-volumes-webhook",
        "MutatingWebhookConfiguration//dynamic-volumes",
      ]);
    });
  });

  describe("docs and manifests", () => {
    it("spell every dynamic-volumes/<key> as shared/names.ts does, or as an object's namespace/name", () => {
      // The mount-options annotation is spelt in agent/reconcile/pod.ts rather than in shared/names.ts.
      const known = new Set<string>([
        LABEL_INJECTION,
        ...Object.values(ANNOTATIONS),
        MOUNT_OPTIONS_ANNOTATION,
      ]);
      for (const o of [...objects, ...render(CERT_MANAGER_OVERLAY_DIR).objects])
        if (o.metadata.namespace === NS) {
          known.add(`${NS}/${o.metadata.name}`);
          // The Secrets the pods mount, which the manifests do not create.
          if (o.kind === "Deployment" || o.kind === "DaemonSet")
            for (const v of podSpecOf(o).volumes ?? [])
              if (v.secret?.secretName) known.add(`${NS}/${v.secret.secretName}`);
        }
      const files = [
        "docs/install.md",
        "docs/architecture.md",
        ...readdirSync(MANIFESTS_DIR, { recursive: true, encoding: "utf8" })
          .filter((f) => f.endsWith(".yaml"))
          .map((f) => join("manifests", f)),
      ];
      const unknown: string[] = [];
      for (const file of files)
        for (const m of readFileSync(join(REPO_ROOT, file), "utf8").matchAll(
          /(?<![\w./-])dynamic-volumes\/[a-z0-9-]+/g,
        ))
          // `key-` is kubectl's syntax for removing a label or an annotation.
          if (!known.has(m[0]) && !known.has(m[0].replace(/-$/, ""))) unknown.push(`${file}: ${m[0]}`);
      expect(unknown).to.deep.equal([]);
    });
  });
});
