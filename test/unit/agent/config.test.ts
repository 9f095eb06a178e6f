import { expect } from "chai";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadAgentConfig } from "../../../agent/config.js";
import { ConfigError } from "../../../shared/errors.js";

describe("loadAgentConfig: console options", () => {
  let dir: string;
  let base: string[];
  let local: string[];

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "dv-agent-config-"));
    writeFileSync(join(dir, "key"), "agent-config-test-signing-key-0123\n");
    writeFileSync(join(dir, "tokens.csv"), 'tok-1,alice,1,"dev,ops"\ntok-1,bob,2\n');
    writeFileSync(join(dir, "empty.csv"), "# nobody\n");
    base = ["--signing-key-file", join(dir, "key"), "--node-name", "node-1"];
    local = ["--signing-key-file", join(dir, "key"), "--pods-dir", dir, "--secrets-dir", dir];
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const tls = (): string[] => [
    "--tls-cert-file",
    join(dir, "tls.crt"),
    "--tls-key-file",
    join(dir, "tls.key"),
  ];

  it("[ok] no --listen: no console", () => {
    expect(loadAgentConfig(base, {}).console).to.equal(undefined);
  });

  it("[ok] local mode with a token file and the defaults", () => {
    const c = loadAgentConfig(
      [...local, "--listen", ":8443", ...tls(), "--token-auth-file", join(dir, "tokens.csv")],
      {},
    ).console!;
    expect(c).to.deep.include({
      host: "0.0.0.0",
      port: 8443,
      maxConnections: 1024,
      maxPayloadBytes: 1048576,
      requestsPerSecond: 20,
      burst: 40,
      maxUnauthenticated: 64,
      maxUnauthenticatedPerAddress: 8,
      maxHandshakesPerAddress: 32,
      authTimeoutMs: 10_000,
    });
    expect(c.tokens).to.deep.equal([{ token: "tok-1", user: { username: "bob", uid: "2", groups: [] } }]);
    expect(c.tokenWarnings).to.have.length(1);
  });

  it("[ok] a cluster with audiences and limits from the environment", () => {
    const c = loadAgentConfig([...base, "--listen", "127.0.0.1:9443", ...tls()], {
      DV_TOKEN_AUDIENCE: "dv, other",
      DV_CONSOLE_REQUESTS_PER_SECOND: "5",
    }).console!;
    expect(c.tokens).to.equal(undefined);
    expect(c.audiences).to.deep.equal(["dv", "other"]);
    expect(c.requestsPerSecond).to.equal(5);
  });

  it("[ok] the caps and deadline of unauthenticated connections from flags and the environment", () => {
    const c = loadAgentConfig(
      [...base, "--listen", ":8443", ...tls(), "--console-max-unauthenticated", "16"],
      {
        DV_CONSOLE_MAX_UNAUTHENTICATED_PER_ADDRESS: "2",
        DV_CONSOLE_MAX_HANDSHAKES_PER_ADDRESS: "4",
        DV_CONSOLE_AUTH_TIMEOUT_SECONDS: "3",
      },
    ).console!;
    expect(c).to.deep.include({
      maxUnauthenticated: 16,
      maxUnauthenticatedPerAddress: 2,
      maxHandshakesPerAddress: 4,
      authTimeoutMs: 3000,
    });
  });

  const badEnv: Array<[string, NodeJS.ProcessEnv, RegExp]> = [
    [
      "a zero authentication deadline",
      { DV_CONSOLE_AUTH_TIMEOUT_SECONDS: "0" },
      /--console-auth-timeout-seconds \(env DV_CONSOLE_AUTH_TIMEOUT_SECONDS\): "0" must be a positive whole number/,
    ],
    [
      "a cap that is not a number",
      { DV_CONSOLE_MAX_UNAUTHENTICATED: "lots" },
      /--console-max-unauthenticated \(env DV_CONSOLE_MAX_UNAUTHENTICATED\): "lots"/,
    ],
    [
      "a per-address cap above the total",
      { DV_CONSOLE_MAX_UNAUTHENTICATED: "4", DV_CONSOLE_MAX_UNAUTHENTICATED_PER_ADDRESS: "8" },
      /env DV_CONSOLE_MAX_UNAUTHENTICATED_PER_ADDRESS\) \(8\) is more than .*env DV_CONSOLE_MAX_UNAUTHENTICATED\) \(4\)/,
    ],
    [
      "a negative handshake cap",
      { DV_CONSOLE_MAX_HANDSHAKES_PER_ADDRESS: "-1" },
      /env DV_CONSOLE_MAX_HANDSHAKES_PER_ADDRESS\): "-1" must be a positive whole number/,
    ],
  ];
  for (const [what, env, message] of badEnv)
    it(`[error] ${what}`, () => {
      expect(() => loadAgentConfig([...base, "--listen", ":8443", ...tls()], env)).to.throw(
        ConfigError,
        message,
      );
    });

  const bad: Array<[string, () => string[], RegExp]> = [
    ["--listen without TLS files", () => [...base, "--listen", ":8443"], /--tls-cert-file .* is required/],
    ["TLS files without --listen", () => [...base, ...tls()], /--listen .* is not: it has no effect/],
    [
      "local mode without a token file",
      () => [...local, "--listen", ":8443", ...tls()],
      /needs --token-auth-file/,
    ],
    [
      "a token file in a cluster",
      () => [...base, "--listen", ":8443", ...tls(), "--token-auth-file", join(dir, "tokens.csv")],
      /is for local mode/,
    ],
    [
      "a token file without tokens",
      () => [...local, "--listen", ":8443", ...tls(), "--token-auth-file", join(dir, "empty.csv")],
      /lists no tokens/,
    ],
    [
      "a missing token file",
      () => [...local, "--listen", ":8443", ...tls(), "--token-auth-file", join(dir, "nope.csv")],
      /--token-auth-file .*cannot read/,
    ],
    ["a bad listen address", () => [...base, "--listen", "8443", ...tls()], /not HOST:PORT/],
    [
      "a zero rate",
      () => [...base, "--listen", ":8443", ...tls(), "--console-requests-per-second", "0"],
      /--console-requests-per-second .* positive whole number/,
    ],
  ];
  for (const [what, argv, message] of bad)
    it(`[error] ${what}`, () => {
      expect(() => loadAgentConfig(argv(), {})).to.throw(ConfigError, message);
    });
});
