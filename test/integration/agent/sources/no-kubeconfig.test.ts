import { expect } from "chai";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token";

describe("agent without a kubeconfig (process)", function () {
  this.timeout(30_000);
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "dv-nokube-"));
    writeFileSync(join(dir, "key"), "no-kubeconfig-test-signing-key-0123\n", { mode: 0o600 });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("[error] exits 2 with ONE line naming local mode's flags and the kubeconfig, not http://localhost:8080", function () {
    if (existsSync(SERVICE_ACCOUNT_TOKEN)) this.skip();
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: dir };
    delete env.KUBECONFIG;
    const r = spawnSync(
      process.execPath,
      [
        "--import",
        "tsx",
        "agent/main.ts",
        "--node-name",
        "node-1",
        "--root",
        join(dir, "root"),
        "--signing-key-file",
        join(dir, "key"),
      ],
      { env, encoding: "utf8", timeout: 20_000 },
    );
    expect(r.status, r.stderr).to.equal(2);
    const lines = r.stderr.split("\n").filter((l) => l !== "");
    expect(lines, r.stderr).to.have.length(1);
    expect(lines[0]).to.match(
      /^dynamic-volumes agent: .*pass --pods-dir and --secrets-dir for local mode, or a kubeconfig \/ in-cluster service account$/,
    );
    expect(r.stderr).not.to.match(/localhost:8080|HTTP protocol is not allowed/);
  });
});
