import { expect } from "chai";
import {
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PodEvent } from "../../../../agent/sources/pod-source.js";
import {
  LocalPodSource,
  decodeSecret,
  isPodFile,
  missingSecret,
  statusFileName,
} from "../../../../agent/sources/local.js";
import { AppError, publicMessage } from "../../../../shared/errors.js";
import { createLogger } from "../../../../shared/logger.js";

const log = createLogger({ name: "test", level: "silent" });

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("LocalPodSource", () => {
  let dir: string;
  let src: LocalPodSource;
  let events: PodEvent[];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "dv-local-"));
    mkdirSync(join(dir, "pods"));
    mkdirSync(join(dir, "secrets", "team-a"), { recursive: true });
    src = new LocalPodSource({
      podsDir: join(dir, "pods"),
      secretsDir: join(dir, "secrets"),
      log,
      rescanMs: 50,
    });
    events = [];
  });
  afterEach(async () => {
    await src.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const podYaml = (buckets: string): string =>
    `apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: team-a\n  annotations:\n    dynamic-volumes/buckets: "${buckets}"\nspec:\n  containers: [{name: main, image: busybox}]\n`;

  it("delivers existing YAML and JSON pods before start() resolves, filling in uid and creation time", async () => {
    writeFileSync(join(dir, "pods", "web.yaml"), podYaml("a"));
    writeFileSync(
      join(dir, "pods", "db.json"),
      JSON.stringify({ metadata: { name: "db", namespace: "team-b" } }),
    );
    writeFileSync(join(dir, "pods", "web.status.json"), "{}");
    writeFileSync(join(dir, "pods", "events.jsonl"), "");
    await src.start((e) => events.push(e));
    expect(
      events.map((e) => `${e.type} ${e.pod.metadata?.namespace}/${e.pod.metadata?.name}`).sort(),
    ).to.deep.equal(["upsert team-a/web", "upsert team-b/db"]);
    expect(events[0]!.pod.metadata?.uid).to.match(/^local-[0-9a-f]{32}$/);
    expect(events[0]!.pod.metadata?.creationTimestamp).to.be.a("string");
  });

  it("sees an edit made by atomic rename, and a removal as a delete", async () => {
    await src.start((e) => events.push(e));
    writeFileSync(join(dir, "pods", ".web.tmp"), podYaml("a"));
    renameSync(join(dir, "pods", ".web.tmp"), join(dir, "pods", "web.yaml"));
    await until(() => events.length === 1);
    writeFileSync(join(dir, "pods", ".web.tmp"), podYaml("b"));
    renameSync(join(dir, "pods", ".web.tmp"), join(dir, "pods", "web.yaml"));
    await until(() => events.length === 2);
    expect(events[1]!.pod.metadata?.annotations?.["dynamic-volumes/buckets"]).to.equal("b");
    unlinkSync(join(dir, "pods", "web.yaml"));
    await until(() => events.length === 3);
    expect(events[2]!.type).to.equal("delete");
  });

  it("acts on a change notification at once, reading the named file: no rescan needed", async () => {
    await src.stop();
    // One scan a minute: anything seen below came from the notifications.
    src = new LocalPodSource({
      podsDir: join(dir, "pods"),
      secretsDir: join(dir, "secrets"),
      log,
      rescanMs: 60_000,
    });
    await src.start((e) => events.push(e));
    writeFileSync(join(dir, "pods", ".web.tmp"), podYaml("a"));
    renameSync(join(dir, "pods", ".web.tmp"), join(dir, "pods", "web.yaml"));
    await until(() => events.length === 1);
    writeFileSync(
      join(dir, "pods", "db.json"),
      JSON.stringify({ metadata: { name: "db", namespace: "team-b" } }),
    );
    await until(() => events.length === 2);
    expect(events.map((e) => `${e.type} ${e.pod.metadata?.name}`)).to.deep.equal(["upsert web", "upsert db"]);
    // A broken rewrite keeps the last good state; removing the file is a delete.
    writeFileSync(join(dir, "pods", "web.yaml"), "{ not yaml: [");
    unlinkSync(join(dir, "pods", "db.json"));
    await until(() => events.length === 3);
    expect(`${events[2]!.type} ${events[2]!.pod.metadata?.name}`).to.equal("delete db");
    expect(src.getPod("team-a", "web")?.metadata?.annotations?.["dynamic-volumes/buckets"]).to.equal("a");
    unlinkSync(join(dir, "pods", "web.yaml"));
    await until(() => events.length === 4);
    expect(`${events[3]!.type} ${events[3]!.pod.metadata?.name}`).to.equal("delete web");
  });

  it("sees a same-size edit in place and ignores rewrites with the same content and its own status files", async () => {
    const file = join(dir, "pods", "web.yaml");
    writeFileSync(file, podYaml("aa"));
    await src.start((e) => events.push(e));
    expect(events).to.have.length(1);
    // Same content again, status and event files churning: several scans, nothing emitted.
    writeFileSync(file, podYaml("aa"));
    for (let i = 0; i < 5; i++) {
      writeFileSync(join(dir, "pods", "web.status.json"), `{"n":${i}}`);
      writeFileSync(join(dir, "pods", "events.jsonl"), `{"n":${i}}\n`, { flag: "a" });
      await new Promise((r) => setTimeout(r, 60));
    }
    expect(events).to.have.length(1);
    // Same size, different content, same inode: still seen.
    writeFileSync(file, podYaml("bb"));
    await until(() => events.length === 2);
    expect(events[1]!.pod.metadata?.annotations?.["dynamic-volumes/buckets"]).to.equal("bb");
  });

  it("keeps the last good state of a file that becomes unreadable, instead of deleting the pod", async () => {
    writeFileSync(join(dir, "pods", "web.yaml"), podYaml("a"));
    await src.start((e) => events.push(e));
    writeFileSync(join(dir, "pods", "web.yaml"), "metadata: [unclosed");
    await new Promise((r) => setTimeout(r, 200));
    expect(events.map((e) => e.type)).to.deep.equal(["upsert"]);
    expect(src.getPod("team-a", "web")?.metadata?.annotations?.["dynamic-volumes/buckets"]).to.equal("a");
  });

  it("writes status beside the pod and appends events as JSON lines", async () => {
    writeFileSync(join(dir, "pods", "web.yaml"), podYaml("a"));
    await src.start((e) => events.push(e));
    const ref = { namespace: "team-a", name: "web", uid: "u" };
    await src.writeStatus(ref, '{"a":{"state":"mounted"}}');
    await src.recordEvent(ref, { type: "Normal", reason: "Mounted", message: "m1" });
    await src.recordEvent(ref, { type: "Warning", reason: "MountFailed", message: "m2" });
    expect(readFileSync(join(dir, "pods", "web.status.json"), "utf8").trim()).to.equal(
      '{"a":{"state":"mounted"}}',
    );
    const lines = readFileSync(join(dir, "pods", "events.jsonl"), "utf8")
      .trim()
      .split("\n");
    expect(lines.map((l) => (JSON.parse(l) as { reason: string }).reason)).to.deep.equal([
      "Mounted",
      "MountFailed",
    ]);
  });

  it("edits only the buckets annotation, serializing concurrent edits so none is lost", async () => {
    writeFileSync(join(dir, "pods", "web.yaml"), podYaml("a"));
    await src.start((e) => events.push(e));
    await Promise.all(
      ["b", "c", "d", "e"].map((n) =>
        src.updateBuckets("team-a", "web", (cur) => `${cur ? `${cur},` : ""}${n}`),
      ),
    );
    const text = readFileSync(join(dir, "pods", "web.yaml"), "utf8");
    expect(text).to.match(/dynamic-volumes\/buckets: a,b,c,d,e/);
    expect(text).to.match(/image: busybox/);
    await src.updateBuckets("team-a", "web", () => "");
    expect(readFileSync(join(dir, "pods", "web.yaml"), "utf8")).to.not.include("dynamic-volumes/buckets");
  });

  it("does not bring back a pod file deleted while its buckets are being edited", async () => {
    const file = join(dir, "pods", "web.yaml");
    writeFileSync(file, podYaml("a"));
    await src.start((e) => events.push(e));
    let error: unknown;
    try {
      await src.updateBuckets("team-a", "web", (cur) => {
        unlinkSync(file);
        return `${cur},b`;
      });
    } catch (e) {
      error = e;
    }
    expect((error as { code?: string } | undefined)?.code).to.equal("NotFound");
    expect(readdirSync(join(dir, "pods"))).to.deep.equal([]);
  });

  it("reads Secrets from <namespace>/<name>.json and refuses path tricks", async () => {
    writeFileSync(
      join(dir, "secrets", "team-a", "creds.json"),
      JSON.stringify({
        data: { accessKeyID: Buffer.from("AK").toString("base64") },
        stringData: { region: "r" },
      }),
    );
    expect(await src.getSecret("team-a", "creds")).to.deep.equal({ accessKeyID: "AK", region: "r" });
    let err: Error | undefined;
    await src.getSecret("team-a", "../../etc/passwd").catch((e: Error) => (err = e));
    expect(err?.message).to.match(/not a valid name/);
  });
});

describe("LocalPodSource: messages for local mode", () => {
  let dir: string;
  let src: LocalPodSource;
  let lines: Array<{ msg: string; file?: string; level: string }>;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "dv-local-msg-"));
    mkdirSync(join(dir, "pods"));
    mkdirSync(join(dir, "secrets", "team-a"), { recursive: true });
    lines = [];
    const capture = {
      write: (line: string): void => {
        lines.push(JSON.parse(line) as { msg: string; level: string });
      },
    };
    src = new LocalPodSource({
      podsDir: join(dir, "pods"),
      secretsDir: join(dir, "secrets"),
      log: createLogger({ name: "test", level: "debug" }, capture),
      rescanMs: 20,
    });
  });
  afterEach(async () => {
    await src.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const unreadable = (): Array<{ msg: string; file?: string }> =>
    lines.filter((l) => /pod file unreadable/.test(l.msg));

  it("[error] a missing Secret names the file it looked for and what to write there, as an AppError", async () => {
    let err: unknown;
    await src.getSecret("team-a", "dynamic-volumes-credentials").catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(AppError);
    expect((err as AppError).code).to.equal("NotFound");
    const path = join(dir, "secrets", "team-a", "dynamic-volumes-credentials.json");
    expect((err as AppError).message).to.equal(
      `no Secret team-a/dynamic-volumes-credentials: ${path} does not exist; write {"stringData": {endpoint, region, accessKeyID, secretAccessKey}} there (mode 0600)`,
    );
    expect((err as AppError).message).not.to.match(/kubectl|cluster|namespace's/);
    // A namespace directory that does not exist either: the same message, naming the full path.
    await src.getSecret("team-z", "creds").catch((e: unknown) => (err = e));
    expect((err as AppError).message).to.include(join(dir, "secrets", "team-z", "creds.json"));
  });

  it("[error] a missing Secret becomes the mount's status message, word for word", () => {
    const e = missingSecret("team-a", "s", "/x/secrets/team-a/s.json");
    // What the reconciler writes for an AppError is its message.
    expect(publicMessage(e)).to.equal(e.message);
  });

  it("[error] an unknown pod is named with the pods directory, not a node or a cluster", async () => {
    await src.start(() => undefined);
    const e = src.missingPod("team-a", "x");
    expect(e).to.be.instanceOf(AppError);
    expect(e.code).to.equal("NotFound");
    expect(e.message).to.match(new RegExp(`^no pod team-a/x in ${join(dir, "pods")}; `));
    expect(e.message).not.to.match(/kubectl|WrongNode|node/);
    let err: unknown;
    await src.updateBuckets("team-a", "x", () => "a").catch((x: unknown) => (err = x));
    expect((err as AppError).message).to.match(/^no pod team-a\/x in /);
    // A file that does not parse may be the pod meant: it is named.
    writeFileSync(join(dir, "pods", "x.yaml"), "metadata: [unclosed");
    await until(() => unreadable().length === 1);
    expect(src.missingPod("team-a", "x").message).to.include(
      `does not parse: ${join(dir, "pods", "x.yaml")}`,
    );
  });

  it("logs an unreadable pod file once, not on every rescan, and again when it changes", async () => {
    writeFileSync(join(dir, "pods", "web.yaml"), "metadata: [unclosed");
    await src.start(() => undefined);
    expect(unreadable()).to.have.length(1);
    expect(unreadable()[0]!.file).to.equal(join(dir, "pods", "web.yaml"));
    // Many rescans (every 20 ms) and a change notification for the same content.
    await new Promise((r) => setTimeout(r, 300));
    writeFileSync(join(dir, "pods", "web.yaml"), "metadata: [unclosed");
    await new Promise((r) => setTimeout(r, 300));
    expect(unreadable()).to.have.length(1);
    // A different broken content is news.
    writeFileSync(join(dir, "pods", "web.yaml"), "metadata: {name: [");
    await until(() => unreadable().length === 2);
    await new Promise((r) => setTimeout(r, 200));
    expect(unreadable()).to.have.length(2);
    // Fixed, then broken again as before: logged again.
    writeFileSync(join(dir, "pods", "web.yaml"), "metadata: {name: web, namespace: team-a}\n");
    await until(() => src.getPod("team-a", "web") !== undefined);
    writeFileSync(join(dir, "pods", "web.yaml"), "metadata: [unclosed");
    await until(() => unreadable().length === 3);
    await new Promise((r) => setTimeout(r, 200));
    expect(unreadable()).to.have.length(3);
    expect(src.getPod("team-a", "web")).not.to.equal(undefined);
  });

  it("logs an unreadable file again after it was removed and written anew", async () => {
    writeFileSync(join(dir, "pods", "web.json"), "{");
    await src.start(() => undefined);
    expect(unreadable()).to.have.length(1);
    unlinkSync(join(dir, "pods", "web.json"));
    await new Promise((r) => setTimeout(r, 100));
    writeFileSync(join(dir, "pods", "web.json"), "{");
    await until(() => unreadable().length === 2);
  });
});

describe("local source helpers", () => {
  it("recognizes pod files and names status files", () => {
    expect(["a.json", "a.yaml", "a.yml"].every(isPodFile)).to.equal(true);
    expect(
      ["a.status.json", "events.jsonl", ".a.json.tmp", ".hidden.json", "a.txt"].some(isPodFile),
    ).to.equal(false);
    expect(statusFileName("trainer.yaml")).to.equal("trainer.status.json");
  });

  it("[error] rejects malformed Secret files with the key's name and no value", () => {
    expect(() => decodeSecret("{", "ns/s")).to.throw(/not valid JSON/);
    expect(() => decodeSecret(JSON.stringify({ data: { k: "not base64!" } }), "ns/s")).to.throw(
      /data.k is not base64/,
    );
    expect(() => decodeSecret(JSON.stringify({ stringData: { k: 5 } }), "ns/s")).to.throw(/stringData.k/);
  });
});
