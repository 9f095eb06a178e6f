/**
 * Mounter entry point: configuration, host set-up (the root a shared mount point, the private
 * staging directory), the FUSE engine and the unix socket the agent talks to. Wiring only.
 *
 * The mounter is the node side's only privileged process and listens on no network port. Stopping
 * it leaves the mounts in place; in a container its clients stop with it, and the agent remounts
 * what went stale once a mounter is back.
 */
import { usage } from "../../shared/config.js";
import { isAppError } from "../../shared/errors.js";
import { createLogger } from "../../shared/logger.js";
import { FuseMounter } from "../mount/fuse-mount.js";
import { ensureSharedRoot } from "../mount/host.js";
import { MountRecords } from "../mount/records.js";
import { MounterConnection } from "./client.js";
import { CsiNode, realCsiHost } from "./csi/node.js";
import { CsiServer } from "./csi/server.js";
import { loadMounterConfig, MOUNTER_OPTIONS, type MounterConfig } from "./config.js";
import { MounterServer } from "./server.js";
import { MounterService } from "./service.js";

async function check(config: MounterConfig): Promise<number> {
  const conn = await MounterConnection.connect(config.socketPath, 3000);
  try {
    const timeout = new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error("no answer to ping in 3000 ms")), 3000).unref(),
    );
    await Promise.race([conn.request({ op: "ping" }), timeout]);
    return 0;
  } finally {
    conn.close();
  }
}

async function main(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(usage("dynamic-volumes-mounter", Object.values(MOUNTER_OPTIONS)));
    return 0;
  }
  const config = loadMounterConfig(argv, process.env);
  if (config.check) return check(config);
  const log = createLogger({ name: "dynamic-volumes-mounter", level: config.logLevel });
  await ensureSharedRoot(config.root, log, config.programs);
  // The engine reports dead clients to the agents connected to the server, built after it.
  const later: { server?: MounterServer } = {};
  const engine = new FuseMounter({
    root: config.root,
    programs: config.programs,
    clientPath: config.clientPath,
    readyTimeoutMs: config.mountTimeoutMs,
    uploadGraceMs: config.uploadGraceMs,
    log: log.child({ component: "fuse" }),
    onClientExit: (mountPoint) => later.server?.broadcast({ event: "clientExited", mountPoint }),
  });
  const csiNode =
    config.csiSocket !== undefined
      ? new CsiNode({
          root: config.root,
          host: realCsiHost(config.programs),
          log: log.child({ component: "csi" }),
        })
      : undefined;
  const service = new MounterService({
    root: config.root,
    engine,
    records: new MountRecords(config.root),
    log,
    ...(csiNode !== undefined ? { isPublished: (id: string) => csiNode.isPublished(id) } : {}),
  });
  const server = await MounterServer.start({
    socketPath: config.socketPath,
    agentUid: config.agentUid,
    agentGid: config.agentGid,
    service,
    log,
  });
  later.server = server;
  const csi =
    csiNode !== undefined && config.csiSocket !== undefined
      ? await CsiServer.start({
          socketPath: config.csiSocket,
          root: config.root,
          nodeId: config.nodeId,
          node: csiNode,
          log,
        })
      : undefined;
  log.info(
    {
      root: config.root,
      socket: config.socketPath,
      agentUid: config.agentUid,
      agentGid: config.agentGid,
      csiSocket: config.csiSocket,
    },
    "mounter started",
  );
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      log.info({ signal }, "stopping; mounts stay in place");
      void Promise.all([server.close(), csi?.close()]).then(() => resolve());
    };
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(
      `dynamic-volumes mounter: ${isAppError(e) ? e.message : String((e as Error)?.stack ?? e)}\n`,
    );
    process.exit(isAppError(e) && e.code === "InvalidConfig" ? 2 : 1);
  },
);
