import { expect } from "chai";
import { Writable } from "node:stream";
import { createLogger } from "../../../shared/logger.js";

function capture(): { stream: Writable; lines: () => Array<Record<string, unknown>>; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString("utf8"));
      cb();
    },
  });
  return {
    stream,
    text: () => chunks.join(""),
    lines: () =>
      chunks
        .join("")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

describe("createLogger", () => {
  it("writes JSON lines with the level as a word, the component and the object fields", () => {
    const out = capture();
    const log = createLogger({ name: "test" }, out.stream).child({ component: "reconciler" });
    log.info({ pod: "team-a/trainer", name: "data", ms: 42 }, "mounted");
    expect(out.lines()[0]).to.include({
      level: "info",
      component: "reconciler",
      pod: "team-a/trainer",
      name: "data",
      ms: 42,
      msg: "mounted",
    });
  });

  it("redacts credentials wherever they appear in a logged object", () => {
    const out = capture();
    const log = createLogger({ name: "test", level: "debug" }, out.stream);
    const secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";
    log.info({ secretAccessKey: secret, accessKeyID: "AKIAEXAMPLE1234" }, "top level");
    log.info({ credentials: { secretAccessKey: secret } }, "nested");
    log.info({ req: { headers: { authorization: `Bearer ${secret}` } } }, "headers");
    log.info({ token: secret, user: "alice" }, "token");
    log.info({ env: { AWS_SECRET_ACCESS_KEY: secret } }, "env");
    log.info(
      { secret: { data: { secretAccessKey: Buffer.from(secret).toString("base64") } } },
      "secret object",
    );
    const text = out.text();
    expect(text).to.not.include(secret);
    expect(text).to.not.include("AKIAEXAMPLE1234");
    expect(text).to.not.include(Buffer.from(secret).toString("base64"));
    expect(text).to.include("[REDACTED]");
    expect(text).to.include("alice");
  });

  it("honours the level", () => {
    const out = capture();
    const log = createLogger({ name: "test", level: "warn" }, out.stream);
    log.info("hidden");
    log.warn("shown");
    expect(out.lines().map((l) => l.msg)).to.deep.equal(["shown"]);
  });
});
