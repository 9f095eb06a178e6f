/**
 * dvctl end to end: the real CLI against the real agent in local mode (its own process, in a
 * Bidirectional mount namespace, serving the console over TLS with a static token file), real s3fs
 * against a real S3 server, and a runc container whose view of the mounts is checked from inside.
 */
import { expect } from "chai";
import { fastAgentArgs, localConsoleArgs } from "../support/harness.js";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mountsUnder } from "../../agent/mount/mountinfo.js";
import { LocalNode } from "../../scripts/lib/local-node.js";
import { readMountinfo } from "../../scripts/lib/namespaces.js";
import type { PodSummary } from "../../shared/protocol.js";
import { runDvctl, type DvctlResult } from "../support/dvctl.js";
import { makeTestPki, type TestPki } from "../support/tls.js";

const explain = (r: DvctlResult): string =>
  `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;

describe("dvctl end to end with the real agent and s3fs", function () {
  this.timeout(120_000);
  let node: LocalNode | undefined;
  let pki: TestPki;
  let dir: string;
  let agentUrl: string;

  const dv = (args: string[], token = "dvctl-e2e-token"): Promise<DvctlResult> => {
    const tokenFile = join(dir, `token-${token}`);
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    return runDvctl(["--agent", agentUrl, "--token-file", tokenFile, "--ca-file", pki.caFile, ...args], {
      env: { HOME: dir },
    });
  };
  const inPod = (argv: string[]) => node!.exec("pod-a", argv);

  before(async function () {
    if (process.getuid?.() !== 0)
      throw new Error("the end-to-end tests need root; run scripts/setup.sh and npm test as root");
    pki = makeTestPki();
    dir = mkdtempSync(join(tmpdir(), "dvctl-e2e-"));
    const tokens = join(dir, "tokens.csv");
    writeFileSync(tokens, 'dvctl-e2e-token,e2e-user,1,"dev"\n', { mode: 0o600 });
    node = await LocalNode.start({
      prefix: "dv-e2e-dvctl-",
      buckets: { alpha: { "hello.txt": "hello alpha\n", "sub/x.txt": "x from alpha/sub\n" } },
      agentArgs: [...fastAgentArgs("s3fs"), ...localConsoleArgs(pki, tokens)],
    });
    await node.writeSecret("team-a");
    await node.addPod({ namespace: "team-a", name: "pod-a" });
    await node.startAgent();
    const port = /"listen":"127\.0\.0\.1:(\d+)"/.exec(await node.agentLog())?.[1];
    if (port === undefined) throw new Error(`the agent logged no console port:\n${await node.agentLog()}`);
    agentUrl = `wss://127.0.0.1:${port}`;
  });

  after(async function () {
    if (node !== undefined) {
      const log = await node.agentLog();
      await node.stop();
      const leaked = mountsUnder(await readMountinfo(), node.work);
      if (this.currentTest?.state === "failed" || leaked.length > 0)
        console.log(log.split("\n").slice(-40).join("\n"));
      expect(
        leaked.map((m) => m.mountPoint),
        "mounts left behind",
      ).to.deep.equal([]);
    }
    rmSync(dir, { recursive: true, force: true });
    rmSync(pki.dir, { recursive: true, force: true });
  });

  it("lists the pod, with no mounts yet", async () => {
    const r = await dv(["ls"]);
    expect(r.code, explain(r)).to.equal(0);
    expect(r.stdout).to.match(/^team-a\s+pod-a\s+-\s+-/m);
  });

  it("mounts alpha/sub read-only as data: the running container reads it; writes are refused", async () => {
    const r = await dv(["mount", "team-a/pod-a", "alpha/sub", "--name", "data", "--ro"]);
    expect(r.code, explain(r)).to.equal(0);
    expect(r.stdout).to.equal("team-a/pod-a: data mounted at /datasets/data (alpha/sub, ro)\n");
    expect(r.stderr).to.include("team-a/pod-a data: mounting (alpha/sub, ro)");
    // The reply came once the agent saw the mount; the container sees it through propagation.
    const cat = await inPod(["cat", "/datasets/data/x.txt"]);
    expect(cat.code, cat.stderr).to.equal(0);
    expect(cat.stdout).to.equal("x from alpha/sub\n");
    const write = await inPod(["sh", "-c", "echo no > /datasets/data/new.txt"]);
    expect(write.code).to.not.equal(0);
    expect(write.stderr).to.match(/Read-only file system/);
    const s = await dv(["-o", "json", "status", "team-a/pod-a"]);
    expect(s.code, explain(s)).to.equal(0);
    const data = (JSON.parse(s.stdout) as PodSummary).mounts.find((m) => m.name === "data");
    expect(data).to.deep.include({
      state: "mounted",
      bucket: "alpha",
      prefix: "sub",
      readOnly: true,
      path: "/datasets/data",
    });
  });

  it("a bucket that does not exist ends failed: exit 1, nothing appears in the container", async () => {
    const r = await dv(["mount", "team-a/pod-a", "no-such-bucket", "--name", "ghost", "--timeout", "90"]);
    expect(r.code, explain(r)).to.equal(1);
    expect(r.stdout).to.match(/^team-a\/pod-a: ghost failed: /);
    expect((await inPod(["ls", "-A", "/datasets/ghost"])).stdout).to.equal("");
    const u = await dv(["umount", "team-a/pod-a", "ghost"]);
    expect(u.code, explain(u)).to.equal(0);
  });

  it("a token the agent does not know exits 3", async () => {
    const r = await dv(["ls"], "someone-else");
    expect(r.code, explain(r)).to.equal(3);
  });

  it("umount makes the data disappear from the running container", async () => {
    const r = await dv(["umount", "team-a/pod-a", "data"]);
    expect(r.code, explain(r)).to.equal(0);
    expect(r.stdout).to.equal("team-a/pod-a: data removed\n");
    const gone = await inPod(["test", "-e", "/datasets/data/x.txt"]);
    expect(gone.code).to.not.equal(0);
    expect((await inPod(["ls", "-A", "/datasets"])).stdout.trim()).to.equal("");
    const l = await dv(["ls"]);
    expect(l.stdout).to.match(/^team-a\s+pod-a\s+-\s+-/m);
  });
});
