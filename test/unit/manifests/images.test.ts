import { expect } from "chai";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MANIFESTS_DIR, REPO_ROOT, podSpecOf, render } from "../../support/manifests.js";

const SCRIPT = join(REPO_ROOT, "scripts/images.sh");
const OVERLAY = join(MANIFESTS_DIR, "overlays/example-registry");
const VERSION = (JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { version: string })
  .version;

/** Every container image (init containers too) of the workloads in `dir`. */
function imagesOf(dir: string): string[] {
  return render(dir)
    .objects.filter((o) => ["Deployment", "DaemonSet", "StatefulSet", "Job"].includes(o.kind))
    .flatMap((o) => {
      const spec = podSpecOf(o);
      return [...(spec.initContainers ?? []), ...spec.containers].map((c) => c.image!);
    });
}

function runScript(args: readonly string[], env: NodeJS.ProcessEnv = process.env) {
  return spawnSync("bash", [SCRIPT, ...args], { encoding: "utf8", env, timeout: 30_000 });
}

describe("manifests/overlays/example-registry/", function () {
  this.timeout(60_000);
  it("renders, and rewrites every container image to registry.example.com at the package version", () => {
    const images = imagesOf(OVERLAY);
    expect(images.length).to.be.at.least(4);
    for (const image of images)
      expect(image).to.match(
        new RegExp(
          `^registry\\.example\\.com/dynamic-volumes/(webhook|agent):${VERSION.replace(/\./g, "\\.")}$`,
        ),
      );
    // Both images are used, and the base still names ghcr.io: the overlay changes nothing in place.
    expect(new Set(images.map((i) => i.split(":")[0]!.split("/").at(-1)))).to.deep.equal(
      new Set(["webhook", "agent"]),
    );
    for (const image of imagesOf(MANIFESTS_DIR)) expect(image).to.match(/^ghcr\.io\/dynamic-volumes\//);
  });
});

describe("scripts/images.sh", function () {
  this.timeout(60_000);

  it("--dry-run prints a build of both Dockerfiles for the registry, at package.json's version", () => {
    const r = runScript(["--registry", "registry.example.com/dv", "--dry-run"]);
    expect(r.status, r.stderr).to.equal(0);
    const builds = r.stdout.split("\n").filter((l) => /^docker (buildx )?build /.test(l));
    expect(builds).to.have.length(2);
    expect(builds[0])
      .to.include("Dockerfile.webhook")
      .and.include(`registry.example.com/dv/webhook:${VERSION}`);
    expect(builds[1]).to.include("Dockerfile.agent").and.include(`registry.example.com/dv/agent:${VERSION}`);
    // The overlay block to use: both images, the registry, the version.
    expect(r.stdout).to.include("images:");
    expect(r.stdout).to.include("newName: registry.example.com/dv/webhook");
    expect(r.stdout).to.include("newName: registry.example.com/dv/agent");
    expect(r.stdout).to.include(`newTag: "${VERSION}"`);
  });

  it("--dry-run honours --tag, --push and --platform", () => {
    const r = runScript([
      "--registry=r.example/x/",
      "--tag",
      "1.2.3-rc1",
      "--push",
      "--platform",
      "linux/amd64",
      "--dry-run",
    ]);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.include("r.example/x/agent:1.2.3-rc1").and.not.include(VERSION);
    expect(r.stdout).to.include("--platform linux/amd64");
    expect(r.stdout).to.match(/--push|docker push/);
  });

  it("fails with one clear line when docker is missing from PATH", () => {
    // A PATH with bash and the tools the script uses, and no docker.
    const bin = mkdtempSync(join(tmpdir(), "dv-images-"));
    try {
      for (const tool of ["bash", "sed", "head", "dirname", "cat"]) {
        const which = spawnSync("bash", ["-c", `command -v ${tool}`], { encoding: "utf8" });
        symlinkSync(which.stdout.trim(), join(bin, tool));
      }
      const r = runScript(["--registry", "r.example/x"], { PATH: bin });
      expect(r.status).to.not.equal(0);
      expect(r.stdout).to.equal("");
      const lines = r.stderr.trim().split("\n");
      expect(lines).to.have.length(1);
      expect(lines[0]).to.match(/^images\.sh: docker not found in PATH/);
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });

  it("fails with one clear line without --registry", () => {
    const r = runScript(["--dry-run"]);
    expect(r.status).to.not.equal(0);
    expect(r.stderr.trim().split("\n")).to.have.length(1);
    expect(r.stderr).to.include("--registry is required");
  });
});
