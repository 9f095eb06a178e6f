/**
 * A kubelet stand-in for CSI mode, for the tests and the local demo: a gRPC client making the calls
 * the kubelet makes for an ephemeral inline CSI volume of a CSIDriver with `podInfoOnMount: true`
 * (kubernetes pkg/volume/csi `csi_mounter.go`, `csi_plugin.go`):
 *
 * - at plugin registration, `NodeGetInfo`;
 * - before the pod's containers start, `NodePublishVolume` with volume id `csi-<sha256(pod uid +
 *   volume name)>`, target `<kubelet dir>/pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount`
 *   (the kubelet makes its parent), a mount capability (access mode SINGLE_NODE_WRITER, as the
 *   kubelet sends for inline volumes), the volume's `readOnly`, and the pod's identity in the
 *   volume context;
 * - after the containers have stopped, `NodeUnpublishVolume`.
 */
import * as grpc from "@grpc/grpc-js";
import { createHash } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { loadCsiPackage } from "../../agent/mounter/csi/server.js";
import { POD_INFO } from "../../agent/mounter/csi/requests.js";
import { VOLUME_NAME } from "../../shared/names.js";

/** The pod a volume is published for, as the kubelet knows it. */
export interface KubeletPod {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  readonly serviceAccount?: string;
}

/** A unary call's error: `code` is the gRPC status code. */
export type CallError = Error & { code: number; details: string };

type Unary = (req: unknown, cb: (e: CallError | null, res: unknown) => void) => void;

/** The kubelet's handle of an inline volume: `csi-` + hex SHA-256 of pod uid and volume name. */
export function inlineVolumeHandle(podUid: string, volumeName: string): string {
  return `csi-${createHash("sha256").update(`${podUid}${volumeName}`).digest("hex")}`;
}

/** The kubelet's publish target of a CSI volume of a pod. */
export function csiTargetPath(kubeletDir: string, podUid: string, volumeName = VOLUME_NAME): string {
  return join(kubeletDir, "pods", podUid, "volumes", "kubernetes.io~csi", volumeName, "mount");
}

export class KubeletStandIn {
  private readonly identity: grpc.Client;
  private readonly node: grpc.Client;

  /** `socket`: the driver's CSI socket; `kubeletDir`: the kubelet's root directory (`/var/lib/kubelet`). */
  constructor(
    readonly socket: string,
    readonly kubeletDir: string,
  ) {
    const pkg = loadCsiPackage();
    this.identity = new pkg.Identity(`unix:${socket}`, grpc.credentials.createInsecure());
    this.node = new pkg.Node(`unix:${socket}`, grpc.credentials.createInsecure());
  }

  /** One unary call by its method name; rejects with a {@link CallError}. */
  call(service: "Identity" | "Node", method: string, req: unknown = {}): Promise<Record<string, unknown>> {
    const client = service === "Identity" ? this.identity : this.node;
    const fn = (client as unknown as Record<string, Unary>)[method];
    if (fn === undefined) throw new Error(`no method ${service}.${method}`);
    return new Promise((resolve, reject) =>
      fn.call(client, req, (e, res) => (e ? reject(e) : resolve(res as Record<string, unknown>))),
    );
  }

  /** Registration, as the node-driver-registrar and the kubelet do it: plugin info, then node info. */
  async register(): Promise<{ driver: string; nodeId: string }> {
    const info = await this.call("Identity", "GetPluginInfo");
    const node = await this.call("Node", "NodeGetInfo");
    return { driver: String(info.name), nodeId: String(node.node_id) };
  }

  targetPath(pod: KubeletPod, volumeName = VOLUME_NAME): string {
    return csiTargetPath(this.kubeletDir, pod.uid, volumeName);
  }

  /** The NodePublishVolume request the kubelet sends for the pod's inline volume. */
  publishRequest(pod: KubeletPod, volumeName = VOLUME_NAME, readOnly = true): Record<string, unknown> {
    return {
      volume_id: inlineVolumeHandle(pod.uid, volumeName),
      target_path: this.targetPath(pod, volumeName),
      volume_capability: {
        mount: { fs_type: "", mount_flags: [] },
        access_mode: { mode: "SINGLE_NODE_WRITER" },
      },
      readonly: readOnly,
      secrets: {},
      volume_context: {
        [POD_INFO.name]: pod.name,
        [POD_INFO.namespace]: pod.namespace,
        [POD_INFO.uid]: pod.uid,
        [POD_INFO.serviceAccount]: pod.serviceAccount ?? "default",
        [POD_INFO.ephemeral]: "true",
      },
    };
  }

  /** Makes the target's parent (the kubelet does), then NodePublishVolume. Resolves with the target. */
  async publish(pod: KubeletPod, volumeName = VOLUME_NAME): Promise<string> {
    const target = this.targetPath(pod, volumeName);
    await mkdir(dirname(target), { recursive: true, mode: 0o750 });
    await this.call("Node", "NodePublishVolume", this.publishRequest(pod, volumeName));
    return target;
  }

  async unpublish(pod: KubeletPod, volumeName = VOLUME_NAME): Promise<void> {
    await this.call("Node", "NodeUnpublishVolume", {
      volume_id: inlineVolumeHandle(pod.uid, volumeName),
      target_path: this.targetPath(pod, volumeName),
    });
  }

  close(): void {
    this.identity.close();
    this.node.close();
  }
}
