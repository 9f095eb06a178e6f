/**
 * The Pod Security Standards' `baseline` and `restricted` profiles as a checker, transcribed control
 * by control from the published list (https://kubernetes.io/docs/concepts/security/pod-security-standards/,
 * Kubernetes 1.30 and later: AppArmor fields, the five newer sysctls, `container_engine_t`). Each
 * control names its restricted fields and its allowed values as the page does; `spec.containers`,
 * `spec.initContainers` and `spec.ephemeralContainers` are all checked, as the page says.
 *
 * Not Pod Security Admission itself (which runs in the API server): an independent reading of the
 * same list, for the tests that show what the webhook's patch does to a pod's level. Linux pods only
 * (the page exempts `spec.os.name: windows` from some restricted controls).
 */

export type Level = "baseline" | "restricted";

/** One failed control: its name as the page spells it, and what failed. */
export interface Violation {
  readonly control: string;
  readonly detail: string;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function obj(v: unknown): Json {
  return isObject(v) ? v : {};
}

function list(v: unknown): unknown[] {
  return Array.isArray(v) ? (v as unknown[]) : [];
}

/** Baseline "Capabilities": what `capabilities.add` may hold. */
export const BASELINE_CAPABILITIES: readonly string[] = [
  "AUDIT_WRITE",
  "CHOWN",
  "DAC_OVERRIDE",
  "FOWNER",
  "FSETID",
  "KILL",
  "MKNOD",
  "NET_BIND_SERVICE",
  "SETFCAP",
  "SETGID",
  "SETPCAP",
  "SETUID",
  "SYS_CHROOT",
];

/** Baseline "Sysctls": the safe set. */
export const SAFE_SYSCTLS: readonly string[] = [
  "kernel.shm_rmid_forced",
  "net.ipv4.ip_local_port_range",
  "net.ipv4.ip_unprivileged_port_start",
  "net.ipv4.tcp_syncookies",
  "net.ipv4.ping_group_range",
  "net.ipv4.ip_local_reserved_ports",
  "net.ipv4.tcp_keepalive_time",
  "net.ipv4.tcp_fin_timeout",
  "net.ipv4.tcp_keepalive_intvl",
  "net.ipv4.tcp_keepalive_probes",
];

/** Baseline "SELinux": the allowed `seLinuxOptions.type` values. */
export const SELINUX_TYPES: readonly string[] = [
  "",
  "container_t",
  "container_init_t",
  "container_kvm_t",
  "container_engine_t",
];

/** Restricted "Volume Types": a volume must set one of these. */
export const RESTRICTED_VOLUME_TYPES: readonly string[] = [
  "configMap",
  "csi",
  "downwardAPI",
  "emptyDir",
  "ephemeral",
  "persistentVolumeClaim",
  "projected",
  "secret",
];

const CONTAINER_FIELDS = ["containers", "initContainers", "ephemeralContainers"] as const;

interface Named {
  readonly where: string;
  readonly c: Json;
  readonly sc: Json;
}

function containersOf(spec: Json): Named[] {
  const out: Named[] = [];
  for (const field of CONTAINER_FIELDS)
    list(spec[field]).forEach((c, i) =>
      out.push({ where: `spec.${field}[${i}]`, c: obj(c), sc: obj(obj(c).securityContext) }),
    );
  return out;
}

/** The controls of `level` that `pod` fails; empty when it meets the level. */
export function podSecurityViolations(pod: unknown, level: Level): Violation[] {
  const out: Violation[] = [];
  const fail = (control: string, detail: string): void => void out.push({ control, detail });
  const metadata = obj(obj(pod).metadata);
  const spec = obj(obj(pod).spec);
  const psc = obj(spec.securityContext);
  const containers = containersOf(spec);
  const allowed = (v: unknown, values: readonly unknown[]): boolean => v === undefined || values.includes(v);

  // ---- Baseline
  for (const [where, sc] of [["spec", psc] as const, ...containers.map((n) => [n.where, n.sc] as const)])
    if (!allowed(obj(sc.windowsOptions).hostProcess, [false]))
      fail("HostProcess", `${where}.securityContext.windowsOptions.hostProcess`);

  for (const f of ["hostNetwork", "hostPID", "hostIPC"])
    if (!allowed(spec[f], [false])) fail("Host Namespaces", `spec.${f}`);

  for (const n of containers) {
    if (!allowed(n.sc.privileged, [false]))
      fail("Privileged Containers", `${n.where}.securityContext.privileged`);
    for (const cap of list(obj(n.sc.capabilities).add))
      if (!BASELINE_CAPABILITIES.includes(cap as string))
        fail("Capabilities", `${n.where}.securityContext.capabilities.add: ${String(cap)}`);
    for (const p of list(n.c.ports))
      if (!allowed(obj(p).hostPort, [0])) fail("Host Ports", `${n.where}.ports[].hostPort`);
    if (!allowed(n.sc.procMount, ["Default"]))
      fail("/proc Mount Type", `${n.where}.securityContext.procMount`);
  }

  list(spec.volumes).forEach((v, i) => {
    if (obj(v).hostPath !== undefined) fail("HostPath Volumes", `spec.volumes[${i}].hostPath`);
  });

  const scs: Array<[string, Json]> = [
    ["spec.securityContext", psc],
    ...containers.map((n) => [`${n.where}.securityContext`, n.sc] as [string, Json]),
  ];
  for (const [where, sc] of scs) {
    if (!allowed(obj(sc.appArmorProfile).type, ["RuntimeDefault", "Localhost"]))
      fail("AppArmor", `${where}.appArmorProfile.type`);
    const se = obj(sc.seLinuxOptions);
    if (!allowed(se.type, SELINUX_TYPES)) fail("SELinux", `${where}.seLinuxOptions.type`);
    for (const f of ["user", "role"])
      if (!allowed(se[f], [""])) fail("SELinux", `${where}.seLinuxOptions.${f}`);
    if (!allowed(obj(sc.seccompProfile).type, ["RuntimeDefault", "Localhost"]))
      fail("Seccomp", `${where}.seccompProfile.type`);
  }
  for (const [key, value] of Object.entries(obj(metadata.annotations)))
    if (
      key.startsWith("container.apparmor.security.beta.kubernetes.io/") &&
      value !== "runtime/default" &&
      !(typeof value === "string" && value.startsWith("localhost/"))
    )
      fail("AppArmor", `metadata.annotations[${key}]`);

  for (const s of list(psc.sysctls))
    if (!SAFE_SYSCTLS.includes(obj(s).name as string))
      fail("Sysctls", `spec.securityContext.sysctls: ${String(obj(s).name)}`);

  if (level === "baseline") return out;

  // ---- Restricted: everything above, and
  list(spec.volumes).forEach((v, i) => {
    const types = Object.keys(obj(v)).filter((k) => k !== "name");
    if (!types.some((t) => RESTRICTED_VOLUME_TYPES.includes(t) && obj(v)[t] != null))
      fail("Volume Types", `spec.volumes[${i}] (${types.join(", ") || "no type"})`);
  });

  for (const n of containers)
    if (n.sc.allowPrivilegeEscalation !== false)
      fail("Privilege Escalation", `${n.where}.securityContext.allowPrivilegeEscalation`);

  // Running as Non-root: true; a container may leave it unset when the pod sets it to true.
  if (!allowed(psc.runAsNonRoot, [true])) fail("Running as Non-root", "spec.securityContext.runAsNonRoot");
  for (const n of containers)
    if (n.sc.runAsNonRoot === undefined ? psc.runAsNonRoot !== true : n.sc.runAsNonRoot !== true)
      fail("Running as Non-root", `${n.where}.securityContext.runAsNonRoot`);

  for (const [where, sc] of scs)
    if (sc.runAsUser === 0) fail("Running as Non-root user", `${where}.runAsUser`);

  // Seccomp: RuntimeDefault or Localhost; a container may leave it unset when the pod sets it.
  const podSeccomp = obj(psc.seccompProfile).type;
  for (const n of containers)
    if (!["RuntimeDefault", "Localhost"].includes((obj(n.sc.seccompProfile).type ?? podSeccomp) as string))
      fail("Seccomp", `${n.where}.securityContext.seccompProfile.type (restricted: set it)`);

  for (const n of containers) {
    const caps = obj(n.sc.capabilities);
    if (!list(caps.drop).includes("ALL"))
      fail("Capabilities", `${n.where}.securityContext.capabilities.drop lacks ALL`);
    for (const cap of list(caps.add))
      if (cap !== "NET_BIND_SERVICE")
        fail("Capabilities", `${n.where}.securityContext.capabilities.add: ${String(cap)} (restricted)`);
  }
  return out;
}
