/**
 * The real dvctl, as a child process, against an agent console (local pod source, fake mount
 * engine, real reconciler, real HTTPS and websocket server with the test PKI).
 */
import { expect } from "chai";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  StaticTokenAuthenticator,
  parseTokenAuthFile,
  type Authorizer,
} from "../../../agent/console/auth.js";
import type { ListResult, MountResult, PodSummary, StateEvent } from "../../../shared/protocol.js";
import { ConsoleClient } from "../../support/console-client.js";
import { ConsoleStack, NODE_NAME } from "../../support/console-stack.js";
import { runDvctl, startDvctl, type DvctlResult } from "../../support/dvctl.js";
import { TEST_SERVER_NAME, makeTestPki, type TestPki } from "../../support/tls.js";

const TOKENS = 'alice-token,alice,1,"dev"\nbob-token,bob,2\n';

// bob may read but not patch: the console's Forbidden.
const authorizer: Authorizer = {
  authorize: async (user, verb) =>
    user.username === "bob" && verb === "patch"
      ? { allowed: false, reason: "read-only user" }
      : { allowed: true },
};

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function explain(r: DvctlResult): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

describe("dvctl against an agent console", function () {
  this.timeout(60_000);
  let pki: TestPki;
  let stack: ConsoleStack;
  let home: string;
  let aliceFile: string;
  let bobFile: string;
  let wrongFile: string;
  const dv = (args: string[], o: { token?: string; input?: string } = {}): Promise<DvctlResult> =>
    runDvctl(
      [
        "--agent",
        `wss://127.0.0.1:${stack.port}`,
        "--token-file",
        o.token ?? aliceFile,
        "--ca-file",
        pki.caFile,
        ...args,
      ],
      { env: { HOME: home }, ...(o.input !== undefined ? { input: o.input } : {}) },
    );

  before(async () => {
    pki = makeTestPki();
    home = mkdtempSync(join(tmpdir(), "dvctl-home-"));
    aliceFile = join(home, "alice");
    bobFile = join(home, "bob");
    wrongFile = join(home, "wrong");
    writeFileSync(aliceFile, "alice-token\n");
    writeFileSync(bobFile, "bob-token");
    writeFileSync(wrongFile, "not-a-token\n");
    stack = new ConsoleStack({
      pki,
      authenticator: new StaticTokenAuthenticator(parseTokenAuthFile(TOKENS).tokens),
      authorizer,
    });
    stack.writePod("trainer.json", stack.mk("team-a", "trainer", "a=bucket-a"));
    stack.writePod("other.json", stack.mk("team-b", "other"));
    await stack.start();
    await until("a mounted", () => stack.settledMounts(1));
  });

  after(async () => {
    await stack?.close();
    rmSync(pki.dir, { recursive: true, force: true });
    rmSync(home, { recursive: true, force: true });
  });

  describe("ls and status", () => {
    it("ls prints a table with STATE and AGE, one row per mount", async () => {
      const r = await dv(["ls"]);
      expect(r.code, explain(r)).to.equal(0);
      const lines = r.stdout.trimEnd().split("\n");
      expect(lines[0]).to.match(/^NAMESPACE\s+POD\s+NAME\s+STATE\s+SOURCE\s+ACCESS\s+AGE$/);
      expect(lines[1]).to.match(/^team-a\s+trainer\s+a\s+mounted\s+bucket-a\s+rw\s+\d+s$/);
      expect(lines[2]).to.match(/^team-b\s+other\s+-\s+-/);
    });

    it("ls -n and -o json print the agent's result as JSON", async () => {
      const r = await dv(["-o", "json", "ls", "-n", "team-b"]);
      expect(r.code, explain(r)).to.equal(0);
      const list = JSON.parse(r.stdout) as ListResult;
      expect(list.node).to.equal(NODE_NAME);
      expect(list.pods.map((p) => p.pod)).to.deep.equal(["other"]);
    });

    it("status shows one pod; -o json parses; a pod on another node exits 1 (WrongNode)", async () => {
      const r = await dv(["status", "team-a/trainer"]);
      expect(r.code, explain(r)).to.equal(0);
      expect(r.stdout).to.match(/^Pod: +team-a\/trainer\nNode: +node-1\nMount path: +\/datasets\n/);
      expect(r.stdout).to.match(/\na\s+mounted\s+bucket-a\s+rw\s+\/datasets\/a\s+\d+s\n/);
      const j = await dv(["status", "team-a/trainer", "-o", "json"]);
      expect((JSON.parse(j.stdout) as PodSummary).mounts[0]?.state).to.equal("mounted");
      const ghost = await dv(["status", "team-a/ghost"]);
      expect(ghost.code, explain(ghost)).to.equal(1);
      // A cluster agent says WrongNode; an agent on local pod files says NotFound, naming no cluster.
      expect(ghost.stderr).to.match(
        /^dvctl: (WrongNode: pod team-a\/ghost is not on node node-1|NotFound: no pod team-a\/ghost)/,
      );
    });
  });

  describe("mount and umount", () => {
    it("mounts with progress on stderr, then unmounts", async () => {
      const m = await dv(["mount", "team-a/trainer", "bucket-b/2024/x", "--name", "data", "--ro"]);
      expect(m.code, explain(m)).to.equal(0);
      expect(m.stdout).to.equal("team-a/trainer: data mounted at /datasets/data (bucket-b/2024/x, ro)\n");
      expect(m.stderr).to.include("team-a/trainer data: mounting (bucket-b/2024/x, ro)");
      expect(stack.buckets("trainer.json")).to.equal("a=bucket-a,data=bucket-b/2024/x:ro");
      const u = await dv(["umount", "team-a/trainer", "data"]);
      expect(u.code, explain(u)).to.equal(0);
      expect(u.stdout).to.equal("team-a/trainer: data removed\n");
      expect(stack.buckets("trainer.json")).to.equal("a=bucket-a");
    });

    it("-o json prints the mount result", async () => {
      const m = await dv(["-o", "json", "mount", "team-b/other", "bucket-c"]);
      expect(m.code, explain(m)).to.equal(0);
      expect((JSON.parse(m.stdout) as MountResult).mount).to.deep.include({
        name: "bucket-c",
        state: "mounted",
      });
      expect((await dv(["umount", "team-b/other", "bucket-c"])).code).to.equal(0);
    });

    it("a mount that ends failed exits 1 and says why", async () => {
      stack.engine.failures.set("bucket-broken", 1000);
      const m = await dv(["mount", "team-a/trainer", "bucket-broken", "--name", "broken"]);
      expect(m.code, explain(m)).to.equal(1);
      expect(m.stdout).to.match(/^team-a\/trainer: broken failed: .*bucket bucket-broken does not exist/);
      expect((await dv(["umount", "team-a/trainer", "broken"])).code).to.equal(0);
    });

    it("a name that is taken is a Conflict showing the existing mount, unless --replace", async () => {
      const m = await dv(["mount", "team-a/trainer", "bucket-z", "--name", "a"]);
      expect(m.code, explain(m)).to.equal(1);
      expect(m.stdout).to.equal("");
      const lines = m.stderr.trimEnd().split("\n");
      expect(lines[0]).to.match(/^dvctl: Conflict: .*"a".*a=bucket-a/);
      expect(m.stderr).to.include("--replace");
      expect(m.stderr).to.match(/\nThe existing mount:\nNAME\s+STATE\s+SOURCE\s+ACCESS\s+PATH\s+AGE\n/);
      expect(lines.at(-1)).to.match(/^a\s+mounted\s+bucket-a\s+rw\s+\/datasets\/a\s+\d+[sm]/);
      expect(stack.buckets("trainer.json")).to.equal("a=bucket-a");
      // The same entry again is no conflict: there is nothing to replace.
      const same = await dv(["mount", "team-a/trainer", "bucket-a", "--name", "a"]);
      expect(same.code, explain(same)).to.equal(0);
      try {
        const r = await dv(["mount", "team-a/trainer", "bucket-z", "--name", "a", "--replace"]);
        expect(r.code, explain(r)).to.equal(0);
        expect(r.stdout).to.equal("team-a/trainer: a mounted at /datasets/a (bucket-z, rw)\n");
        expect(stack.buckets("trainer.json")).to.equal("a=bucket-z");
      } finally {
        await dv(["mount", "team-a/trainer", "bucket-a", "--name", "a", "--replace"]);
      }
      expect(stack.buckets("trainer.json")).to.equal("a=bucket-a");
    });

    it("unmounting a mount that does not exist exits 1 (NotFound)", async () => {
      const u = await dv(["umount", "team-a/trainer", "nope"]);
      expect(u.code, explain(u)).to.equal(1);
      expect(u.stderr).to.match(/NotFound: pod team-a\/trainer has no mount named "nope"/);
    });

    it("a mount slower than --timeout exits 5; the agent keeps the change", async () => {
      stack.engine.mountDelayMs = 3000;
      try {
        const m = await dv(["mount", "team-b/other", "bucket-slow", "--name", "slow", "--timeout", "1"]);
        expect(m.code, explain(m)).to.equal(5);
        expect(m.stderr).to.match(/Timeout: mount slow did not finish within 1 s/);
        expect(stack.buckets("other.json")).to.equal("slow=bucket-slow");
      } finally {
        stack.engine.mountDelayMs = 0;
      }
      expect((await dv(["umount", "team-b/other", "slow"])).code).to.equal(0);
    });
  });

  describe("exit codes for the connection", () => {
    it("a refused token exits 3; a token that may not patch exits 3 (Forbidden)", async () => {
      const bad = await dv(["ls"], { token: wrongFile });
      expect(bad.code, explain(bad)).to.equal(3);
      expect(bad.stderr).to.match(/the agent refused the token/);
      expect(bad.stderr).to.not.include("not-a-token");
      const bob = await dv(["mount", "team-a/trainer", "bucket-b"], { token: bobFile });
      expect(bob.code, explain(bob)).to.equal(3);
      expect(bob.stderr).to.match(/Forbidden: user "bob" may not patch pods/);
      expect((await dv(["ls"], { token: bobFile })).code).to.equal(0);
    });

    it("an unreachable agent exits 4", async () => {
      const closed = createServer();
      await new Promise<void>((r) => closed.listen(0, "127.0.0.1", () => r()));
      const port = (closed.address() as { port: number }).port;
      await new Promise<void>((r) => closed.close(() => r()));
      const r = await runDvctl(["--agent", `wss://127.0.0.1:${port}`, "--token", "x", "ls"]);
      expect(r.code, explain(r)).to.equal(4);
      expect(r.stderr).to.match(
        /cannot reach the agent's console at wss:\/\/127\.0\.0\.1:\d+\/console.*ECONNREFUSED/,
      );
    });

    it("an unverifiable certificate exits 4 with a hint; --insecure-skip-tls-verify warns and works", async () => {
      const url = `wss://127.0.0.1:${stack.port}`;
      const r = await runDvctl(["--agent", url, "--token-file", aliceFile, "ls"]);
      expect(r.code, explain(r)).to.equal(4);
      expect(r.stderr).to.match(/cannot verify the agent's certificate.*--ca-file/);
      const i = await runDvctl([
        "--agent",
        url,
        "--token-file",
        aliceFile,
        "--insecure-skip-tls-verify",
        "ls",
      ]);
      expect(i.code, explain(i)).to.equal(0);
      expect(i.stderr).to.match(/WARNING: --insecure-skip-tls-verify/);
    });

    it("--tls-server-name checks the certificate against that name", async () => {
      const ok = await dv(["--tls-server-name", TEST_SERVER_NAME, "ls"]);
      expect(ok.code, explain(ok)).to.equal(0);
      const wrong = await dv(["--tls-server-name", "dynamic-volumes-agent.elsewhere.svc", "ls"]);
      expect(wrong.code, explain(wrong)).to.equal(4);
      expect(wrong.stderr).to.match(/ERR_TLS_CERT_ALTNAME_INVALID/);
    });

    it("usage errors exit 2: a bad argument, --agent without a token", async () => {
      expect((await dv(["status", "trainer"])).code).to.equal(2);
      const r = await runDvctl(["--agent", `wss://127.0.0.1:${stack.port}`, "ls"]);
      expect(r.code, explain(r)).to.equal(2);
      expect(r.stderr).to.match(/--agent needs --token or --token-file/);
    });

    it("--debug shows the settings with the token redacted", async () => {
      const r = await runDvctl([
        "--agent",
        `wss://127.0.0.1:${stack.port}`,
        "--token",
        "alice-token",
        "--ca-file",
        pki.caFile,
        "--debug",
        "ls",
      ]);
      expect(r.code, explain(r)).to.equal(0);
      expect(r.stderr).to.include('"token":"[REDACTED]"');
      expect(r.stdout + r.stderr).to.not.include("alice-token");
    });
  });

  describe("watch", () => {
    it("prints the snapshot, then state changes, until Ctrl-C (exit 0)", async () => {
      const args = [
        "--agent",
        `wss://127.0.0.1:${stack.port}`,
        "--token-file",
        aliceFile,
        "--ca-file",
        pki.caFile,
      ];
      const w = startDvctl([...args, "watch", "-n", "team-a"], { env: { HOME: home } });
      const j = startDvctl([...args, "-o", "json", "watch", "team-a/trainer"], { env: { HOME: home } });
      await w.waitForOutput(/^team-a\s+trainer\s+a\s+mounted/m);
      await j.waitForOutput(/"node":"node-1"/);
      const c = await ConsoleClient.as(stack.port, stack.ca, "alice-token");
      try {
        await c.ok({ op: "mount", namespace: "team-a", pod: "trainer", bucket: "bucket-w", name: "w" });
        await c.ok({ op: "mount", namespace: "team-b", pod: "other", bucket: "bucket-x", name: "x" });
        await w.waitForOutput(/^team-a\s+trainer\s+w\s+mounted\s+bucket-w\s+rw\s+0s$/m);
        await j.waitForOutput(/"name":"w".*"state":"mounted"/);
        await c.ok({ op: "unmount", namespace: "team-a", pod: "trainer", name: "w" });
        await c.ok({ op: "unmount", namespace: "team-b", pod: "other", name: "x" });
        await w.waitForOutput(/^team-a\s+trainer\s+w\s+removed/m);
      } finally {
        await c.close();
      }
      w.child.kill("SIGINT");
      j.child.kill("SIGINT");
      const [wr, jr] = await Promise.all([w.exited, j.exited]);
      expect(wr.code, explain(wr)).to.equal(0);
      expect(jr.code, explain(jr)).to.equal(0);
      expect(wr.stdout).to.not.include("team-b");
      const lines = jr.stdout
        .trimEnd()
        .split("\n")
        .map((l) => JSON.parse(l) as ListResult | StateEvent);
      expect((lines[0] as ListResult).pods.map((p) => p.pod)).to.deep.equal(["trainer"]);
      expect(lines.slice(1).every((e) => (e as StateEvent).pod === "trainer")).to.equal(true);
    });

    it("a watch whose agent goes away exits 4", async () => {
      const other = new ConsoleStack({
        pki,
        authenticator: new StaticTokenAuthenticator(parseTokenAuthFile(TOKENS).tokens),
        authorizer,
      });
      await other.start();
      const w = startDvctl(
        [
          "--agent",
          `wss://127.0.0.1:${other.port}`,
          "--token-file",
          aliceFile,
          "--ca-file",
          pki.caFile,
          "watch",
        ],
        { env: { HOME: home } },
      );
      await w.waitForOutput(/^NAMESPACE/m);
      await other.close();
      const r = await w.exited;
      expect(r.code, explain(r)).to.equal(4);
      expect(r.stderr).to.match(/the connection to the agent closed \(1001: the agent is shutting down\)/);
    });
  });

  describe("console", () => {
    it("runs commands from stdin on one connection and exits with the last command's status", async () => {
      const r = await dv(["console"], { input: "ls\nstatus team-a/trainer\nhelp\nquit\nls\n" });
      expect(r.code, explain(r)).to.equal(0);
      expect(r.stdout).to.match(/^NAMESPACE\s+POD\s+NAME/);
      expect(r.stdout).to.match(/\nPod: +team-a\/trainer\n/);
      expect(r.stdout).to.include("Commands (as on the command line");
      // Nothing after quit ran; one connection served everything.
      expect(r.stdout.match(/^NAMESPACE/gm)).to.have.length(1);
    });

    it("reports errors and keeps going; mount and umount work; a bad last command sets the status", async () => {
      const input = [
        "status trainer",
        "status 'team-a/trainer",
        "mount team-a/trainer bucket-r --name r --ro",
        "umount team-a/trainer r",
        "status team-a/ghost",
        "",
      ].join("\n");
      const r = await dv(["console"], { input });
      expect(r.code, explain(r)).to.equal(1);
      expect(r.stderr).to.match(/error: "trainer" is not NS\/POD/);
      expect(r.stderr).to.match(/error: unterminated ' quote/);
      expect(r.stdout).to.include("team-a/trainer: r mounted at /datasets/r (bucket-r, ro)\n");
      expect(r.stdout).to.include("team-a/trainer: r removed\n");
      expect(r.stderr).to.match(/error: (WrongNode|NotFound)/);
      expect(stack.buckets("trainer.json")).to.equal("a=bucket-a");
    });

    it("a bad token fails at start with 3; no history is written without a terminal", async () => {
      const r = await dv(["console"], { token: wrongFile, input: "ls\n" });
      expect(r.code, explain(r)).to.equal(3);
      expect(() => readFileSync(join(home, ".dvctl_history"))).to.throw(/ENOENT/);
    });
  });
});
