/**
 * `npm run soak`: a seeded soak of the agent on this machine. Sets up a local node (S3 server, runc
 * pods, the real agent with its wss console), runs the load and the faults for the profile's
 * duration while sampling the invariants, checks everything once more at the end, writes the
 * report, and cleans up, on SIGINT and SIGTERM as well. Exit 0: no violation; 1: violations; 2:
 * usage or harness error. Wiring only: see ./actors.ts, ./console-load.ts, ./tracker.ts, ./final.ts.
 */
import { chown, cp, mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { cpus, release, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { run } from "../../agent/mount/exec.js";
import { generateCa, generateServingCert } from "../../certs/generate.js";
import { AGENT_GID, AGENT_UID, LocalNode } from "../lib/local-node.js";
import { restartableS3 } from "../lib/s3-restart.js";
import {
  agentKills,
  churn,
  flipper,
  fuseKills,
  initialPods,
  isolation,
  mounterKills,
  planFaults,
  s3Outage,
  sabotage,
} from "./actors.js";
import { startS3Server, S3RVER_CREDENTIALS, S3RVER_REGION, type S3Server } from "../lib/s3-server.js";
import { writeBackFaults, WRITE_BACK_NAMESPACE } from "./write-back.js";
import { unmountProbes, writers, type WriteRecord } from "./writers.js";
import { NAMESPACES, seedObjects } from "./catalog.js";
import { ConsoleLoad } from "./console-load.js";
import { finalChecks, type FinalSummary } from "./final.js";
import { Ledger } from "./ledger.js";
import { Readers, type ReaderSummary } from "./readers.js";
import { fuseProcesses } from "./observe.js";
import { parseOptions, USAGE, UsageError, type SoakOptions } from "./options.js";
import { renderReport } from "./report.js";
import { Tracker } from "./tracker.js";
import { World, type ConsoleSetup } from "./world.js";

const PREFIX = "dv-soak-";
const AGENT_ARGS = [
  "--default-mounter",
  "s3fs",
  "--resync-seconds",
  "2",
  "--backoff-max-seconds",
  "4",
  "--log-level",
  "info",
];

function log(line: string): void {
  process.stdout.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}

async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() =>
        typeof addr === "object" && addr !== null ? resolvePort(addr.port) : reject(new Error("no port")),
      );
    });
  });
}

/** A CA, a serving certificate for 127.0.0.1 and a static token file, in the node's work dir. */
async function consoleSetup(work: string): Promise<ConsoleSetup> {
  const dir = join(work, "console");
  await mkdir(dir, { mode: 0o700 });
  // The agent runs as its own uid: the directory is its, as a Secret volume with fsGroup would be
  // (LocalNode.startAgent hands it the files named by its flags).
  await chown(dir, AGENT_UID, AGENT_GID);
  const ca = generateCa({ commonName: "dynamic-volumes soak CA" });
  const serving = generateServingCert({
    ca,
    service: "dynamic-volumes-agent",
    namespace: "dynamic-volumes",
    extraDnsNames: ["localhost"],
    extraIps: ["127.0.0.1"],
  });
  const token = randomBytes(24).toString("hex");
  await writeFile(join(dir, "tls.crt"), serving.certPem);
  await writeFile(join(dir, "tls.key"), serving.keyPem, { mode: 0o600 });
  await writeFile(join(dir, "tokens.csv"), `${token},soak,1000,"soak-users"\n`, { mode: 0o600 });
  const port = await freePort();
  return {
    port,
    caPem: ca.certPem,
    token,
    agentArgs: [
      "--listen",
      `127.0.0.1:${port}`,
      "--tls-cert-file",
      join(dir, "tls.crt"),
      "--tls-key-file",
      join(dir, "tls.key"),
      "--token-auth-file",
      join(dir, "tokens.csv"),
    ],
  };
}

/** The commit under test, marked when agent/, shared/, webhook/ or certs/ have uncommitted changes. */
async function revision(): Promise<string> {
  const head = await run("git", ["rev-parse", "--short", "HEAD"], { timeoutMs: 10_000 }).catch(
    () => undefined,
  );
  if (head === undefined || head.code !== 0) return "an unknown commit";
  const dirty = await run("git", ["status", "--porcelain", "--", "agent", "shared", "webhook", "certs"], {
    timeoutMs: 10_000,
  }).catch(() => undefined);
  const changed = dirty !== undefined && dirty.stdout.trim() !== "";
  return `commit ${head.stdout.trim()}${changed ? " with uncommitted changes to the product code" : ""}`;
}

/** Stops everything and verifies that nothing of this run is left; returns what it found. */
async function cleanup(node: LocalNode, w: World | undefined, wbS3: S3Server | undefined): Promise<string[]> {
  const notes: string[] = [];
  await w?.stopAgent().catch((e: unknown) => notes.push(`agent stop: ${(e as Error).message}`));
  await w?.s3.stop().catch((e: unknown) => notes.push(`S3 stop: ${(e as Error).message}`));
  if (wbS3 !== undefined) {
    try {
      process.kill(wbS3.pid, "SIGCONT");
    } catch {
      /* gone */
    }
  }
  await node.stop().catch((e: unknown) => notes.push(`LocalNode.stop: ${(e as Error).message}`));
  await wbS3?.stop().catch((e: unknown) => notes.push(`write-back S3 stop: ${(e as Error).message}`));
  // FUSE clients whose mount went away exit by themselves; any left are ours to end, by pid.
  for (const p of await fuseProcesses(node.work)) {
    notes.push(`killed leftover ${p.comm} ${p.pid}`);
    try {
      process.kill(p.pid, "SIGKILL");
    } catch {
      /* gone */
    }
  }
  const mounts = await run("findmnt", ["-rn", "-t", "fuse.s3fs,fuse.rclone"], { timeoutMs: 10_000 });
  const ours = mounts.stdout.split("\n").filter((l) => l.includes(node.work));
  notes.push(
    ours.length === 0 ? "findmnt shows no FUSE mount of this run" : `findmnt still shows ${ours.join(" | ")}`,
  );
  const list = await run("runc", ["list", "-q"], { timeoutMs: 10_000 });
  const containers = list.stdout
    .split("\n")
    .filter((l) => l.startsWith(`${node.runc.prefix}${node.runc.runId}`));
  notes.push(
    containers.length === 0
      ? "no runc container of this run remains"
      : `runc still lists ${containers.join(", ")}`,
  );
  return notes;
}

async function soak(opts: SoakOptions): Promise<number> {
  if (process.getuid?.() !== 0) throw new UsageError("the soak needs root (FUSE, mount namespaces, runc)");
  const started = Date.now();
  log(`seed ${opts.seed}, profile ${opts.profile.name}, load ${opts.loadSeconds} s`);
  log(`reproduce with: ${opts.command}`);
  const ledger = new Ledger(log);
  let w: World | undefined;
  let fatal: string | undefined;
  let final: FinalSummary | undefined;
  let tracker: Tracker | undefined;
  let readers: Readers | undefined;
  let readerSummary: ReaderSummary | undefined;
  let signals = 0;
  let firstSignal = 0;
  // Handlers before anything starts: a signal during set-up must still lead to the cleanup.
  const onSignal = (sig: NodeJS.Signals): void => {
    // tsx relays the terminal's signal too: only a second one well after the first forces an exit.
    if (signals++ > 0 && Date.now() - firstSignal > 2000) {
      log(`${sig} again: exiting now; run the soak again to clean up leftovers`);
      process.exit(130);
    }
    if (firstSignal === 0) firstSignal = Date.now();
    log(`${sig}: stopping the load, then cleaning up (again to force)`);
    fatal ??= `interrupted by ${sig}`;
    w?.abort.abort();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const node = await LocalNode.start({
    prefix: PREFIX,
    buckets: seedObjects(),
    agentArgs: AGENT_ARGS,
    mounterArgs: [
      "--mount-timeout-seconds",
      "20",
      "--upload-grace-seconds",
      String(opts.profile.uploadGraceSeconds),
    ],
  });
  let cleanupNotes: string[] = [];
  let wbS3: S3Server | undefined;
  try {
    const s3 = restartableS3(node.s3, join(node.work, "s3"));
    for (const ns of NAMESPACES) await node.writeSecret(ns);
    // The write-back faults freeze an S3 server of their own (see ./write-back.ts).
    wbS3 = await startS3Server({ buckets: seedObjects(), directory: join(node.work, "s3-wb") });
    await node.writeSecret(WRITE_BACK_NAMESPACE, {
      endpoint: wbS3.endpoint,
      region: S3RVER_REGION,
      accessKeyID: S3RVER_CREDENTIALS.accessKeyId,
      secretAccessKey: S3RVER_CREDENTIALS.secretAccessKey,
    });
    w = new World(node, s3, ledger, opts, await consoleSetup(node.work), log);
    w.writeBackS3 = wbS3;
    const world = w;
    if (fatal !== undefined) world.abort.abort();
    tracker = new Tracker(world);
    await world.startAgent();
    log(`agent ${world.agentPid()} started; console on wss://127.0.0.1:${world.console.port}`);
    await initialPods(world);
    readers = new Readers(world);
    await readers.start();
    world.beginLoad();
    const plan = planFaults(world);
    log(
      `load for ${opts.loadSeconds} s; S3 outage at +${Math.round((plan.s3At - world.loadStart) / 1000)} s, ` +
        `agent kills at ${plan.agentKills.map((k) => `+${Math.round((k.at - world.loadStart) / 1000)} s`).join(", ")}, ` +
        `mounter kills at ${plan.mounterKills.map((k) => `+${Math.round((k.at - world.loadStart) / 1000)} s`).join(", ")}, ` +
        `write-back faults at +${Math.round((plan.writeBack.removeAt - world.loadStart) / 1000)} s and +${Math.round((plan.writeBack.killAt - world.loadStart) / 1000)} s`,
    );
    const writes: WriteRecord[] = [];
    const writeBackWrites: WriteRecord[] = [];
    const kills: Array<{ t: number; mountPoint: string }> = [];
    let sampling = true;
    const t = tracker;
    const sampler = (async () => {
      let lastLine = 0;
      while (sampling && !world.aborted) {
        try {
          const unconverged = await t.tick();
          await t.slowTick();
          if (Date.now() - lastLine > 15_000) {
            lastLine = Date.now();
            log(
              `+${Math.round((Date.now() - world.loadStart) / 1000)} s: ${world.livePods().length} pods (${unconverged} converging), ` +
                `${ledger.get("changes.flips")} flips, ${t.converged.length} converged, ${ledger.get("writes.acknowledged")} writes, ` +
                `${ledger.get("faults.fuseKills")} FUSE kills, ${ledger.get("faults.agentKills")} agent kills, ` +
                `${ledger.get("faults.mounterKills")} mounter kills, ` +
                `${ledger.violationCount()} violations`,
            );
          }
        } catch (e) {
          ledger.harnessError("sampler", e);
        }
        await world.sleep(200);
      }
    })();
    const consoleLoad = new ConsoleLoad(world, t);
    const actors = Promise.all([
      churn(world),
      flipper(world, t),
      writers(world, writes),
      unmountProbes(world, t, writes),
      isolation(world),
      consoleLoad.run(),
      s3Outage(world, plan),
      agentKills(world, plan, kills),
      mounterKills(world, plan, readers),
      fuseKills(world, kills, readers.hostDirs()),
      writeBackFaults(world, t, writeBackWrites, plan.writeBack),
      opts.sabotage ? sabotage(world, t, writes) : Promise.resolve(),
    ]);
    // Every actor stops by itself at the end of its phase; this is the backstop.
    const watchdog = setTimeout(
      () => {
        ledger.harnessError("watchdog", new Error("the actors did not stop in time"));
        world.abort.abort();
      },
      opts.loadSeconds * 1000 + 180_000,
    );
    await actors;
    clearTimeout(watchdog);
    sampling = false;
    await sampler;
    readerSummary = await readers.finish();
    log(
      `readers: ${readerSummary.readers} readers, ${readerSummary.iterations} iterations; read errors across ` +
        `agent kills ${readerSummary.errors.agent}, mounter kills ${readerSummary.errors.mounter}, ` +
        `S3 outage ${readerSummary.errors.s3}, no fault ${readerSummary.errors.none}; read again after ` +
        `${readerSummary.recovered} of ${readerSummary.recoveries} mounter kills × readers` +
        (readerSummary.worstRecoveryMs !== undefined
          ? ` (worst ${(readerSummary.worstRecoveryMs / 1000).toFixed(1)} s after the mounter's restart)`
          : ""),
    );
    log(`load done: ${ledger.get("changes.flips")} flips, ${ledger.get("pods.created")} pods created`);
    if (!world.aborted) {
      const finalWatchdog = setTimeout(() => world.abort.abort(), 300_000);
      final = await finalChecks(world, t, writes, kills, writeBackWrites);
      clearTimeout(finalWatchdog);
    }
  } catch (e) {
    fatal ??= (e as Error).stack ?? String(e);
    log(`harness error: ${(e as Error).stack ?? String(e)}`);
  } finally {
    log("cleanup");
    if (readerSummary === undefined) await readers?.finish().catch(() => undefined);
    if (opts.keepLogs || ledger.violationCount() > 0) {
      const dir = await mkdtemp(join(tmpdir(), `dv-soaklogs-${opts.seed}-`));
      await cp(node.podsDir, join(dir, "pods"), { recursive: true }).catch(() => undefined);
      for (const i of w?.incarnations ?? [])
        await cp(i.logFile, join(dir, `agent-${i.pid}.log`)).catch(() => undefined);
      log(`agent logs, pod files and events kept in ${dir}`);
    }
    cleanupNotes = await cleanup(node, w, wbS3);
  }
  const violations = ledger.violationCount();
  if (opts.report !== undefined && tracker !== undefined) {
    const text = renderReport({
      command: opts.command,
      seed: opts.seed,
      profile: opts.profile.name,
      date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
      host: `${cpus().length} cores, Linux ${release()}, Node ${process.versions.node}`,
      revision: await revision(),
      loadSeconds: opts.loadSeconds,
      totalSeconds: Math.round((Date.now() - started) / 1000),
      ledger,
      converged: tracker.converged,
      cleanups: tracker.cleanups,
      final,
      readers: readerSummary,
      cleanup: cleanupNotes,
      fatal: fatal?.split("\n")[0],
      livePodsRange: [opts.profile.minPods, opts.profile.maxPods],
      maxLive: ledger.get("pods.maxLive"),
      boundSeconds: opts.profile.convergenceBoundSeconds,
      uploadGraceSeconds: opts.profile.uploadGraceSeconds,
    });
    await writeFile(resolve(opts.report), text);
    log(`report written to ${opts.report}`);
  }
  for (const n of cleanupNotes) log(`cleanup: ${n}`);
  for (const e of ledger.harness.examples) log(`harness error: ${e}`);
  log(
    `${fatal !== undefined ? "ABORTED" : violations === 0 ? "PASS" : "FAIL"}: ${violations} violation(s), ${ledger.harness.count} harness error(s), ` +
      `${Math.round((Date.now() - started) / 1000)} s, seed ${opts.seed}`,
  );
  if (fatal !== undefined) return 2;
  return violations === 0 ? 0 : 1;
}

async function main(): Promise<number> {
  let opts;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`soak: ${e.message}\n\n${USAGE}`);
    return 2;
  }
  if (opts === "help") {
    process.stdout.write(USAGE);
    return 0;
  }
  return soak(opts);
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(
      `soak: ${e instanceof UsageError ? e.message : ((e as Error)?.stack ?? String(e))}\n`,
    );
    process.exit(2);
  },
);
