/**
 * dvctl's client against the real console when the console briefly refuses: 429 while other
 * connections of the same address are still authenticating. The authenticator holds one token's
 * check open until the test lets it go, which is what a slow TokenReview does.
 */
import { expect } from "chai";
import { rmSync } from "node:fs";
import { WebSocket } from "ws";
import {
  AuthenticatedUserAuthorizer,
  StaticTokenAuthenticator,
  parseTokenAuthFile,
  type Authenticator,
  type UserInfo,
} from "../../../agent/console/auth.js";
import { DvctlClient } from "../../../dvctl/client.js";
import { exitCodeOf } from "../../../dvctl/errors.js";
import { CONSOLE_PATH } from "../../../shared/protocol.js";
import { ConsoleStack } from "../../support/console-stack.js";
import { makeTestPki, type TestPki } from "../../support/tls.js";
import { seriesValue } from "../../../shared/metrics.js";

const TOKENS = "alice-token,alice,1\nslow-token,slow,2\n";

/** Static tokens, except that checking `slow-token` waits until {@link release}. */
class GatedAuthenticator implements Authenticator {
  private readonly inner = new StaticTokenAuthenticator(parseTokenAuthFile(TOKENS).tokens);
  private gates: (() => void)[] = [];

  async authenticate(token: string): Promise<UserInfo | undefined> {
    if (token === "slow-token") await new Promise<void>((resolve) => this.gates.push(resolve));
    return this.inner.authenticate(token);
  }

  release(): void {
    for (const g of this.gates.splice(0)) g();
  }
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("dvctl's connection when the console is busy authenticating others", function () {
  this.timeout(30_000);
  let pki: TestPki;
  let stack: ConsoleStack;
  let auth: GatedAuthenticator;
  let slow: WebSocket | undefined;

  before(() => {
    pki = makeTestPki();
  });
  after(() => rmSync(pki.dir, { recursive: true, force: true }));

  beforeEach(async () => {
    auth = new GatedAuthenticator();
    stack = new ConsoleStack({
      pki,
      authenticator: auth,
      authorizer: new AuthenticatedUserAuthorizer(),
      limits: { maxUnauthenticatedPerAddress: 1 },
    });
    await stack.start();
    // A client of the same address whose token takes a while to check holds the only slot.
    slow = new WebSocket(`wss://127.0.0.1:${stack.port}${CONSOLE_PATH}`, {
      ca: stack.ca,
      headers: { authorization: "Bearer slow-token" },
    });
    slow.on("error", () => undefined);
    await until("the slow check in progress", () => stack.console!.unauthenticatedConnections === 1);
  });

  afterEach(async () => {
    auth.release();
    slow?.terminate();
    await stack.close();
  });

  const connect = (connectTimeoutMs: number): Promise<DvctlClient> =>
    DvctlClient.connect({
      url: `wss://127.0.0.1:${stack.port}${CONSOLE_PATH}`,
      token: "alice-token",
      ca: stack.ca,
      connectTimeoutMs,
    });

  it("tries again after the 429's Retry-After and gets in once the slot is free", async () => {
    const t0 = performance.now();
    const connecting = connect(10_000);
    await until(
      "the first refusal",
      async () =>
        (await seriesValue(stack.metrics.consoleRejections, {
          reason: "too_many_unauthenticated_per_address",
        })) === 1,
    );
    auth.release();
    const client = await connecting;
    try {
      expect(performance.now() - t0).to.be.at.least(1000);
      expect((await client.request({ op: "list" })).pods).to.be.an("array");
    } finally {
      await client.close();
    }
  });

  it("gives up within its connect timeout with the agent's answer, exit code 4", async () => {
    const e = await connect(2500).then(
      () => undefined,
      (x: unknown) => x,
    );
    expect((e as Error).message).to.match(
      /cannot take the connection now: too many console connections from 127\.0\.0\.1 are authenticating at once.*\(HTTP 429\)/,
    );
    expect(exitCodeOf(e)).to.equal(4);
    expect(
      await seriesValue(stack.metrics.consoleRejections, { reason: "too_many_unauthenticated_per_address" }),
    ).to.be.within(1, 3);
  });
});
