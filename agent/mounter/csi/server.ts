/**
 * The CSI Identity and Node services over gRPC on a unix socket, for the kubelet (registered by
 * the node-driver-registrar sidecar). The calls are the CSI specification v1's
 * (`agent/mounter/csi/csi.proto`); requests are checked by `requests.ts` and carried out by
 * {@link CsiNode}. Served by the mounter, which holds the root and the kubelet's directory
 * `Bidirectional`.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { existsSync } from "node:fs";
import { chmod, lstat, mkdir, unlink } from "node:fs/promises";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { ConfigError } from "../../../shared/errors.js";
import type { Logger } from "../../../shared/logger.js";
import { CSI_DRIVER_NAME } from "../../../shared/names.js";
import { CsiCallError, type CsiNode } from "./node.js";
import {
  checkPublish,
  checkUnpublish,
  GRPC_CODE,
  type NodePublishVolumeMessage,
  type NodeUnpublishVolumeMessage,
} from "./requests.js";

/**
 * Where `csi.proto` is: beside this module (the source tree, and `dist/` when the build copied it
 * there, as the image does), else in the source tree beside `dist/` (a local `npm run build`).
 */
export function csiProtoPath(): string {
  const beside = fileURLToPath(new URL("./csi.proto", import.meta.url));
  if (existsSync(beside)) return beside;
  return fileURLToPath(new URL("../../../../agent/mounter/csi/csi.proto", import.meta.url));
}

/** The options both sides load `csi.proto` with: field names as in the specification. */
export const PROTO_LOADER_OPTIONS: protoLoader.Options = Object.freeze({
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});

/** The `csi.v1` package: `Identity` and `Node` service constructors (clients) with their definitions. */
export interface CsiPackage {
  readonly Identity: grpc.ServiceClientConstructor;
  readonly Node: grpc.ServiceClientConstructor;
}

export function loadCsiPackage(): CsiPackage {
  const def = protoLoader.loadSync(csiProtoPath(), PROTO_LOADER_OPTIONS);
  const pkg = grpc.loadPackageDefinition(def) as unknown as { csi: { v1: CsiPackage } };
  return pkg.csi.v1;
}

export interface CsiServerOptions {
  /** Absolute path of the unix socket. */
  readonly socketPath: string;
  /** The driver's root (no trailing `/`): targets inside it are refused. */
  readonly root: string;
  readonly nodeId: string;
  readonly node: Pick<CsiNode, "publish" | "unpublish">;
  readonly log: Logger;
  /** Reported by GetPluginInfo. */
  readonly vendorVersion?: string;
}

type Callback = grpc.sendUnaryData<unknown>;

/** Removes a socket left by an earlier run; anything else in its place is refused. */
async function prepare(socketPath: string): Promise<void> {
  await mkdir(dirname(socketPath), { recursive: true, mode: 0o750 });
  const existing = await lstat(socketPath).catch(() => undefined);
  if (existing !== undefined) {
    if (!existing.isSocket()) throw new ConfigError(`${socketPath} exists and is not a socket`);
    await unlink(socketPath);
  }
}

export class CsiServer {
  private constructor(private readonly server: grpc.Server) {}

  static async start(o: CsiServerOptions): Promise<CsiServer> {
    const log = o.log.child({ component: "csi" });
    const pkg = loadCsiPackage();
    const server = new grpc.Server();
    const fail = (cb: Callback, op: string, e: unknown): void => {
      if (e instanceof CsiCallError) {
        log.info({ op, code: e.code, err: e.message }, "CSI call refused");
        cb({ code: e.code, details: e.message });
      } else {
        log.error({ op, err: (e as Error)?.message ?? String(e) }, "CSI call failed");
        cb({ code: GRPC_CODE.INTERNAL, details: (e as Error)?.message ?? String(e) });
      }
    };
    server.addService(pkg.Identity.service, {
      GetPluginInfo: (_: unknown, cb: Callback) =>
        cb(null, { name: CSI_DRIVER_NAME, vendor_version: o.vendorVersion ?? "0.1.0", manifest: {} }),
      GetPluginCapabilities: (_: unknown, cb: Callback) => cb(null, { capabilities: [] }),
      Probe: (_: unknown, cb: Callback) => cb(null, { ready: { value: true } }),
    });
    server.addService(pkg.Node.service, {
      NodeGetInfo: (_: unknown, cb: Callback) => cb(null, { node_id: o.nodeId, max_volumes_per_node: "0" }),
      NodeGetCapabilities: (_: unknown, cb: Callback) => cb(null, { capabilities: [] }),
      NodePublishVolume: (call: grpc.ServerUnaryCall<NodePublishVolumeMessage, unknown>, cb: Callback) => {
        const checked = checkPublish(call.request, o.root);
        if ("error" in checked)
          return fail(cb, "NodePublishVolume", new CsiCallError(checked.error.code, checked.error.message));
        o.node.publish(checked.ok).then(
          () => cb(null, {}),
          (e: unknown) => fail(cb, "NodePublishVolume", e),
        );
      },
      NodeUnpublishVolume: (
        call: grpc.ServerUnaryCall<NodeUnpublishVolumeMessage, unknown>,
        cb: Callback,
      ) => {
        const checked = checkUnpublish(call.request, o.root);
        if ("error" in checked)
          return fail(cb, "NodeUnpublishVolume", new CsiCallError(checked.error.code, checked.error.message));
        o.node.unpublish(checked.ok).then(
          () => cb(null, {}),
          (e: unknown) => fail(cb, "NodeUnpublishVolume", e),
        );
      },
    });
    await prepare(o.socketPath);
    // Created 0600 (umask), then opened to root's group: the kubelet and the registrar run as root.
    const umask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) =>
        server.bindAsync(`unix:${o.socketPath}`, grpc.ServerCredentials.createInsecure(), (e) =>
          e ? reject(e) : resolve(),
        ),
      );
    } finally {
      process.umask(umask);
    }
    await chmod(o.socketPath, 0o660);
    log.info({ socket: o.socketPath, nodeId: o.nodeId }, "CSI services listening");
    return new CsiServer(server);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, 2000);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
