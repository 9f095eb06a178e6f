import { expect } from "chai";
import { createServer, type Server } from "node:net";
import { PassThrough } from "node:stream";
import {
  buildMountRequest,
  buildUnmountRequest,
  parseAgentUrl,
  parseBucketRef,
  parsePodRef,
  parseTimeoutSeconds,
  splitWords,
} from "../../../dvctl/args.js";
import { runCli } from "../../../dvctl/cli.js";
import { EXIT, UsageError, exitCodeOf } from "../../../dvctl/errors.js";
import { AppError } from "../../../shared/errors.js";
import { ConsoleError } from "../../../shared/protocol.js";

function usageError(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).to.be.instanceOf(UsageError);
    expect(exitCodeOf(e)).to.equal(EXIT.usage);
    return (e as Error).message;
  }
  throw new Error("no UsageError");
}

describe("parsePodRef", () => {
  const ok: Array<[string, string, string | undefined, { namespace: string; pod: string }]> = [
    ["[ok] NS/POD", "team-a/trainer-0", undefined, { namespace: "team-a", pod: "trainer-0" }],
    ["[ok] a dotted pod name", "ns/web-7d9f.x", undefined, { namespace: "ns", pod: "web-7d9f.x" }],
    ["[ok] POD with -n", "trainer-0", "team-a", { namespace: "team-a", pod: "trainer-0" }],
  ];
  for (const [name, text, ns, want] of ok) it(name, () => expect(parsePodRef(text, ns)).to.deep.equal(want));

  const bad: Array<[string, string, RegExp]> = [
    ["[error] no slash", "trainer-0", /is not NS\/POD/],
    ["[error] two slashes", "a/b/c", /is not NS\/POD/],
    ["[error] path traversal", "../etc", /namespace/],
    ["[error] traversal in the pod", "ns/..", /pod name/],
    ["[error] an option", "-rf/x", /namespace/],
    ["[error] uppercase", "Team/pod", /namespace/],
    ["[error] shell metacharacters", "ns/pod;rm -rf /", /is not NS\/POD|pod name/],
    ["[error] empty pod", "ns/", /pod name is empty/],
    ["[error] a newline", "ns/po\nd", /pod name/],
    ["[error] very long input", `ns/${"a".repeat(100_000)}`, /longer than 320/],
    ["[error] unicode look-alike", "ns/pоd", /pod name/],
  ];
  for (const [name, text, re] of bad)
    it(name, () => expect(usageError(() => parsePodRef(text))).to.match(re));

  it("[error] does not echo control characters back", () => {
    expect(usageError(() => parsePodRef("ns\u001b[2J/x"))).to.not.include("\u001b");
  });
});

describe("parseBucketRef", () => {
  const ok: Array<[string, string, { bucket: string; prefix: string }]> = [
    ["[ok] a bucket", "alpha", { bucket: "alpha", prefix: "" }],
    ["[ok] a bucket and prefix", "alpha/sub/dir", { bucket: "alpha", prefix: "sub/dir" }],
    ["[ok] slashes around the prefix are dropped", "alpha//sub/", { bucket: "alpha", prefix: "sub" }],
    ["[ok] dots and underscores in the bucket", "my.data_set", { bucket: "my.data_set", prefix: "" }],
  ];
  for (const [name, text, want] of ok) it(name, () => expect(parseBucketRef(text)).to.deep.equal(want));

  const bad: Array<[string, string, RegExp]> = [
    ["[error] .. in the prefix", "alpha/../beta", /PREFIX.*"\." or "\.\."/],
    ["[error] an option as prefix", "alpha/-o", /must not start with "-"/],
    ["[error] an option as bucket", "-oallow_other", /BUCKET/],
    ["[error] a comma (another annotation entry)", "alpha,beta=x", /BUCKET/],
    ["[error] a colon (access suffix)", "alpha/x:rw", /PREFIX/],
    ["[error] an empty segment", "alpha/a//b", /empty path segment/],
    ["[error] whitespace", "alpha/a b", /PREFIX/],
    ["[error] too short", "ab", /BUCKET/],
    ["[error] very long", `alpha/${"a/".repeat(1000)}`, /longer than/],
  ];
  for (const [name, text, re] of bad)
    it(name, () => expect(usageError(() => parseBucketRef(text))).to.match(re));
});

describe("buildMountRequest and buildUnmountRequest", () => {
  it("sends replace: true only with --replace", () => {
    const base = { target: "team-a/trainer", source: "bucket-a", name: "extra" };
    expect(buildMountRequest({ ...base, replace: true })).to.deep.include({ replace: true, name: "extra" });
    expect(buildMountRequest(base)).not.to.have.property("replace");
    expect(buildMountRequest({ ...base, replace: false })).not.to.have.property("replace");
  });

  it("[ok] builds the request the console validates", () => {
    expect(
      buildMountRequest({
        target: "team-a/pod-a",
        source: "alpha/sub",
        name: "data",
        readOnly: true,
        timeout: "30",
      }),
    ).to.deep.equal({
      op: "mount",
      namespace: "team-a",
      pod: "pod-a",
      bucket: "alpha",
      prefix: "sub",
      name: "data",
      readOnly: true,
      timeoutSeconds: 30,
    });
    expect(buildMountRequest({ target: "a/p", source: "alpha" })).to.deep.equal({
      op: "mount",
      namespace: "a",
      pod: "p",
      bucket: "alpha",
    });
    expect(buildUnmountRequest({ target: "a/p", name: "data" })).to.deep.equal({
      op: "unmount",
      namespace: "a",
      pod: "p",
      name: "data",
    });
  });
  it("[error] a bucket that is no mount name needs --name", () => {
    expect(usageError(() => buildMountRequest({ target: "a/p", source: "my.data" }))).to.match(/--name/);
  });
  it("[error] a bad mount name", () => {
    expect(usageError(() => buildMountRequest({ target: "a/p", source: "alpha", name: "../x" }))).to.match(
      /mount name/,
    );
    expect(usageError(() => buildUnmountRequest({ target: "a/p", name: "Data" }))).to.match(/mount name/);
  });
  it("[error] timeouts outside 1..3600 or not whole", () => {
    for (const t of ["0", "3601", "1.5", "-1", "1e3", "", " 5"])
      expect(
        usageError(() => parseTimeoutSeconds(t)),
        t,
      ).to.match(/--timeout/);
  });
});

describe("parseAgentUrl", () => {
  const ok: Array<[string, string, string]> = [
    ["[ok] host and port", "wss://agent.example:9443", "wss://agent.example:9443/console"],
    ["[ok] the default port", "wss://10.0.0.5", "wss://10.0.0.5:9443/console"],
    ["[ok] the console path", "wss://h:1/console", "wss://h:1/console"],
    ["[ok] IPv6", "wss://[::1]:8443", "wss://[::1]:8443/console"],
  ];
  for (const [name, text, want] of ok) it(name, () => expect(parseAgentUrl(text)).to.equal(want));
  const bad: Array<[string, string, RegExp]> = [
    ["[error] plain ws", "ws://h:1", /wss:\/\//],
    ["[error] https", "https://h:1", /wss:\/\//],
    ["[error] not a URL", "h:1", /wss:\/\/|not a URL/],
    ["[error] credentials in the URL", "wss://u:p@h:1", /credentials/],
    ["[error] another path", "wss://h:1/admin", /console is at/],
    ["[error] a query", "wss://h:1/?x=1", /query/],
  ];
  for (const [name, text, re] of bad)
    it(name, () => expect(usageError(() => parseAgentUrl(text))).to.match(re));
});

describe("splitWords", () => {
  it("[ok] splits on whitespace and groups quotes, nothing else", () => {
    expect(splitWords("  mount  a/p 'alpha/x' \"--name\"\tn ")).to.deep.equal([
      "mount",
      "a/p",
      "alpha/x",
      "--name",
      "n",
    ]);
    expect(splitWords("status $(id) `x`")).to.deep.equal(["status", "$(id)", "`x`"]);
    expect(splitWords("a ''")).to.deep.equal(["a", ""]);
  });
  it("[error] an unterminated quote", () => {
    expect(usageError(() => splitWords("status 'a/b"))).to.match(/unterminated/);
  });
});

describe("exitCodeOf", () => {
  const rows: Array<[string, unknown, number]> = [
    ["usage", new UsageError("x"), 2],
    ["console BadRequest", new ConsoleError("BadRequest", "x"), 2],
    ["console Unauthenticated", new ConsoleError("Unauthenticated", "x"), 3],
    ["console Forbidden", new ConsoleError("Forbidden", "x"), 3],
    ["console NotFound", new ConsoleError("NotFound", "x"), 1],
    ["console WrongNode", new ConsoleError("WrongNode", "x"), 1],
    ["console Timeout", new ConsoleError("Timeout", "x"), 5],
    ["console Unavailable", new ConsoleError("Unavailable", "x"), 4],
    ["mount failed", new AppError("MountFailed", "x"), 1],
    ["unreachable", new AppError("Unavailable", "x"), 4],
    ["client timeout", new AppError("Timeout", "x"), 5],
    ["anything else", new Error("x"), 1],
  ];
  for (const [name, e, code] of rows) it(`${name} → ${code}`, () => expect(exitCodeOf(e)).to.equal(code));
});

describe("dvctl refuses hostile input before any network", () => {
  let server: Server;
  let port = 0;
  let connections = 0;
  before(async () => {
    server = createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    port = (server.address() as { port: number }).port;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  const run = async (args: string[]): Promise<{ code: number; stderr: string }> => {
    const stderr = new PassThrough();
    let err = "";
    stderr.on("data", (c: Buffer) => (err += c.toString()));
    const code = await runCli(["--agent", `wss://127.0.0.1:${port}`, "--token", "t", ...args], {
      stdin: new PassThrough(),
      stdout: new PassThrough(),
      stderr,
      env: {},
      onInterrupt: () => () => undefined,
    });
    return { code, stderr: err };
  };

  const cases: string[][] = [
    ["status", "../etc"],
    ["status", "ns/pod/../../x"],
    ["status", "ns/pod\u001b[2J"],
    ["mount", "a/p", "alpha/../beta"],
    ["mount", "a/p", "alpha", "--name", "a,b=c"],
    ["mount", "a/p", "alpha", "--timeout", "99999"],
    ["mount", "a/p", "my.bucket"],
    ["umount", "a/p", "../x"],
    ["ls", "-n", "Team A"],
    ["watch", "pod-without-namespace"],
    ["mount", "a/p"],
    ["status"],
    ["frobnicate"],
    ["status", "a/p", "extra"],
    ["--output", "yaml", "ls"],
  ];
  for (const args of cases)
    it(`exits 2 for: ${JSON.stringify(args)}`, async () => {
      const r = await run(args);
      expect(r.code, r.stderr).to.equal(EXIT.usage);
      expect(r.stderr).to.not.include("\u001b");
      expect(connections).to.equal(0);
    });

  it("and a bad --agent URL or a token with a space exits 2 too", async () => {
    for (const extra of [
      ["--agent", "ws://127.0.0.1:1"],
      ["--token", "two words"],
    ]) {
      const code = await runCli([...extra, "ls"], {
        stdin: new PassThrough(),
        stdout: new PassThrough(),
        stderr: new PassThrough(),
        env: {},
        onInterrupt: () => () => undefined,
      });
      expect(code, extra.join(" ")).to.equal(EXIT.usage);
    }
    expect(connections).to.equal(0);
  });
});
