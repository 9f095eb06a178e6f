import { expect } from "chai";
import { rmSync } from "node:fs";
import {
  AuthenticatedUserAuthorizer,
  StaticTokenAuthenticator,
  parseTokenAuthFile,
} from "../../../../agent/console/auth.js";
import { ConsoleClient, UpgradeRefused } from "../../../support/console-client.js";
import { ConsoleStack } from "../../../support/console-stack.js";
import { makeTestPki, type TestPki } from "../../../support/tls.js";

const TOKENS = "alice-token,alice,1\n";

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function refused(p: Promise<unknown>): Promise<UpgradeRefused> {
  try {
    await p;
  } catch (e) {
    if (e instanceof UpgradeRefused) return e;
    throw e;
  }
  throw new Error("the upgrade was accepted");
}

describe("agent console limits on connections and heartbeats", function () {
  let pki: TestPki;
  let stack: ConsoleStack;
  const clients: ConsoleClient[] = [];

  before(async () => {
    pki = makeTestPki();
    stack = new ConsoleStack({
      pki,
      authenticator: new StaticTokenAuthenticator(parseTokenAuthFile(TOKENS).tokens),
      authorizer: new AuthenticatedUserAuthorizer(),
      limits: { maxConnections: 2, pingIntervalMs: 150 },
    });
    await stack.start();
  });

  after(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
    await stack.close();
    rmSync(pki.dir, { recursive: true, force: true });
  });

  it("refuses connections beyond the cap with 503, and accepts again once one closes", async () => {
    clients.push(await ConsoleClient.as(stack.port, stack.ca, "alice-token"));
    clients.push(await ConsoleClient.as(stack.port, stack.ca, "alice-token"));
    const e = await refused(ConsoleClient.as(stack.port, stack.ca, "alice-token"));
    expect(e.status).to.equal(503);
    await clients.pop()!.close();
    await until("closed on the server", () => stack.console!.connections === 1);
    clients.push(await ConsoleClient.as(stack.port, stack.ca, "alice-token"));
  });

  it("terminates a peer that stops answering pings", async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
    const c = await ConsoleClient.as(stack.port, stack.ca, "alice-token");
    clients.push(c);
    c.ws.pause();
    await until("terminated", () => stack.console!.connections === 0, 3000);
    c.ws.resume();
    expect((await c.closed).code).to.equal(1006);
  });
});
