import { expect } from "chai";
import { credentialsFromSecret } from "../../../../agent/reconcile/credentials.js";

const good = {
  endpoint: "http://127.0.0.1:9000",
  region: "us-east-1",
  accessKeyID: "AKIA",
  secretAccessKey: "s3cr3t-value",
};

describe("credentialsFromSecret", () => {
  it("[ok] returns trimmed credentials", () => {
    expect(credentialsFromSecret({ ...good, accessKeyID: " AKIA\n" }, "ns/s")).to.deep.equal(good);
  });

  const bad: Array<[string, Record<string, string> | undefined, RegExp]> = [
    ["missing Secret", undefined, /not found; create it/],
    [
      "missing secretAccessKey",
      { endpoint: good.endpoint, accessKeyID: "a" },
      /lacks the key secretAccessKey/,
    ],
    ["missing two keys", { endpoint: good.endpoint }, /lacks the keys accessKeyID, secretAccessKey/],
    ["endpoint not a URL", { ...good, endpoint: "not a url" }, /endpoint/],
    [
      "endpoint with credentials",
      { ...good, endpoint: "http://user:pw@host" },
      /must not contain credentials/,
    ],
  ];
  for (const [label, data, message] of bad)
    it(`[error] ${label}`, () => {
      let err: Error | undefined;
      try {
        credentialsFromSecret(data, "team-a/creds");
      } catch (e) {
        err = e as Error;
      }
      expect(err?.message).to.match(message);
      expect(err?.message).to.not.include("s3cr3t-value");
    });
});
