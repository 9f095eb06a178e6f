/**
 * What the webhook's patch does to a pod's Pod Security level. In csi mode a pod that meets
 * `restricted` still meets it after the patch (and so `baseline`); in hostPath mode the patched pod
 * fails `baseline` on its hostPath volume, which is why hostPath mode needs `privileged` namespaces.
 * The checker (pod-security-standards.ts) is proven first: every control fails on a pod made to
 * break it, and only that control.
 */
import { expect } from "chai";
import { CSI_DRIVER_NAME } from "../../../shared/names.js";
import { mutatePod, type MutateConfig, type VolumeMode } from "../../../webhook/mutate.js";
import { applyJsonPatch, validatePod } from "../../support/patch.js";
import { podSecurityViolations, type Level, type Violation } from "./pod-security-standards.js";

type Json = Record<string, unknown>;

const cfgFor = (volumeMode: VolumeMode): MutateConfig => ({
  root: "/var/lib/dynamic-volumes",
  defaultMountPath: "/datasets",
  volumeMode,
  signingKey: Buffer.from("pod-security-test-signing-key-0123"),
});
let counter = 0;
const mintId = (): string => (++counter).toString(16).padStart(32, "0");

/** A container that meets `restricted` on its own. */
const hardened = (name: string, extra: Json = {}): Json => ({
  name,
  image: "registry.example.com/app:1.0",
  securityContext: {
    allowPrivilegeEscalation: false,
    runAsNonRoot: true,
    seccompProfile: { type: "RuntimeDefault" },
    capabilities: { drop: ["ALL"] },
  },
  ...extra,
});

const apiAccess = {
  name: "kube-api-access-x1",
  projected: {
    sources: [
      { serviceAccountToken: { path: "token", expirationSeconds: 3607 } },
      { configMap: { name: "kube-root-ca.crt", items: [{ key: "ca.crt", path: "ca.crt" }] } },
    ],
  },
};

/** Pods that meet `restricted`, in the shapes workloads have. */
const CORPUS: ReadonlyArray<[string, () => Json]> = [
  [
    "a Deployment's pod: generateName, pod-level settings only, the API token volume",
    () => ({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { generateName: "web-7d9f-", namespace: "team-a", labels: { app: "web" } },
      spec: {
        securityContext: { runAsNonRoot: true, runAsUser: 10001, seccompProfile: { type: "RuntimeDefault" } },
        containers: [
          {
            name: "web",
            image: "registry.example.com/web:2",
            ports: [{ containerPort: 8080 }],
            securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] } },
            volumeMounts: [
              {
                name: apiAccess.name,
                mountPath: "/var/run/secrets/kubernetes.io/serviceaccount",
                readOnly: true,
              },
            ],
          },
        ],
        volumes: [apiAccess],
      },
    }),
  ],
  [
    "several containers, a classic init container and a native sidecar, container-level settings, NET_BIND_SERVICE",
    () => ({
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        name: "etl",
        namespace: "team-a",
        annotations: { "dynamic-volumes/containers": "app,log-shipper" },
      },
      spec: {
        initContainers: [
          hardened("migrate"),
          hardened("log-shipper", {
            restartPolicy: "Always",
            volumeMounts: [{ name: "logs", mountPath: "/var/log/app" }],
          }),
        ],
        containers: [
          hardened("app", { volumeMounts: [{ name: "logs", mountPath: "/var/log/app" }] }),
          {
            ...hardened("proxy"),
            securityContext: {
              allowPrivilegeEscalation: false,
              runAsNonRoot: true,
              runAsUser: 1000,
              seccompProfile: { type: "Localhost", localhostProfile: "profiles/proxy.json" },
              capabilities: { drop: ["ALL"], add: ["NET_BIND_SERVICE"] },
            },
          },
        ],
        volumes: [{ name: "logs", emptyDir: {} }],
      },
    }),
  ],
  [
    "every restricted volume type, another CSI driver included, and a compliant ephemeral container",
    () => ({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "kitchen-sink", namespace: "team-a" },
      spec: {
        securityContext: {
          runAsNonRoot: true,
          runAsUser: 2000,
          runAsGroup: 2000,
          fsGroup: 2000,
          seccompProfile: { type: "RuntimeDefault" },
        },
        containers: [hardened("main", { volumeMounts: [{ name: "cfg", mountPath: "/etc/app" }] })],
        ephemeralContainers: [
          {
            name: "debugger",
            image: "busybox:1.36",
            targetContainerName: "main",
            securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] } },
          },
        ],
        volumes: [
          { name: "cfg", configMap: { name: "app" } },
          { name: "creds", secret: { secretName: "app" } },
          { name: "scratch", emptyDir: { sizeLimit: "1Gi" } },
          {
            name: "info",
            downwardAPI: { items: [{ path: "labels", fieldRef: { fieldPath: "metadata.labels" } }] },
          },
          { name: "data", persistentVolumeClaim: { claimName: "data" } },
          {
            name: "cache",
            ephemeral: {
              volumeClaimTemplate: {
                spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } } },
              },
            },
          },
          {
            name: "certs",
            csi: {
              driver: "secrets-store.csi.k8s.io",
              readOnly: true,
              volumeAttributes: { secretProviderClass: "app" },
            },
          },
          apiAccess,
        ],
      },
    }),
  ],
  [
    "AppArmor, SELinux, safe sysctls and an explicit procMount, all at allowed values",
    () => ({
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        name: "tuned",
        namespace: "team-a",
        annotations: { "container.apparmor.security.beta.kubernetes.io/main": "runtime/default" },
      },
      spec: {
        securityContext: {
          runAsNonRoot: true,
          seccompProfile: { type: "RuntimeDefault" },
          appArmorProfile: { type: "RuntimeDefault" },
          seLinuxOptions: { type: "container_t", level: "s0:c123,c456" },
          sysctls: [
            { name: "net.ipv4.ip_unprivileged_port_start", value: "0" },
            { name: "net.ipv4.tcp_keepalive_time", value: "600" },
          ],
        },
        containers: [
          hardened("main", {
            securityContext: {
              allowPrivilegeEscalation: false,
              procMount: "Default",
              appArmorProfile: { type: "Localhost", localhostProfile: "k8s-main" },
              capabilities: { drop: ["ALL"] },
            },
          }),
        ],
      },
    }),
  ],
];

function controls(vs: readonly Violation[]): string[] {
  return [...new Set(vs.map((v) => v.control))];
}

/** The pod after the webhook's patch in `mode`, applied by an independent RFC 6902 implementation. */
function patched(pod: Json, mode: VolumeMode): Json {
  const r = mutatePod(pod, "team-a", cfgFor(mode), mintId);
  if (r.kind !== "patched") throw new Error(`expected a patch, got ${JSON.stringify(r)}`);
  const out = applyJsonPatch(pod, r.patch);
  validatePod(out);
  return out;
}

describe("Pod Security Standards and the webhook's patch", () => {
  describe("the checker (an independent reading of the published controls)", () => {
    const base = CORPUS[0]![1];
    const spec = (p: Json): Json => p.spec as Json;
    const c0 = (p: Json): Json => (spec(p).containers as Json[])[0]!;
    const sc0 = (p: Json): Json => c0(p).securityContext as Json;
    const withEphemeral = (p: Json, sc: Json): void => {
      spec(p).ephemeralContainers = [
        {
          name: "dbg",
          image: "busybox",
          securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] }, ...sc },
        },
      ];
    };
    const rows: Array<[Level, string, (p: Json) => void]> = [
      ["baseline", "HostProcess", (p) => (sc0(p).windowsOptions = { hostProcess: true })],
      [
        "baseline",
        "HostProcess",
        (p) => ((spec(p).securityContext as Json).windowsOptions = { hostProcess: true }),
      ],
      ["baseline", "Host Namespaces", (p) => (spec(p).hostNetwork = true)],
      ["baseline", "Host Namespaces", (p) => (spec(p).hostPID = true)],
      ["baseline", "Host Namespaces", (p) => (spec(p).hostIPC = true)],
      ["baseline", "Privileged Containers", (p) => (sc0(p).privileged = true)],
      ["baseline", "Privileged Containers", (p) => withEphemeral(p, { privileged: true })],
      ["baseline", "Capabilities", (p) => (sc0(p).capabilities = { drop: ["ALL"], add: ["SYS_ADMIN"] })],
      [
        "baseline",
        "HostPath Volumes",
        (p) => (spec(p).volumes as Json[]).push({ name: "h", hostPath: { path: "/data" } }),
      ],
      ["baseline", "Host Ports", (p) => (c0(p).ports = [{ containerPort: 8080, hostPort: 80 }])],
      ["baseline", "AppArmor", (p) => (sc0(p).appArmorProfile = { type: "Unconfined" })],
      [
        "baseline",
        "AppArmor",
        (p) =>
          ((p.metadata as Json).annotations = {
            "container.apparmor.security.beta.kubernetes.io/web": "unconfined",
          }),
      ],
      ["baseline", "SELinux", (p) => (sc0(p).seLinuxOptions = { type: "spc_t" })],
      [
        "baseline",
        "SELinux",
        (p) => ((spec(p).securityContext as Json).seLinuxOptions = { user: "system_u" }),
      ],
      ["baseline", "/proc Mount Type", (p) => (sc0(p).procMount = "Unmasked")],
      ["baseline", "Seccomp", (p) => (sc0(p).seccompProfile = { type: "Unconfined" })],
      [
        "baseline",
        "Sysctls",
        (p) => ((spec(p).securityContext as Json).sysctls = [{ name: "kernel.msgmax", value: "1" }]),
      ],
      [
        "restricted",
        "Volume Types",
        (p) => (spec(p).volumes as Json[]).push({ name: "n", nfs: { server: "nfs", path: "/" } }),
      ],
      ["restricted", "Privilege Escalation", (p) => delete sc0(p).allowPrivilegeEscalation],
      ["restricted", "Privilege Escalation", (p) => withEphemeral(p, { allowPrivilegeEscalation: true })],
      ["restricted", "Running as Non-root", (p) => delete (spec(p).securityContext as Json).runAsNonRoot],
      ["restricted", "Running as Non-root", (p) => (sc0(p).runAsNonRoot = false)],
      ["restricted", "Running as Non-root user", (p) => (sc0(p).runAsUser = 0)],
      ["restricted", "Seccomp", (p) => delete (spec(p).securityContext as Json).seccompProfile],
      ["restricted", "Capabilities", (p) => (sc0(p).capabilities = { drop: ["NET_RAW"] })],
      ["restricted", "Capabilities", (p) => (sc0(p).capabilities = { drop: ["ALL"], add: ["CHOWN"] })],
    ];
    for (const [level, control, breakIt] of rows)
      it(`[error] ${level} "${control}": fails a pod made to break it, on that control alone`, () => {
        const pod = base();
        breakIt(pod);
        expect(controls(podSecurityViolations(pod, level))).to.deep.equal([control]);
        if (level === "baseline")
          expect(controls(podSecurityViolations(pod, "restricted"))).to.include(control);
      });

    it("[ok] a pod with no security settings at all meets baseline and fails restricted", () => {
      const pod = { spec: { containers: [{ name: "c", image: "busybox" }] } };
      expect(podSecurityViolations(pod, "baseline")).to.deep.equal([]);
      expect(controls(podSecurityViolations(pod, "restricted"))).to.have.members([
        "Privilege Escalation",
        "Running as Non-root",
        "Seccomp",
        "Capabilities",
      ]);
    });
  });

  for (const [label, make] of CORPUS)
    describe(`a restricted pod: ${label}`, () => {
      it("[ok] meets restricted before the patch", () => {
        expect(podSecurityViolations(make(), "restricted")).to.deep.equal([]);
      });

      it("[ok] still meets restricted (and baseline) after the csi-mode patch, which adds the CSI volume", () => {
        const out = patched(make(), "csi");
        expect(podSecurityViolations(out, "restricted")).to.deep.equal([]);
        expect(podSecurityViolations(out, "baseline")).to.deep.equal([]);
        const volumes = (out.spec as { volumes: Json[] }).volumes;
        expect(volumes.filter((v) => (v.csi as Json | undefined)?.driver === CSI_DRIVER_NAME)).to.have.length(
          1,
        );
      });

      it("[error] fails baseline after the hostPath-mode patch, on HostPath Volumes alone", () => {
        const out = patched(make(), "hostPath");
        expect(controls(podSecurityViolations(out, "baseline"))).to.deep.equal(["HostPath Volumes"]);
        expect(controls(podSecurityViolations(out, "restricted"))).to.have.members([
          "HostPath Volumes",
          "Volume Types",
        ]);
      });
    });
});
