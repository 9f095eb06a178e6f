/**
 * manifests/overlays/csi/ against the code: the CSIDriver the webhook's volume names, the socket the
 * mounter serves and the registrar registers (the same node path, seen through each container's
 * mounts), the kubelet directories, and the webhook's configuration in CSI mode.
 */
import type { V1Container, V1PodSpec } from "@kubernetes/client-node";
import { Environment } from "@marcbachmann/cel-js";
import { expect } from "chai";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import { MOUNTER_OPTIONS, loadMounterConfig } from "../../../agent/mounter/config.js";
import { CSI_DRIVER_NAME, VOLUME_NAME } from "../../../shared/names.js";
import { loadWebhookConfig } from "../../../webhook/config.js";
import { mutatePod } from "../../../webhook/mutate.js";
import {
  MANIFESTS_DIR,
  containerOf,
  envValues,
  findObject,
  mountOf,
  objectId,
  podSpecOf,
  render,
  volumeOf,
  type KubeObject,
} from "../../support/manifests.js";
import { applyJsonPatch, validatePod } from "../../support/patch.js";

const CSI_OVERLAY_DIR = join(MANIFESTS_DIR, "overlays/csi");
const KUBELET_DIR = "/var/lib/kubelet";
/** The socket's node path: the kubelet's plugin directory for the driver, as the CSI docs place it. */
const CSI_SOCKET = `${KUBELET_DIR}/plugins/${CSI_DRIVER_NAME}/csi.sock`;
const FIELDS = { "metadata.namespace": "dynamic-volumes", "spec.nodeName": "node-a" };

type Spec = Record<string, unknown>;

/** The node path behind `path` in a container: through the mount that holds it, to its hostPath. */
function nodePath(pod: V1PodSpec, c: V1Container, path: string): string {
  const mount = (c.volumeMounts ?? [])
    .filter((m) => path === m.mountPath || path.startsWith(`${m.mountPath}/`))
    .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
  if (mount === undefined) throw new Error(`${path} is in none of container "${c.name}"'s mounts`);
  const host = volumeOf(pod, mount.name).hostPath?.path;
  if (host === undefined) throw new Error(`volume "${mount.name}" is not a hostPath`);
  return posix.join(host, posix.relative(mount.mountPath, path));
}

/** `--flag=value` and `--flag value` pairs. */
function flagMap(args: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const eq = /^--([a-z][a-z0-9-]*)=(.*)$/.exec(a);
    if (eq) out.set(eq[1]!, eq[2]!);
    else if (/^--[a-z]/.test(a)) out.set(a.slice(2), args[++i]!);
    else throw new Error(`unexpected argument ${a}`);
  }
  return out;
}

describe("manifests/overlays/csi/", function () {
  this.timeout(60_000);
  let objects: readonly KubeObject[];
  let base: readonly KubeObject[];
  let mounterPod: V1PodSpec;
  let mounter: V1Container;
  let registrar: V1Container;
  let webhook: V1Container;

  before(function () {
    objects = render(CSI_OVERLAY_DIR).objects;
    base = render(MANIFESTS_DIR).objects;
    mounterPod = podSpecOf(findObject(objects, "DaemonSet", "dynamic-volumes-mounter"));
    mounter = containerOf(mounterPod, "mounter");
    registrar = containerOf(mounterPod, "node-driver-registrar");
    webhook = containerOf(podSpecOf(findObject(objects, "Deployment", "dynamic-volumes-webhook")), "webhook");
  });

  it("ships the CSIDriver the webhook's volume names: node-only, pod info on mount, inline volumes only, no fsGroup walk", () => {
    const driver = findObject(objects, "CSIDriver", CSI_DRIVER_NAME);
    expect(driver.apiVersion).to.equal("storage.k8s.io/v1");
    expect(driver.spec).to.deep.include({
      attachRequired: false,
      podInfoOnMount: true,
      volumeLifecycleModes: ["Ephemeral"],
      fsGroupPolicy: "None",
    });
  });

  it("runs the webhook in csi mode, and its configuration injects a volume of that driver", async () => {
    const env = envValues(webhook, FIELDS);
    expect(env.DV_VOLUME_MODE).to.equal("csi");
    const dir = await mkdtemp(join(tmpdir(), "dv-csi-overlay-"));
    try {
      // The files the env names are the cluster's; here a key of the right shape stands in.
      const key = join(dir, "signing-key");
      await writeFile(key, `${Buffer.alloc(32, 7).toString("base64")}\n`);
      const config = loadWebhookConfig([], { ...env, DV_SIGNING_KEY_FILE: key });
      expect(config.volumeMode).to.equal("csi");
      const pod = {
        apiVersion: "v1",
        kind: "Pod",
        metadata: { generateName: "a-" },
        spec: { containers: [{ name: "a", image: "busybox" }] },
      };
      const r = mutatePod(pod, "team-a", config, () => "ab".repeat(16));
      if (r.kind !== "patched") throw new Error(JSON.stringify(r));
      const out = applyJsonPatch(pod, r.patch) as unknown as { spec: V1PodSpec };
      validatePod(out);
      expect(volumeOf(out.spec, VOLUME_NAME).csi).to.deep.equal({ driver: CSI_DRIVER_NAME, readOnly: true });
      expect(findObject(objects, "CSIDriver", volumeOf(out.spec, VOLUME_NAME).csi!.driver)).to.not.equal(
        undefined,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("has the mounter serve, and the registrar register, one socket: the kubelet's plugin directory for the driver", () => {
    const mounterArgs = flagMap(mounter.args ?? []);
    const served = mounterArgs.get("csi-socket");
    expect(served, "--csi-socket").to.be.a("string");
    expect(nodePath(mounterPod, mounter, served!)).to.equal(CSI_SOCKET);
    const registrarArgs = flagMap(registrar.args ?? []);
    expect(nodePath(mounterPod, registrar, registrarArgs.get("csi-address")!)).to.equal(CSI_SOCKET);
    expect(registrarArgs.get("kubelet-registration-path"), "what the kubelet will dial").to.equal(CSI_SOCKET);
    const probe = registrar.livenessProbe?.exec?.command ?? [];
    expect(probe).to.include(`--kubelet-registration-path=${CSI_SOCKET}`);
  });

  it("gives the registrar the kubelet's registration directory at /registration, and no port", () => {
    const m = mountOf(registrar, "registration");
    expect(m.mountPath).to.equal("/registration");
    expect(volumeOf(mounterPod, "registration").hostPath?.path).to.equal(`${KUBELET_DIR}/plugins_registry`);
    expect(registrar.ports ?? []).to.deep.equal([]);
    expect(registrar.image).to.match(
      /^registry\.k8s\.io\/sig-storage\/csi-node-driver-registrar:v2\.\d+\.\d+$/,
    );
    expect(registrar.securityContext?.privileged ?? false).to.equal(false);
    expect(registrar.securityContext?.allowPrivilegeEscalation).to.equal(false);
    expect(registrar.securityContext?.capabilities?.drop).to.deep.equal(["ALL"]);
    expect(registrar.resources?.limits?.memory).to.be.a("string");
  });

  it("mounts the kubelet's pods directory into the mounter at the same path, Bidirectional, for the target paths", () => {
    const m = mountOf(mounter, "kubelet-pods");
    expect(m.mountPath).to.equal(`${KUBELET_DIR}/pods`);
    expect(m.mountPropagation).to.equal("Bidirectional");
    expect(m.readOnly ?? false).to.equal(false);
    expect(volumeOf(mounterPod, "kubelet-pods").hostPath?.path).to.equal(`${KUBELET_DIR}/pods`);
    expect(mounter.securityContext?.privileged, "Bidirectional needs a privileged container").to.equal(true);
  });

  it("gives the mounter its node's name for NodeGetInfo", () => {
    expect(envValues(mounter, FIELDS).NODE_NAME).to.equal(FIELDS["spec.nodeName"]);
  });

  it("passes the mounter only flags it takes, and its loader reads the CSI socket and node id from them", () => {
    const known = new Set(Object.values(MOUNTER_OPTIONS).map((o) => o.flag));
    const args = flagMap(mounter.args ?? []);
    expect([...args.keys()].filter((f) => !known.has(f))).to.deep.equal([]);
    const config = loadMounterConfig(
      [...args].map(([f, v]) => `--${f}=${v}`),
      envValues(mounter, FIELDS),
    );
    expect(config.csiSocket).to.equal(CSI_SOCKET);
    expect(config.nodeId).to.equal(FIELDS["spec.nodeName"]);
  });

  it("changes nothing but the webhook Deployment and the mounter DaemonSet, and adds only the CSIDriver and its policy", () => {
    const before = new Map(base.map((o) => [objectId(o), o]));
    const after = new Map(objects.map((o) => [objectId(o), o]));
    expect([...after.keys()].filter((id) => !before.has(id)).sort()).to.deep.equal([
      `CSIDriver//${CSI_DRIVER_NAME}`,
      "ValidatingAdmissionPolicy//dynamic-volumes-csi",
      "ValidatingAdmissionPolicyBinding//dynamic-volumes-csi",
      "ValidatingAdmissionPolicyBinding//dynamic-volumes-csi-kube-system",
    ]);
    expect([...before.keys()].filter((id) => !after.has(id))).to.deep.equal([]);
    const changed = [...before]
      .filter(([id, o]) => JSON.stringify(o) !== JSON.stringify(after.get(id)))
      .map(([id]) => id);
    expect(changed.sort()).to.deep.equal([
      "DaemonSet/dynamic-volumes/dynamic-volumes-mounter",
      "Deployment/dynamic-volumes/dynamic-volumes-webhook",
    ]);
    // In the webhook, only the mode.
    const baseWebhook = containerOf(
      podSpecOf(before.get("Deployment/dynamic-volumes/dynamic-volumes-webhook")!),
      "webhook",
    );
    expect(
      (webhook.env ?? []).filter((e) => !(baseWebhook.env ?? []).some((b) => b.name === e.name)),
    ).to.deep.equal([{ name: "DV_VOLUME_MODE", value: "csi" }]);
    expect(
      (specOf(findObject(objects, "DaemonSet", "dynamic-volumes-mounter")).updateStrategy as Spec).type,
    ).to.equal("OnDelete");
  });
});

function specOf(o: KubeObject): Spec {
  return o.spec as Spec;
}

describe("manifests/overlays/csi/: the policy for namespaces the webhook does not see", function () {
  this.timeout(60_000);
  let objects: readonly KubeObject[];
  before(() => {
    objects = render(CSI_OVERLAY_DIR).objects;
  });

  // Kubernetes runs this CEL with cel-go; cel-js runs the same expressions here. The policy calls
  // only size, lowerAscii, join and the macros has, filter and map (lowerAscii on ASCII input only:
  // the API server has already validated the driver name as a DNS subdomain).
  const env = new Environment({ unlistedVariablesAreDyn: true, homogeneousAggregateLiterals: false });
  function decide(pod: Spec): { denied: boolean; message?: string } {
    const spec = specOf(findObject(objects, "ValidatingAdmissionPolicy", "dynamic-volumes-csi")) as {
      variables: Array<{ name: string; expression: string }>;
      validations: Array<{ expression: string; messageExpression: string }>;
    };
    const variables: Record<string, unknown> = {};
    const ctx = { object: pod, variables };
    for (const v of spec.variables) variables[v.name] = env.evaluate(v.expression, ctx);
    for (const v of spec.validations)
      if (env.evaluate(v.expression, ctx) !== true)
        return { denied: true, message: env.evaluate(v.messageExpression, ctx) as string };
    return { denied: false };
  }

  const rows: Array<[string, Spec[] | undefined, RegExp | null]> = [
    [
      "[error] the webhook's own volume, copied",
      [{ name: VOLUME_NAME, csi: { driver: CSI_DRIVER_NAME, readOnly: true } }],
      /volume\(s\) "dynamic-volumes" use the CSI driver csi\.dynamic-volumes\.io/,
    ],
    [
      "[error] a writable one under another name",
      [{ name: "x", csi: { driver: CSI_DRIVER_NAME, readOnly: false } }],
      /"x"/,
    ],
    ["[error] the driver in capitals", [{ name: "y", csi: { driver: "CSI.Dynamic-Volumes.IO" } }], /"y"/],
    ["[ok] another CSI driver", [{ name: "s", csi: { driver: "secrets-store.csi.k8s.io" } }], null],
    [
      "[ok] ordinary volumes",
      [
        { name: "e", emptyDir: {} },
        { name: "h", hostPath: { path: "/data" } },
      ],
      null,
    ],
    ["[ok] no volumes", undefined, null],
  ];
  for (const [label, volumes, message] of rows)
    it(label, () => {
      const pod = { spec: { containers: [{ name: "c", image: "i" }], ...(volumes ? { volumes } : {}) } };
      const r = decide(pod);
      expect(r.denied).to.equal(message !== null);
      if (message)
        expect(r.message)
          .to.match(message)
          .and.match(/dynamic-volumes\/injection=enabled/);
    });

  it("is bound where the hostPath policy is: every namespace without the label but our own, and kube-system", () => {
    for (const [csi, hostPath] of [
      ["dynamic-volumes-csi", "dynamic-volumes-hostpath"],
      ["dynamic-volumes-csi-kube-system", "dynamic-volumes-hostpath-kube-system"],
    ] as const) {
      const a = specOf(findObject(objects, "ValidatingAdmissionPolicyBinding", csi));
      const b = specOf(findObject(objects, "ValidatingAdmissionPolicyBinding", hostPath));
      expect(a.policyName).to.equal("dynamic-volumes-csi");
      expect(a.validationActions).to.deep.equal(["Deny"]);
      expect(a.matchResources).to.deep.equal(b.matchResources);
    }
  });
});
