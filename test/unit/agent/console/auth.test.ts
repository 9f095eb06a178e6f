import { expect } from "chai";
import {
  AuthenticatedUserAuthorizer,
  StaticTokenAuthenticator,
  TtlCache,
  isAnonymous,
  parseTokenAuthFile,
  type StaticToken,
} from "../../../../agent/console/auth.js";
import { ConfigError } from "../../../../shared/errors.js";

describe("parseTokenAuthFile", () => {
  const ok: Array<[string, string, StaticToken[]]> = [
    [
      "token,user,uid",
      "t1,alice,u-1",
      [{ token: "t1", user: { username: "alice", uid: "u-1", groups: [] } }],
    ],
    [
      "quoted groups with commas",
      't1,alice,u-1,"dev,ops"',
      [{ token: "t1", user: { username: "alice", uid: "u-1", groups: ["dev", "ops"] } }],
    ],
    [
      "one unquoted group",
      "t1,alice,u-1,dev",
      [{ token: "t1", user: { username: "alice", uid: "u-1", groups: ["dev"] } }],
    ],
    ["an empty uid", "t1,alice,", [{ token: "t1", user: { username: "alice", groups: [] } }]],
    [
      "blank lines, comments, CRLF and a BOM",
      '\uFEFF# console users\r\n\r\nt1,alice,1\r\n  # indented comment\nt2,"bob ""the builder""",2,""\n',
      [
        { token: "t1", user: { username: "alice", uid: "1", groups: [] } },
        { token: "t2", user: { username: 'bob "the builder"', uid: "2", groups: [] } },
      ],
    ],
    [
      "spaces around fields and groups",
      ' t1 , alice , 1 ," dev , ops "',
      [{ token: "t1", user: { username: "alice", uid: "1", groups: ["dev", "ops"] } }],
    ],
  ];
  for (const [what, text, tokens] of ok)
    it(`[ok] ${what}`, () => {
      expect(parseTokenAuthFile(text).tokens).to.deep.equal(tokens);
    });

  it("[ok] a repeated token: the later line wins, with a warning that names the line only", () => {
    const r = parseTokenAuthFile("secret-1,alice,1\nsecret-1,bob,2\n");
    expect(r.tokens).to.deep.equal([{ token: "secret-1", user: { username: "bob", uid: "2", groups: [] } }]);
    expect(r.warnings).to.have.length(1);
    expect(r.warnings[0])
      .to.match(/line 2/)
      .and.not.include("secret-1");
  });

  const bad: Array<[string, string, RegExp]> = [
    ["two fields", "t1,alice", /line 1: expected token,user,uid/],
    ["an empty token", ",alice,1", /line 1: the token is empty/],
    ["an empty user", "t1,,1", /the user name is empty/],
    ["an unclosed quote", 't1,alice,1,"dev', /line 1: a quoted field is not closed/],
    ["text after a quote", 't1,"alice"x,1', /text after a closing quote/],
    ["a quote in an unquoted field", 't1,al"ice,1', /a quote inside an unquoted field/],
    ["the anonymous user", "t1,system:anonymous,1", /anonymous/],
    ["the unauthenticated group", 't1,eve,1,"system:unauthenticated"', /anonymous/],
  ];
  for (const [what, text, message] of bad)
    it(`[error] ${what}`, () => {
      expect(() => parseTokenAuthFile(`# header\n${text}`.replace(/^# header\n/, ""), "tokens.csv")).to.throw(
        ConfigError,
        message,
      );
    });

  it("[error] never puts the token in the message", () => {
    expect(() => parseTokenAuthFile('super-secret-token,alice,1,"x'))
      .to.throw(ConfigError)
      .that.satisfies((e: Error) => !e.message.includes("super-secret-token"));
  });
});

describe("StaticTokenAuthenticator and AuthenticatedUserAuthorizer", () => {
  const { tokens } = parseTokenAuthFile('t1,alice,1,"dev"');
  const authn = new StaticTokenAuthenticator(tokens);

  it("authenticates a listed token and refuses others, including the empty one", async () => {
    expect(await authn.authenticate("t1")).to.deep.equal({ username: "alice", uid: "1", groups: ["dev"] });
    expect(await authn.authenticate("t2")).to.equal(undefined);
    expect(await authn.authenticate("")).to.equal(undefined);
  });

  it("lets a listed user do everything and refuses anonymous", async () => {
    const authz = new AuthenticatedUserAuthorizer();
    expect((await authz.authorize({ username: "alice", groups: [] })).allowed).to.equal(true);
    expect((await authz.authorize({ username: "system:anonymous", groups: [] })).allowed).to.equal(false);
    expect(isAnonymous({ username: "x", groups: ["system:unauthenticated"] })).to.equal(true);
  });
});

describe("TtlCache", () => {
  it("reuses an answer until it expires, merges concurrent loads, and keeps at most maxEntries", async () => {
    let now = 0;
    let loads = 0;
    const cache = new TtlCache<number>(1000, 2, () => now);
    const load = async (): Promise<number> => ++loads;
    expect(await Promise.all([cache.get("a", load), cache.get("a", load)])).to.deep.equal([1, 1]);
    now = 999;
    expect(await cache.get("a", load)).to.equal(1);
    now = 1000;
    expect(await cache.get("a", load)).to.equal(2);
    await cache.get("b", load);
    await cache.get("c", load);
    expect(cache.size).to.equal(2);
  });

  it("does not cache a failure", async () => {
    const cache = new TtlCache<number>(1000, 10);
    let n = 0;
    const flaky = async (): Promise<number> => {
      if (n++ === 0) throw new Error("API down");
      return 7;
    };
    await cache.get("k", flaky).then(
      () => expect.fail("should have thrown"),
      (e: Error) => expect(e.message).to.equal("API down"),
    );
    expect(await cache.get("k", flaky)).to.equal(7);
  });
});
