/**
 * `dvctl console` in terminal mode, in process: keystrokes go into readline as a terminal would
 * send them, so that Tab completion, history and Ctrl-C run for real against an agent console.
 * The last case runs the real dvctl process on a real pseudo-terminal (util-linux `script`), in raw
 * mode, where Ctrl-C is a byte and not a signal.
 */
import { expect } from "chai";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn, spawnSync } from "node:child_process";
import { PassThrough } from "node:stream";
import {
  AuthenticatedUserAuthorizer,
  StaticTokenAuthenticator,
  parseTokenAuthFile,
} from "../../../agent/console/auth.js";
import { DvctlClient } from "../../../dvctl/client.js";
import type { Endpoint } from "../../../dvctl/connect.js";
import { runRepl } from "../../../dvctl/repl.js";
import { ConsoleStack } from "../../support/console-stack.js";
import { DVCTL_MAIN, REPO } from "../../support/dvctl.js";
import { makeTestPki, type TestPki } from "../../support/tls.js";

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// Cursor movement and line redraws, so that assertions read what a user would see.
// eslint-disable-next-line no-control-regex
const plain = (s: string): string => s.replace(/\u001b\[[0-9;]*[A-Za-z]/g, "");

describe("dvctl console in a terminal", function () {
  this.timeout(30_000);
  let pki: TestPki;
  let stack: ConsoleStack;
  let dir: string;
  let connections = 0;

  before(async () => {
    pki = makeTestPki();
    dir = mkdtempSync(join(tmpdir(), "dvctl-tty-"));
    stack = new ConsoleStack({
      pki,
      authenticator: new StaticTokenAuthenticator(parseTokenAuthFile("alice-token,alice,1\n").tokens),
      authorizer: new AuthenticatedUserAuthorizer(),
    });
    stack.writePod("trainer.json", stack.mk("team-a", "trainer", "data=bucket-a,models=bucket-m:ro"));
    stack.writePod("other.json", stack.mk("team-b", "other"));
    await stack.start();
    await until("mounted", () => stack.settledMounts(2));
  });
  after(async () => {
    await stack?.close();
    rmSync(pki.dir, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  });

  function start(
    historyFile: string,
    completionMaxAgeMs?: number,
  ): {
    type: (keys: string) => void;
    screen: () => string;
    errors: () => string;
    done: Promise<number>;
  } {
    const input = new PassThrough();
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let out = "";
    let err = "";
    stdout.on("data", (c: Buffer) => (out += c.toString()));
    stderr.on("data", (c: Buffer) => (err += c.toString()));
    const endpoint: Endpoint = {
      connect: () => {
        connections++;
        return DvctlClient.connect({
          url: `wss://127.0.0.1:${stack.port}/console`,
          token: "alice-token",
          ca: stack.ca,
        });
      },
      close: async () => undefined,
    };
    const done = runRepl({
      input,
      stdout,
      stderr,
      terminal: true,
      historyFile,
      historySize: 3,
      endpoint,
      output: "table",
      now: () => new Date(),
      ...(completionMaxAgeMs !== undefined ? { completionMaxAgeMs } : {}),
    });
    return { type: (k) => input.write(k), screen: () => plain(out), errors: () => err, done };
  }

  it("completes commands, ns/pod names and mount names with Tab, and keeps a bounded history", async () => {
    const history = join(dir, "h1");
    const c = start(history);
    await until("the prompt", () => c.screen().includes("dvctl> "));
    c.type("sta\t");
    c.type(" team-a/tr\t");
    c.type("\r");
    await until("the status", () => c.screen().includes("Pod:         team-a/trainer"));
    c.type("umount team-a/trainer mo\t");
    await until("the completed mount name", () => c.screen().includes("umount team-a/trainer models"));
    // Ctrl-U clears the line: nothing is unmounted. A Tab inside a chunk would count as pasted
    // text, so each Tab ends a write, as it does when a user types.
    c.type("\u0015ls -n team-\t");
    c.type("\t");
    await until("both namespaces listed", () => /team-a\s+team-b/.test(c.screen()));
    c.type("b\r");
    await until("ls team-b", () => /team-b\s+other/.test(c.screen()));
    c.type("ls\rls\rquit\r");
    expect(await c.done).to.equal(0);
    // Bounded to 3, oldest first, duplicates kept once.
    expect(readFileSync(history, "utf8")).to.equal("ls -n team-b\nls\nquit\n");
    expect(c.errors()).to.equal("");
  });

  it("recalls the history of an earlier session with the up arrow", async () => {
    const history = join(dir, "h2");
    writeFileSync(history, "status team-b/other\n");
    const c = start(history);
    await until("the prompt", () => c.screen().includes("dvctl> "));
    c.type("\u001b[A\r");
    await until("the recalled status", () => c.screen().includes("Pod:         team-b/other"));
    c.type("exit\r");
    expect(await c.done).to.equal(0);
  });

  it("refreshes stale completion data from the agent before completing", async () => {
    const c = start(join(dir, "h4"), 0);
    await until("the prompt", () => c.screen().includes("dvctl> "));
    const other = await DvctlClient.connect({
      url: `wss://127.0.0.1:${stack.port}/console`,
      token: "alice-token",
      ca: stack.ca,
    });
    await other.request({
      op: "mount",
      namespace: "team-b",
      pod: "other",
      bucket: "bucket-f",
      name: "fresh",
    });
    await other.close();
    c.type("umount team-b/other f\t");
    await until("the new mount name", () => c.screen().includes("umount team-b/other fresh"));
    c.type("\r");
    await until("unmounted", () => c.screen().includes("team-b/other: fresh removed"));
    c.type("quit\r");
    expect(await c.done).to.equal(0);
  });

  it("Ctrl-C on a line being typed clears it; a second Ctrl-C, on the empty line, leaves", async () => {
    const c = start(join(dir, "h5"));
    let ended = false;
    void c.done.then(() => (ended = true));
    await until("the prompt", () => c.screen().includes("dvctl> "));
    c.type("status team-a/trainer");
    await until("the echo", () => c.screen().includes("status team-a/trainer"));
    c.type("\u0003");
    await until("a fresh prompt after ^C", () => /\^C\r?\n(\r)?dvctl> $/.test(c.screen()));
    await new Promise((r) => setTimeout(r, 200));
    expect(ended, "the console must not end on a Ctrl-C with text on the line").to.equal(false);
    // What was typed is gone: the next line runs alone.
    c.type("ls -n team-b\r");
    await until("ls team-b", () => /team-b\s+other/.test(c.screen()));
    expect(c.screen()).not.to.include("Pod:");
    c.type("\u0003");
    expect(await c.done).to.equal(0);
    expect(c.errors()).to.equal("");
  });

  it("Tab on an ambiguous word lists the candidates at once and inserts nothing", async () => {
    const c = start(join(dir, "h6"));
    await until("the prompt", () => c.screen().includes("dvctl> "));
    c.type("status team-");
    c.type("\t");
    await until("the candidates after one Tab", () => /team-a\/trainer\s+team-b\/other/.test(c.screen()));
    // The line is shown again below the list, unchanged.
    await until("the line redrawn", () => /team-b\/other\r?\n(\r)?dvctl> status team-$/.test(c.screen()));
    c.type("a/trainer\r");
    await until("the status", () => c.screen().includes("Pod:         team-a/trainer"));
    c.type("quit\r");
    expect(await c.done).to.equal(0);
    expect(c.errors()).to.equal("");
  });

  it("rows streamed by watch line up with the header above them", async () => {
    const c = start(join(dir, "h7"));
    await until("the prompt", () => c.screen().includes("dvctl> "));
    c.type("watch -n team-a\r");
    await until("the snapshot", () => /team-a\s+trainer\s+models\s+mounted/.test(c.screen()));
    const other = await DvctlClient.connect({
      url: `wss://127.0.0.1:${stack.port}/console`,
      token: "alice-token",
      ca: stack.ca,
    });
    const longName = "a-mount-name-wider-than-its-column";
    try {
      for (const name of ["w", longName, "z"])
        await other.request({ op: "mount", namespace: "team-a", pod: "trainer", bucket: "bucket-w", name });
      await until("the last row", () => /team-a\s+trainer\s+z\s+mounted/.test(c.screen()));
      for (const name of ["w", longName, "z"])
        await other.request({ op: "unmount", namespace: "team-a", pod: "trainer", name });
    } finally {
      await other.close();
    }
    c.type("\u0003");
    await until("a new prompt", () => c.screen().lastIndexOf("dvctl> ") > c.screen().lastIndexOf("z"));
    const starts = (line: string): number[] => [
      0,
      ...[...line.matchAll(/ {3,}(?=\S)/g)].map((m) => m.index + m[0].length),
    ];
    const lines = c
      .screen()
      .slice(c.screen().indexOf("watch -n team-a"))
      .split("\n")
      .map((l) => l.replace(/\r/g, ""));
    let header: number[] | undefined;
    let rows = 0;
    for (const line of lines) {
      if (line.startsWith("NAMESPACE")) header = starts(line);
      else if (line.startsWith("team-a")) {
        expect(header, "a header above the rows").to.not.equal(undefined);
        expect(starts(line), line).to.deep.equal(header!.slice(0, starts(line).length));
        rows++;
      }
    }
    expect(rows).to.be.greaterThan(6);
    expect(c.screen()).to.include(longName);
    c.type("\u0003");
    expect(await c.done).to.equal(0);
  });

  it("on a real pseudo-terminal: Tab lists, Ctrl-C clears the line, then leaves", async () => {
    if (spawnSync("script", ["--version"]).status !== 0)
      throw new Error("this test needs script(1) from util-linux (Debian: bsdutils)");
    const tokenFile = join(dir, "token");
    writeFileSync(tokenFile, "alice-token\n");
    writeFileSync(join(dir, "ca.crt"), stack.ca);
    const quote = (a: string): string => `'${a.replace(/'/g, "'\\''")}'`;
    const command = [
      process.execPath,
      "--import",
      "tsx",
      DVCTL_MAIN,
      "--agent",
      `wss://127.0.0.1:${stack.port}`,
      "--token-file",
      tokenFile,
      "--ca-file",
      join(dir, "ca.crt"),
      "console",
    ]
      .map(quote)
      .join(" ");
    // script copies its stdin to the terminal's input, and the terminal's output to its stdout.
    const child = spawn("script", ["-q", "-e", "-c", command, "/dev/null"], {
      cwd: REPO,
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, TERM: "xterm" },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr.on("data", (c: Buffer) => (out += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("close", (code) => resolve(code)));
    const screen = (): string => plain(out);
    const type = (k: string): void => void child.stdin.write(k);
    try {
      await until("the prompt", () => screen().includes("dvctl> "), 30_000);
      type("status team-");
      await until("the echo", () => screen().includes("dvctl> status team-"));
      type("\t");
      await until("the candidates", () => /team-a\/trainer\s+team-b\/other/.test(screen()));
      type("\u0003");
      await until("^C and a fresh prompt", () => /\^C\r*\n\r*dvctl> $/.test(screen()));
      type("ls -n team-b\r");
      await until("ls team-b", () => /team-b\s+other/.test(screen()));
      expect(screen()).not.to.include("Pod:");
      type("\u0003");
      expect(await exited).to.equal(0);
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("Ctrl-C ends a watch and returns to the prompt; Ctrl-C at the prompt leaves", async () => {
    const c = start(join(dir, "h3"));
    await until("the prompt", () => c.screen().includes("dvctl> "));
    const before = connections;
    c.type("watch -n team-a\r");
    await until("the snapshot", () => /team-a\s+trainer\s+models\s+mounted/.test(c.screen()));
    // A watch has its own connection, closed when it ends.
    expect(connections).to.equal(before + 1);
    c.type("\u0003");
    await until("a new prompt", () => c.screen().lastIndexOf("dvctl> ") > c.screen().lastIndexOf("models"));
    c.type("\u0003");
    expect(await c.done).to.equal(0);
  });
});
