import type { V1ConfigMap, V1MutatingWebhookConfiguration, V1Secret } from "@kubernetes/client-node";
import { expect } from "chai";
import { readFileSync, readdirSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli } from "../../../certs/cli.js";
import { certSubjectAltNames, serviceDnsNames } from "../../../certs/generate.js";
import { KubernetesCertsApi } from "../../../certs/kube-client.js";
import { checkCertificates } from "../../../certs/renewer.js";
import { loadWebhookConfig } from "../../../webhook/config.js";
import { AGENT_NAMESPACE, CA_CONFIG_MAP, CA_CONFIG_MAP_KEY } from "../../../dvctl/agent-names.js";
import { createLogger } from "../../../shared/logger.js";
import {
  ADMISSIONREGISTRATION_V1,
  CORE_V1,
  FakeKubeApiServer,
  groupOf,
  parseRoute,
  type KubeObject as StoreObject,
} from "../../support/kube-api-server.js";
import {
  CERT_MANAGER_OVERLAY_DIR,
  MANIFESTS_DIR,
  REPO_ROOT,
  containerOf,
  envValues,
  expandVars,
  findObject,
  podSpecOf,
  render,
  type KubeObject,
} from "../../support/manifests.js";

const NS = "dynamic-volumes";

interface Rule {
  apiGroups?: string[];
  resources?: string[];
  verbs: string[];
  resourceNames?: string[];
}

/** What one API request asks the authorizer, as kube-apiserver's RequestInfo has it. */
interface Attributes {
  verb: string;
  group: string;
  resource: string;
  namespace: string | undefined;
  name: string | undefined;
}

interface Subject {
  kind: string;
  name: string;
  namespace?: string;
}

/** The rules that apply to a service account, each with the namespace it is limited to (undefined: all). */
function rulesFor(
  objects: readonly KubeObject[],
  serviceAccount: string,
): { rule: Rule; namespace?: string; from: string }[] {
  return rulesOf(
    objects,
    (s) => s.kind === "ServiceAccount" && s.name === serviceAccount && s.namespace === NS,
  );
}

/** The rules bound to any subject that `matches`, each with the namespace it is limited to. */
function rulesOf(
  objects: readonly KubeObject[],
  matches: (s: Subject) => boolean,
): { rule: Rule; namespace?: string; from: string }[] {
  const out: { rule: Rule; namespace?: string; from: string }[] = [];
  for (const b of objects) {
    if (b.kind !== "ClusterRoleBinding" && b.kind !== "RoleBinding") continue;
    const subjects = (b.subjects ?? []) as Subject[];
    if (!subjects.some(matches)) continue;
    const ref = b.roleRef as { kind: string; name: string };
    const role = findObject(objects, ref.kind, ref.name);
    if (ref.kind === "Role" && role.metadata.namespace !== b.metadata.namespace)
      throw new Error(`${b.metadata.name} binds a Role of another namespace`);
    for (const rule of role.rules as Rule[])
      out.push({
        rule,
        ...(b.kind === "RoleBinding" ? { namespace: b.metadata.namespace } : {}),
        from: `${ref.kind}/${ref.name}`,
      });
  }
  return out;
}

/**
 * Which of `requests` the rules deny (as kube-apiserver's RBAC authorizer would), and which rules no
 * request used.
 */
function authorize(
  requests: readonly { method: string; path: string; query: Readonly<Record<string, string>> }[],
  rules: ReturnType<typeof rulesFor>,
): { denied: string[]; unused: string[] } {
  const usedRules = new Set<number>();
  const denied: string[] = [];
  for (const r of requests) {
    const route = parseRoute(r.path);
    if (route === undefined) throw new Error(`unexpected request ${r.method} ${r.path}`);
    const verb =
      r.method === "GET"
        ? route.name !== undefined
          ? "get"
          : r.query.watch === "true"
            ? "watch"
            : "list"
        : ({ POST: "create", PUT: "update", PATCH: "patch", DELETE: "delete" } as Record<string, string>)[
            r.method
          ]!;
    const a: Attributes = {
      verb,
      group: groupOf(route.ref.apiPath),
      resource: route.ref.resource + (route.subresource ? `/${route.subresource}` : ""),
      namespace: route.ref.namespace,
      // The name of a create is in the body, which the authorizer does not see.
      name: verb === "create" ? undefined : route.name,
    };
    const i = rules.findIndex((x) => ruleAllows(x.rule, x.namespace, a));
    if (i < 0) denied.push(`${r.method} ${r.path} (${JSON.stringify(a)})`);
    else usedRules.add(i);
  }
  const unused = rules.filter((_, i) => !usedRules.has(i)).map((x) => `${x.from}: ${JSON.stringify(x.rule)}`);
  return { denied, unused };
}

/** RBAC's matching: group, resource, verb, and resourceNames (which never match a nameless request such as create). */
function ruleAllows(rule: Rule, ruleNamespace: string | undefined, a: Attributes): boolean {
  const has = (list: string[] | undefined, v: string) =>
    (list ?? []).includes(v) || (list ?? []).includes("*");
  if (ruleNamespace !== undefined && a.namespace !== ruleNamespace) return false;
  if (!has(rule.apiGroups, a.group) || !has(rule.resources, a.resource) || !has(rule.verbs, a.verb))
    return false;
  const names = rule.resourceNames ?? [];
  return names.length === 0 || (a.name !== undefined && names.includes(a.name));
}

const key = (group: string, resource: string, verb: string) =>
  `${group === "" ? "core" : group}/${resource}:${verb}`;

/** The resource of each client-node call the agent makes, for the table below. */
const KINDS: Record<string, { group: string; resource: string }> = {
  Pod: { group: "", resource: "pods" },
  Secret: { group: "", resource: "secrets" },
  Event: { group: "", resource: "events" },
  ConfigMap: { group: "", resource: "configmaps" },
  Node: { group: "", resource: "nodes" },
  Lease: { group: "coordination.k8s.io", resource: "leases" },
  TokenReview: { group: "authentication.k8s.io", resource: "tokenreviews" },
  SubjectAccessReview: { group: "authorization.k8s.io", resource: "subjectaccessreviews" },
};
const VERBS: Record<string, string> = {
  read: "get",
  list: "list",
  create: "create",
  patch: "patch",
  replace: "update",
  delete: "delete",
};

function sourceFiles(dir: string): string[] {
  return readdirSync(join(REPO_ROOT, dir), { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".ts"))
    .map((f) => join(dir, f));
}

/**
 * The permissions the agent's code needs, read from its calls into @kubernetes/client-node:
 * `readNamespacedPod` is get on pods, `listPodForAllNamespaces` list, a Watch or ListWatch on
 * `/api/v1/pods` is watch, `createTokenReview` is create on tokenreviews, and so on.
 */
function permissionsUsedBy(files: readonly string[]): Map<string, string[]> {
  const used = new Map<string, string[]>();
  const add = (k: string, where: string) => used.set(k, [...(used.get(k) ?? []), where]);
  const kindOf = (kind: string, where: string) => {
    const k = KINDS[kind];
    if (k === undefined) throw new Error(`${where}: add ${kind} to KINDS in this test`);
    return k;
  };
  for (const file of files) {
    const text = readFileSync(join(REPO_ROOT, file), "utf8");
    for (const m of text.matchAll(
      /\.(read|list|create|patch|replace|delete)Namespaced([A-Z][A-Za-z]*?)(Status)?\(/g,
    )) {
      const k = kindOf(m[2]!, file);
      add(key(k.group, k.resource + (m[3] ? "/status" : ""), VERBS[m[1]!]!), file);
    }
    for (const m of text.matchAll(/\.list([A-Z][A-Za-z]*)ForAllNamespaces\(/g)) {
      const k = kindOf(m[1]!, file);
      add(key(k.group, k.resource, "list"), file);
    }
    for (const m of text.matchAll(/\.create(TokenReview|SubjectAccessReview)\(/g)) {
      const k = kindOf(m[1]!, file);
      add(key(k.group, k.resource, "create"), file);
    }
    if (/\b(ListWatch|Watch|makeInformer)\b/.test(text) && /from "@kubernetes\/client-node"/.test(text)) {
      const paths = [...text.matchAll(/"\/api\/v1\/([a-z]+)"/g)].map((m) => m[1]!);
      if (/\b(extends Watch|new Watch|new ListWatch|makeInformer)\b/.test(text)) {
        if (paths.length === 0) throw new Error(`${file} watches something this test cannot name`);
        for (const r of paths) add(key("", r, "watch"), file);
      }
    }
  }
  return used;
}

describe("RBAC", function () {
  // Rendering, dynamic imports and local servers: slow on a busy machine, whatever the mocha config.
  this.timeout(30_000);
  let objects: readonly KubeObject[];
  before(function () {
    this.timeout(60_000);
    objects = render(MANIFESTS_DIR).objects;
  });

  it("uses no wildcard in any rule", () => {
    for (const tree of [objects, render(CERT_MANAGER_OVERLAY_DIR).objects])
      for (const o of tree.filter((x) => x.kind === "Role" || x.kind === "ClusterRole"))
        for (const r of o.rules as Rule[])
          for (const field of [r.apiGroups, r.resources, r.verbs, r.resourceNames])
            expect(field ?? [], `${o.kind}/${o.metadata.name}`).to.not.include("*");
  });

  describe("the agent", () => {
    it("is granted exactly the calls its code makes, cluster-wide", () => {
      const used = permissionsUsedBy(sourceFiles("agent"));
      const granted = new Set<string>();
      for (const { rule, namespace, from } of rulesFor(objects, "dynamic-volumes-agent")) {
        expect(namespace, `${from}: the agent serves every namespace`).to.equal(undefined);
        expect(rule.resourceNames ?? [], from).to.deep.equal([]);
        for (const g of rule.apiGroups ?? [])
          for (const r of rule.resources ?? []) for (const v of rule.verbs) granted.add(key(g, r, v));
      }
      const missing = [...used.keys()]
        .filter((k) => !granted.has(k))
        .map((k) => `${k} (used in ${used.get(k)!.join(", ")})`);
      const unused = [...granted].filter((k) => !used.has(k));
      expect(missing, "used by the agent but not granted").to.deep.equal([]);
      expect(unused, "granted but never used by the agent").to.deep.equal([]);
    });

    it("reads Secrets by name only, never lists or watches them", () => {
      const secretRules = rulesFor(objects, "dynamic-volumes-agent").filter((r) =>
        r.rule.resources?.includes("secrets"),
      );
      expect(secretRules.map((r) => r.rule.verbs)).to.deep.equal([["get"]]);
      expect(
        secretRules[0]!.from,
        "in its own ClusterRole, so it can be bound per namespace instead",
      ).to.equal("ClusterRole/dynamic-volumes-agent-secrets");
    });
  });

  describe("the mounter", () => {
    for (const [tree, dir] of [
      ["the base", MANIFESTS_DIR],
      ["the cert-manager overlay", CERT_MANAGER_OVERLAY_DIR],
    ] as const)
      it(`is bound to no Role or ClusterRole, not even through a group of service accounts (${tree})`, () => {
        const tree = render(dir).objects;
        const pod = podSpecOf(findObject(tree, "DaemonSet", "dynamic-volumes-mounter"));
        const account = pod.serviceAccountName!;
        expect(account).to.be.a("string");
        findObject(tree, "ServiceAccount", account);
        const bound = rulesOf(
          tree,
          (s) =>
            (s.kind === "ServiceAccount" && s.name === account && (s.namespace ?? NS) === NS) ||
            (s.kind === "Group" &&
              (s.name === "system:serviceaccounts" || s.name === `system:serviceaccounts:${NS}`)),
        );
        expect(bound.map((r) => r.from)).to.deep.equal([]);
        // Only system:authenticated remains (the CA's ConfigMap), and without a token the mounter is
        // not authenticated at all.
        expect(pod.automountServiceAccountToken).to.equal(false);
      });
  });

  describe("console users", () => {
    const authenticated = (s: Subject): boolean => s.kind === "Group" && s.name === "system:authenticated";
    const get = (resource: string, name: string | undefined, verb = "get", namespace = NS): Attributes => ({
      verb,
      group: "",
      resource,
      namespace,
      name,
    });

    for (const [tree, dir] of [
      ["the base", MANIFESTS_DIR],
      ["the cert-manager overlay", CERT_MANAGER_OVERLAY_DIR],
    ] as const)
      it(`may read the CA's ConfigMap, which dvctl reads, and nothing else (${tree})`, () => {
        const rules = rulesOf(render(dir).objects, authenticated);
        const allowed = (a: Attributes): boolean => rules.some((r) => ruleAllows(r.rule, r.namespace, a));
        expect(AGENT_NAMESPACE).to.equal(NS);
        expect(allowed(get("configmaps", CA_CONFIG_MAP))).to.equal(true);
        const refused: Attributes[] = [
          get("configmaps", CA_CONFIG_MAP, "list"),
          get("configmaps", CA_CONFIG_MAP, "watch"),
          get("configmaps", CA_CONFIG_MAP, "update"),
          get("configmaps", undefined, "list"),
          get("configmaps", "kube-root-ca.crt"),
          get("configmaps", CA_CONFIG_MAP, "get", "team-a"),
          get("secrets", "dynamic-volumes-tls"),
          get("secrets", "dynamic-volumes-signing-key"),
        ];
        expect(refused.filter(allowed)).to.deep.equal([]);
        expect(rules.map((r) => [r.from, r.namespace, r.rule])).to.deep.equal([
          [
            "Role/dynamic-volumes-ca-reader",
            NS,
            { apiGroups: [""], resources: ["configmaps"], resourceNames: [CA_CONFIG_MAP], verbs: ["get"] },
          ],
        ]);
      });
  });

  describe("the webhook's certificate bootstrap, run with the init container's arguments against a fake API server", () => {
    let api: FakeKubeApiServer;
    let dir: string;
    let args: string[];
    const MWCS = { apiPath: ADMISSIONREGISTRATION_V1, resource: "mutatingwebhookconfigurations" };
    const SECRETS = { apiPath: CORE_V1, resource: "secrets", namespace: NS };
    const T0 = new Date("2030-01-01T00:00:00Z");
    const DAY = 24 * 60 * 60 * 1000;

    const bootstrap = async (now: Date): Promise<void> => {
      const err: string[] = [];
      const code = await runCli(args, {
        env: {},
        stdout: () => undefined,
        stderr: (l) => err.push(l),
        kubeApi: () => new KubernetesCertsApi(api.kubeConfig()),
        log: createLogger({ name: "test", level: "silent" }),
        now: () => now,
      });
      expect(code, err.join("\n")).to.equal(0);
    };

    before(async function () {
      this.timeout(60_000);
      dir = await mkdtemp(join(tmpdir(), "dv-manifests-bootstrap-"));
      const pod = podSpecOf(findObject(objects, "Deployment", "dynamic-volumes-webhook"));
      const init = containerOf(pod, "certs", true);
      const env = envValues(init, { "metadata.namespace": NS });
      const writeDir = (init.volumeMounts ?? []).find((m) => m.name === "tls")!.mountPath;
      args = (init.args ?? [])
        .map((a) => expandVars(a, env))
        .map((a) => (a === `--write-dir=${writeDir}` ? `--write-dir=${dir}` : a));
      expect(args).to.include(`--write-dir=${dir}`);
      api = await FakeKubeApiServer.start();
      api.store.create(
        MWCS,
        structuredClone(findObject(objects, "MutatingWebhookConfiguration", "dynamic-volumes")),
      );
      await bootstrap(T0); // creates the Secret and sets the caBundle
      await bootstrap(new Date(T0.getTime() + 400 * DAY)); // the certificate expired: renews it
      await bootstrap(new Date(T0.getTime() + 3640 * DAY)); // the CA is within 30 days: renews both
    });
    after(async () => {
      await api?.close();
      await rm(dir, { recursive: true, force: true });
    });

    it("makes only requests its service account's RBAC allows, and uses every right it has", () => {
      const { denied, unused } = authorize(api.requests, rulesFor(objects, "dynamic-volumes-webhook"));
      expect(denied).to.deep.equal([]);
      expect(unused).to.deep.equal([]);
      expect(new Set(api.requests.map((r) => r.method))).to.deep.equal(
        new Set(["GET", "POST", "PUT", "PATCH"]),
      );
    });

    it("writes the Secret that the agents mount, with a certificate for the names the cert-manager overlay issues", () => {
      const agentTls = podSpecOf(findObject(objects, "DaemonSet", "dynamic-volumes-agent")).volumes!.find(
        (v) => v.name === "tls",
      )!;
      const secret = api.store.get(SECRETS, agentTls.secret!.secretName!) as
        (StoreObject & V1Secret) | undefined;
      expect(secret?.type).to.equal("kubernetes.io/tls");
      const cert = Buffer.from(secret!.data!["tls.crt"]!, "base64").toString("utf8");
      const sans = certSubjectAltNames(cert);
      const certificate = findObject(
        render(CERT_MANAGER_OVERLAY_DIR).objects,
        "Certificate",
        "dynamic-volumes-webhook",
      );
      const spec = certificate.spec as { dnsNames: string[]; ipAddresses: string[] };
      expect([...sans.dns].sort()).to.deep.equal([...spec.dnsNames].sort());
      expect(sans.ips).to.deep.equal(spec.ipAddresses);
      // The API server calls the MutatingWebhookConfiguration's Service by its .svc name.
      const mwc = findObject(objects, "MutatingWebhookConfiguration", "dynamic-volumes");
      const service = (
        mwc.webhooks as { clientConfig: { service: { name: string; namespace: string } } }[]
      )[0]!.clientConfig.service;
      expect(sans.dns).to.include.members(serviceDnsNames(service.name, service.namespace));
    });

    it("publishes its CA, and nothing else, in the ConfigMap that dvctl reads", () => {
      const cm = api.store.get({ apiPath: CORE_V1, resource: "configmaps", namespace: NS }, CA_CONFIG_MAP) as
        (StoreObject & V1ConfigMap) | undefined;
      expect(Object.keys(cm?.data ?? {})).to.deep.equal([CA_CONFIG_MAP_KEY]);
      const secret = api.store.get(SECRETS, "dynamic-volumes-tls") as (StoreObject & V1Secret) | undefined;
      const ca = Buffer.from(secret!.data!["ca.crt"]!, "base64").toString("utf8");
      // After the renewal: the new CA first, the first run's CA after it for agents not yet reloaded.
      expect(cm!.data![CA_CONFIG_MAP_KEY]!.startsWith(ca.trimEnd())).to.equal(true);
      expect(cm!.data![CA_CONFIG_MAP_KEY]!.match(/-----BEGIN CERTIFICATE-----/g)).to.have.length(2);
      expect(JSON.stringify(cm)).to.not.match(/PRIVATE KEY/);
    });

    it("puts its CA into the caBundle of the MutatingWebhookConfiguration, and the PEM files into the write directory", async () => {
      const mwc = api.store.get(MWCS, "dynamic-volumes") as
        (StoreObject & V1MutatingWebhookConfiguration) | undefined;
      const ca = await readFile(join(dir, "ca.crt"), "utf8");
      const bundles = (mwc?.webhooks ?? []).map((w) =>
        Buffer.from(w.clientConfig.caBundle ?? "", "base64").toString("utf8"),
      );
      expect(bundles).to.have.length(1);
      // The renewed CA first; the first run's CA, not yet expired, stays trusted for the webhook
      // pods that still serve its certificate until they restart.
      expect(bundles[0]!.startsWith(ca.trimEnd())).to.equal(true);
      expect(bundles[0]!.match(/-----BEGIN CERTIFICATE-----/g)).to.have.length(2);
      const secret = api.store.get(SECRETS, "dynamic-volumes-tls") as (StoreObject & V1Secret) | undefined;
      expect(await readFile(join(dir, "tls.crt"), "utf8")).to.equal(
        Buffer.from(secret!.data!["tls.crt"]!, "base64").toString("utf8"),
      );
      expect(readdirSync(dir).sort()).to.deep.equal(["ca.crt", "tls.crt", "tls.key"]);
    });
  });
});

describe("the webhook's certificate renewal, run with the webhook container's flags against a fake API server", () => {
  let api: FakeKubeApiServer;
  let dir: string;
  let objects: readonly KubeObject[];
  const MWCS = { apiPath: ADMISSIONREGISTRATION_V1, resource: "mutatingwebhookconfigurations" };
  const T0 = new Date("2030-01-01T00:00:00Z");
  const DAY = 24 * 60 * 60 * 1000;
  const steps: string[] = [];

  before(async function () {
    this.timeout(60_000);
    objects = render(MANIFESTS_DIR).objects;
    dir = await mkdtemp(join(tmpdir(), "dv-manifests-renewal-"));
    const c = containerOf(podSpecOf(findObject(objects, "Deployment", "dynamic-volumes-webhook")), "webhook");
    const env = envValues(c, { "metadata.namespace": NS });
    const keyFile = join(dir, "signing-key");
    await writeFile(keyFile, "rbac-test-signing-key-0123456789");
    const config = loadWebhookConfig(
      (c.args ?? []).map((a) => expandVars(a, env)),
      { ...env, DV_SIGNING_KEY_FILE: keyFile },
    );
    const renewal = config.certificateRenewal!;
    expect(renewal, "the manifest turns the renewal on").to.not.equal(undefined);
    api = await FakeKubeApiServer.start();
    api.store.create(
      MWCS,
      structuredClone(findObject(objects, "MutatingWebhookConfiguration", "dynamic-volumes")),
    );
    const check = async (at: Date): Promise<void> => {
      const r = await checkCertificates(new KubernetesCertsApi(api.kubeConfig()), {
        ...renewal,
        certFile: join(dir, "tls.crt"),
        keyFile: join(dir, "tls.key"),
        reload: () => false,
        now: () => at,
        log: createLogger({ name: "test", level: "silent" }),
      });
      steps.push(r.step);
    };
    await check(T0); // no Secret yet: created
    await check(new Date(T0.getTime() + 340 * DAY)); // serving certificate due: renewed under the CA
    await check(new Date(T0.getTime() + 3600 * DAY)); // the CA within 60 days: a new CA staged
    await check(new Date(T0.getTime() + 3600 * DAY + 2 * 60 * 60 * 1000)); // an hour later: promoted
  });
  after(async () => {
    await api?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("goes through creation, renewal under the same CA, and a CA rotation", () => {
    expect(steps).to.deep.equal(["created", "renew-serving", "stage-ca", "promote-ca"]);
  });

  it("makes only requests the webhook's service account may make, and needs every right it has", () => {
    const { denied, unused } = authorize(api.requests, rulesFor(objects, "dynamic-volumes-webhook"));
    expect(denied).to.deep.equal([]);
    expect(unused).to.deep.equal([]);
  });
});
