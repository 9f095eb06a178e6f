/**
 * The node side split in two, end to end: the FUSE clients live in the mounter, so the agent may be
 * killed, stopped, restarted and upgraded while a container reads and writes through its buckets,
 * and nothing in the container notices. A mounter restart is the old failure mode (the clients go
 * with it): the agent sees the stale mounts and mounts them again.
 *
 * Real runc pods, real s3fs and rclone, the agent as uid 65532 with no capabilities.
 */
import { expect } from "chai";
import { fastAgentArgs, localConsoleArgs } from "../support/harness.js";
import { execFile } from "node:child_process";
import { mkdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { mountsUnder } from "../../agent/mount/mountinfo.js";
import { AGENT_UID, LocalNode } from "../../scripts/lib/local-node.js";
import { readMountinfo } from "../../scripts/lib/namespaces.js";
import { appenderScript, PodLoop, readerScript } from "../../scripts/lib/pod-loop.js";
import { httpsRequest } from "../support/https-client.js";
import { waitFor } from "../support/processes.js";
import { makeTestPki, type TestPki } from "../support/tls.js";

const REPO = join(import.meta.dirname, "..", "..");
const LINES = Array.from({ length: 40 }, (_, i) => `line ${i}`).join("\n") + "\n";

/** Mount ids of every mount below the node's pods: the same ids mean nothing was mounted again. */
async function mountIds(root: string): Promise<Map<string, number>> {
  return new Map(
    mountsUnder(await readMountinfo(), join(root, "pods"))
      .filter((m) => m.mountPoint !== join(root, "pods"))
      .map((m) => [m.mountPoint, m.mountId]),
  );
}

/** Uid and effective, permitted and bounding capability sets of a process. */
async function privilegesOf(pid: number): Promise<Record<string, string>> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const field = (name: string): string => new RegExp(`^${name}:\\s*(.*)$`, "m").exec(status)?.[1] ?? "";
  return {
    uid: field("Uid").split(/\s+/)[0]!,
    effective: field("CapEff"),
    permitted: field("CapPrm"),
    bounding: field("CapBnd"),
  };
}

/** Compiles the tree into `<dir>/dist`, runnable as the image runs it. */
async function buildTree(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  await promisify(execFile)(
    process.execPath,
    [
      join(REPO, "node_modules", "typescript", "bin", "tsc"),
      "-p",
      join(REPO, "tsconfig.build.json"),
      "--outDir",
      join(dir, "dist"),
    ],
    { cwd: REPO },
  );
  await writeFile(join(dir, "package.json"), JSON.stringify({ type: "module" }));
  await symlink(join(REPO, "node_modules"), join(dir, "node_modules"));
  return join(dir, "dist", "agent", "main.js");
}

for (const mounter of ["s3fs", "rclone"] as const) {
  describe(`agent restarts with ${mounter}: invisible to pods`, function () {
    this.timeout(300_000);
    let node: LocalNode;
    let reader: PodLoop | undefined;
    let writer: PodLoop | undefined;
    let upgraded: string;
    let pki: TestPki;

    /** The status of the agent's /readyz. */
    const readyz = async (): Promise<number> => {
      const port = /"listen":"127\.0\.0\.1:(\d+)"/.exec(await node.agentLog())?.[1];
      if (port === undefined) throw new Error("the agent logged no console port");
      return (await httpsRequest({ port: Number(port), path: "/readyz", ca: pki.ca.certPem })).status;
    };

    const state = async (name: string): Promise<string | undefined> =>
      (await node.status("pod"))[name]?.state;
    const mountedEvents = async (): Promise<number> =>
      (await node.events()).filter((e) => e.reason === "Mounted").length;

    before(async function () {
      if (process.getuid?.() !== 0)
        throw new Error("the end-to-end tests need root; run scripts/setup.sh and npm test as root");
      pki = makeTestPki();
      const tokens = join(pki.dir, "tokens.csv");
      await writeFile(tokens, 'restart-e2e-token,e2e-user,1,"dev"\n', { mode: 0o600 });
      node = await LocalNode.start({
        prefix: `dv-e2e-restart-${mounter}-`,
        buckets: { data: { "lines.txt": LINES }, out: {}, extra: { "e.txt": "extra\n" } },
        agentArgs: [...fastAgentArgs(mounter), ...localConsoleArgs(pki, tokens)],
      });
      upgraded = await buildTree(join(node.work, "tree"));
      await node.writeSecret("team-a");
      await node.addPod({ namespace: "team-a", name: "pod", buckets: "data:ro, out" });
      await node.startAgent();
      await waitFor(
        "both mounted",
        async () => (await state("data")) === "mounted" && (await state("out")) === "mounted",
      );
      reader = new PodLoop(node.pod("pod").container.id, readerScript("/datasets/data/lines.txt"));
      writer = new PodLoop(node.pod("pod").container.id, appenderScript("/datasets/out/log.txt"));
      await reader.advance(10);
      await writer.advance(10);
    });

    after(async () => {
      await reader?.stop().catch(() => undefined);
      await writer?.stop().catch(() => undefined);
      await node?.stop();
      if (pki !== undefined) await rm(pki.dir, { recursive: true, force: true });
    });

    it("the agent runs as uid 65532 with no capability", async () => {
      const p = await privilegesOf(node.agent!.pid);
      expect(p).to.deep.equal({
        uid: String(AGENT_UID),
        effective: "0000000000000000",
        permitted: "0000000000000000",
        bounding: "0000000000000000",
      });
      expect((await privilegesOf(node.mounter!.pid)).uid).to.equal("0");
    });

    it("kill -9, restart, SIGTERM, restart, SIGTERM and an upgraded build: no error in the pod, the same clients and mounts", async () => {
      const clients = await node.clients();
      const ids = await mountIds(node.root);
      const events = await mountedEvents();
      expect(clients.size).to.equal(2);
      expect(ids.size).to.equal(2);

      const restarts: Array<[string, () => Promise<unknown>, string | undefined]> = [
        ["kill -9", async () => node.agent!.kill("SIGKILL") && (await node.agent!.exited), undefined],
        ["SIGTERM", () => node.agent!.stop(5000), undefined],
        ["SIGTERM, then the rebuilt tree", () => node.agent!.stop(5000), upgraded],
      ];
      for (const [how, stop, entry] of restarts) {
        await stop();
        // The pod keeps working with no agent at all.
        await reader!.advance(10);
        await writer!.advance(10);
        const t0 = Date.now();
        await node.startAgent([], entry);
        // Two resyncs: every mount probed and found healthy, none mounted again.
        await new Promise((r) => setTimeout(r, 2500));
        expect(await state("data"), how).to.equal("mounted");
        expect(await state("out"), how).to.equal("mounted");
        expect(await node.clients(), `${how}: the same FUSE clients`).to.deep.equal(clients);
        expect(await mountIds(node.root), `${how}: the same mounts`).to.deep.equal(ids);
        expect(await mountedEvents(), `${how}: no Mounted event, so no remount`).to.equal(events);
        await reader!.advance(5);
        await writer!.advance(5);
        expect(reader!.errors, `${how}: reader`).to.deep.equal([]);
        expect(writer!.errors, `${how}: writer`).to.deep.equal([]);
        console.log(
          `      ${how}: agent back in ${Date.now() - t0} ms, ${reader!.rounds} reads, ${writer!.rounds} appends, 0 errors`,
        );
      }
      expect(node.agent!.exitStatus()).to.equal(undefined);
      expect((await readFile(`/proc/${node.agent!.pid}/cmdline`, "utf8")).split("\0")).to.include(upgraded);
    });

    it("every acknowledged append is in the file, in order", async () => {
      await writer!.stop();
      const acknowledged = writer!.acknowledged;
      const r = await node.exec("pod", ["cat", "/datasets/out/log.txt"]);
      expect(r.code).to.equal(0);
      const lines = r.stdout.split("\n").filter((l) => l !== "");
      const numbers = lines.map((l) => Number(l.slice("line ".length)));
      expect(numbers.slice(0, acknowledged.length)).to.deep.equal(acknowledged);
      writer = undefined;
    });

    it("the mounter killed (its clients with it): status and /readyz say so, the agent remounts when it is back", async () => {
      const before = await node.clients();
      expect(await readyz()).to.equal(200);
      await node.killMounter();
      await waitFor("/readyz 503", async () => (await readyz()) === 503, 10_000);
      // A new entry while the mounter is down fails with a message that names the cause.
      await node.setBuckets("pod", "data:ro, out, extra:ro");
      await waitFor("extra failed", async () => (await state("extra")) === "failed", 20_000);
      expect((await node.status("pod")).extra?.error).to.match(/mounter is not reachable/);
      await node.startMounter();
      await waitFor(
        "all three mounted again",
        async () =>
          (await state("data")) === "mounted" &&
          (await state("out")) === "mounted" &&
          (await state("extra")) === "mounted" &&
          (await node.exec("pod", ["cat", "/datasets/extra/e.txt"])).stdout === "extra\n" &&
          (await node.exec("pod", ["cat", "/datasets/data/lines.txt"])).stdout === LINES,
        60_000,
      );
      expect(await readyz()).to.equal(200);
      const after = await node.clients();
      expect(after.size).to.equal(3);
      for (const [mp, pid] of before) expect(after.get(mp), mp).to.not.equal(pid);
    });
  });
}
