import { expect } from "chai";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
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

function runScript(args: readonly string[], env: NodeJS.ProcessEnv = process.env, script = SCRIPT) {
  return spawnSync("bash", [script, ...args], { encoding: "utf8", env, timeout: 30_000 });
}

/** The digest the fake docker resolves node:24-slim to (the index), and those of its platforms. */
const DIGEST = `sha256:${"0123456789abcdef".repeat(4)}`;
const MANIFEST = {
  schemaVersion: 2,
  mediaType: "application/vnd.oci.image.index.v1+json",
  digest: DIGEST,
  size: 1609,
  manifests: [
    { digest: `sha256:${"1".repeat(64)}`, platform: { architecture: "amd64", os: "linux" } },
    { digest: `sha256:${"2".repeat(64)}`, platform: { architecture: "arm64", os: "linux" } },
  ],
};
const PINNED = `NODE_IMAGE=node:24-slim@${DIGEST}`;
const INSPECT = ["buildx", "imagetools", "inspect", "--format", "{{json .Manifest}}", "node:24-slim"];

/**
 * A docker for the tests: each call appends its arguments to $FAKE_DOCKER_LOG (one line, tab
 * separated); `buildx version` fails when $FAKE_DOCKER_NO_BUILDX is set; the inspect of node:24-slim
 * prints $FAKE_DOCKER_MANIFEST, or fails when $FAKE_DOCKER_INSPECT_FAILS is set; anything else
 * (info, the builds) succeeds silently.
 */
const FAKE_DOCKER = `#!/usr/bin/env bash
(IFS=$'\\t'; printf '%s\\n' "$*") >> "$FAKE_DOCKER_LOG"
case "$*" in
  "buildx version")
    if [[ -n "\${FAKE_DOCKER_NO_BUILDX:-}" ]]; then echo "docker: unknown command: docker buildx" >&2; exit 1; fi ;;
  "${INSPECT.join(" ")}")
    if [[ -n "\${FAKE_DOCKER_INSPECT_FAILS:-}" ]]; then echo "ERROR: failed to do request: dial tcp: no route to host" >&2; exit 1; fi
    printf '%s\\n' "$FAKE_DOCKER_MANIFEST" ;;
  "buildx imagetools inspect "*) echo "ERROR: not found" >&2; exit 1 ;;
esac
exit 0
`;

/** A directory of symbolic links to the given tools (and no docker), for a PATH of its own. */
function toolsDir(dir: string, tools: readonly string[]): string {
  mkdirSync(dir);
  for (const tool of tools) {
    const which = spawnSync("bash", ["-c", `command -v ${tool}`], { encoding: "utf8" });
    symlinkSync(which.stdout.trim(), join(dir, tool));
  }
  return dir;
}

/** The argument lists of the builds, without "docker": `buildx build ...` with buildx. */
function buildxBuild(name: "webhook" | "agent", registry: string, buildArgs: readonly string[]): string[] {
  return [
    "buildx",
    "build",
    "--file",
    join(REPO_ROOT, `Dockerfile.${name}`),
    "--tag",
    `${registry}/${name}:${VERSION}`,
    "--load",
    ...buildArgs,
    REPO_ROOT,
  ];
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

  // A fresh directory per test: the fake docker (first on PATH) and the log of its calls.
  let dir: string;
  let log: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "dv-images-"));
    log = join(dir, "docker.log");
    mkdirSync(join(dir, "bin"));
    writeFileSync(join(dir, "bin/docker"), FAKE_DOCKER);
    chmodSync(join(dir, "bin/docker"), 0o755);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** The environment of a run with the fake docker; `extra` sets (or, undefined, removes) variables. */
  function fakeDockerEnv(extra: Readonly<Record<string, string | undefined>> = {}): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PATH: `${join(dir, "bin")}:${process.env.PATH ?? ""}`,
      FAKE_DOCKER_LOG: log,
      FAKE_DOCKER_MANIFEST: JSON.stringify(MANIFEST),
      ...extra,
    };
    delete env.NODE_IMAGE;
    for (const [k, v] of Object.entries(extra)) if (v === undefined) delete env[k];
    return env;
  }

  /** The fake docker's calls, in order, each as its argument list. */
  function dockerCalls(): string[][] {
    if (!existsSync(log)) return [];
    return readFileSync(log, "utf8")
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => l.split("\t"));
  }
  const buildCalls = () =>
    dockerCalls().filter((c) => c[0] === "build" || (c[0] === "buildx" && c[1] === "build"));
  const inspectCalls = () => dockerCalls().filter((c) => c[1] === "imagetools");

  it("--dry-run prints a build of both Dockerfiles for the registry, at package.json's version", () => {
    const r = runScript(["--registry", "registry.example.com/dv", "--dry-run"], fakeDockerEnv());
    expect(r.status, r.stderr).to.equal(0);
    const builds = r.stdout.split("\n").filter((l) => /^docker (buildx )?build /.test(l));
    expect(builds).to.have.length(2);
    expect(builds[0])
      .to.include("Dockerfile.webhook")
      .and.include(`registry.example.com/dv/webhook:${VERSION}`);
    expect(builds[1]).to.include("Dockerfile.agent").and.include(`registry.example.com/dv/agent:${VERSION}`);
    // With buildx at hand, a dry run resolves the base image too (read-only), and builds nothing.
    for (const build of builds) expect(build).to.include(` --build-arg ${PINNED} `);
    expect(dockerCalls()).to.deep.equal([["buildx", "version"], INSPECT]);
    expect(r.stderr).to.equal(`images.sh: base image node:24-slim@${DIGEST}\n`);
    // The overlay block to use: both images, the registry, the version, and the base they are built on.
    expect(r.stdout).to.include(`# base image: node:24-slim@${DIGEST}\nimages:`);
    expect(r.stdout).to.include("newName: registry.example.com/dv/webhook");
    expect(r.stdout).to.include("newName: registry.example.com/dv/agent");
    expect(r.stdout).to.include(`newTag: "${VERSION}"`);
  });

  it("--dry-run honours --tag, --push and --platform", () => {
    const r = runScript(
      ["--registry=r.example/x/", "--tag", "1.2.3-rc1", "--push", "--platform", "linux/amd64", "--dry-run"],
      fakeDockerEnv(),
    );
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.include("r.example/x/agent:1.2.3-rc1").and.not.include(VERSION);
    expect(r.stdout).to.include("--platform linux/amd64");
    expect(r.stdout).to.match(/--push|docker push/);
    const builds = r.stdout.split("\n").filter((l) => /^docker (buildx )?build /.test(l));
    expect(builds).to.have.length(2);
    for (const build of builds) expect(build).to.include(` --build-arg ${PINNED} `);
  });

  it("--dry-run without docker shows the resolution it would run, and a placeholder for the digest", () => {
    const bin = toolsDir(join(dir, "tools"), ["bash", "sed", "head", "dirname", "cat"]);
    const r = runScript(["--registry", "r.example/x", "--dry-run"], { PATH: bin });
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stderr).to.equal("");
    const lines = r.stdout.split("\n");
    expect(lines[0]).to.equal(`docker buildx imagetools inspect --format '{{json .Manifest}}' node:24-slim`);
    const placeholder = `--build-arg 'NODE_IMAGE=node:24-slim@sha256:<digest of node:24-slim>'`;
    expect(lines.slice(1, 3)).to.deep.equal(
      (["webhook", "agent"] as const).map(
        (name) =>
          `docker buildx build --file ${join(REPO_ROOT, `Dockerfile.${name}`)} --tag r.example/x/${name}:${VERSION}` +
          ` --load ${placeholder} ${REPO_ROOT}`,
      ),
    );
    expect(r.stdout).to.include("# base image: node:24-slim@sha256:<digest of node:24-slim>\nimages:");
  });

  for (const [form, manifest] of [
    ["on one line", JSON.stringify(MANIFEST)],
    ["indented, as buildx prints it", JSON.stringify(MANIFEST, null, 2)],
  ] as const)
    it(`pins both builds to the digest of the base image's index (inspect output ${form})`, () => {
      const r = runScript(["--registry", "r.example/x"], fakeDockerEnv({ FAKE_DOCKER_MANIFEST: manifest }));
      expect(r.status, r.stderr).to.equal(0);
      expect(inspectCalls()).to.deep.equal([INSPECT]);
      expect(buildCalls()).to.deep.equal([
        buildxBuild("webhook", "r.example/x", ["--build-arg", PINNED]),
        buildxBuild("agent", "r.example/x", ["--build-arg", PINNED]),
      ]);
      expect(r.stderr).to.equal(`images.sh: base image node:24-slim@${DIGEST}\n`);
      expect(r.stdout).to.include(`# base image: node:24-slim@${DIGEST}\nimages:`);
    });

  it("uses an explicit --build-arg NODE_IMAGE as given, without resolving anything", () => {
    const mine = `registry.example.com/node:24-slim@sha256:${"a".repeat(64)}`;
    const r = runScript(
      [
        "--registry",
        "r.example/x",
        "--build-arg",
        "GEESEFS_SHA256_ARM64=abc",
        "--build-arg",
        `NODE_IMAGE=${mine}`,
      ],
      fakeDockerEnv(),
    );
    expect(r.status, r.stderr).to.equal(0);
    expect(inspectCalls()).to.deep.equal([]);
    const given = ["--build-arg", "GEESEFS_SHA256_ARM64=abc", "--build-arg", `NODE_IMAGE=${mine}`];
    expect(buildCalls()).to.deep.equal([
      buildxBuild("webhook", "r.example/x", given),
      buildxBuild("agent", "r.example/x", given),
    ]);
    expect(r.stdout).to.include(`# base image: ${mine}\nimages:`);
  });

  it("--no-pin-base builds from the Dockerfiles' tag, without a NODE_IMAGE build argument", () => {
    const r = runScript(["--registry", "r.example/x", "--no-pin-base"], fakeDockerEnv());
    expect(r.status, r.stderr).to.equal(0);
    expect(inspectCalls()).to.deep.equal([]);
    expect(buildCalls()).to.deep.equal([
      buildxBuild("webhook", "r.example/x", []),
      buildxBuild("agent", "r.example/x", []),
    ]);
    expect(r.stdout).to.include("# base image: node:24-slim (not pinned: --no-pin-base)\nimages:");
  });

  for (const [what, extra, got] of [
    ["a digest too short", { FAKE_DOCKER_MANIFEST: '{"digest":"sha256:abc"}' }, "(got: sha256:abc)"],
    [
      "upper-case hex",
      { FAKE_DOCKER_MANIFEST: `{"digest":"sha256:${"A".repeat(64)}"}` },
      `(got: sha256:${"A".repeat(64)})`,
    ],
    [
      "another algorithm",
      { FAKE_DOCKER_MANIFEST: `{"digest":"sha512:${"a".repeat(64)}"}` },
      `(got: sha512:${"a".repeat(64)})`,
    ],
    ["no digest", { FAKE_DOCKER_MANIFEST: '{"schemaVersion":2}' }, '(got: no "digest" key)'],
    [
      "a failed inspect",
      { FAKE_DOCKER_INSPECT_FAILS: "1" },
      "failed (ERROR: failed to do request: dial tcp:",
    ],
  ] as const)
    it(`fails with one clear line, and builds nothing, when the base image's inspect gives ${what}`, () => {
      const r = runScript(["--registry", "r.example/x"], fakeDockerEnv(extra));
      expect(r.status).to.not.equal(0);
      expect(r.stdout).to.equal("");
      const lines = r.stderr.trim().split("\n");
      expect(lines).to.have.length(1);
      expect(lines[0]).to.match(
        /^images\.sh: cannot resolve the digest of the base image node:24-slim: docker buildx imagetools inspect --format '\{\{json \.Manifest\}\}' node:24-slim /,
      );
      expect(lines[0]).to.include(got);
      expect(lines[0]).to.match(
        /; pass --build-arg NODE_IMAGE=node:24-slim@sha256:<digest> to pin it yourself, or --no-pin-base to build from the tag$/,
      );
      expect(inspectCalls()).to.deep.equal([INSPECT]);
      expect(buildCalls()).to.deep.equal([]);
    });

  it("without buildx, fails with one clear line unless the base image is given or not pinned", () => {
    const env = fakeDockerEnv({ FAKE_DOCKER_NO_BUILDX: "1" });
    const r = runScript(["--registry", "r.example/x"], env);
    expect(r.status).to.not.equal(0);
    expect(r.stdout).to.equal("");
    const lines = r.stderr.trim().split("\n");
    expect(lines).to.have.length(1);
    expect(lines[0]).to.match(
      /^images\.sh: docker buildx is not available, and pinning the base image needs it /,
    );
    expect(lines[0])
      .to.include("--build-arg NODE_IMAGE=node:24-slim@sha256:<digest>")
      .and.include("--no-pin-base");
    expect(buildCalls()).to.deep.equal([]);

    const unpinned = runScript(["--registry", "r.example/x", "--no-pin-base"], env);
    expect(unpinned.status, unpinned.stderr).to.equal(0);
    expect(buildCalls()).to.deep.equal(
      (["webhook", "agent"] as const).map((name) => [
        "build",
        "--file",
        join(REPO_ROOT, `Dockerfile.${name}`),
        "--tag",
        `r.example/x/${name}:${VERSION}`,
        REPO_ROOT,
      ]),
    );
  });

  it("fails with one clear line when the Dockerfiles disagree on the base image", () => {
    // A copy of the script in a tree of its own, whose Dockerfile.webhook moved to another tag.
    const root = join(dir, "repo");
    mkdirSync(join(root, "scripts"), { recursive: true });
    copyFileSync(SCRIPT, join(root, "scripts/images.sh"));
    copyFileSync(join(REPO_ROOT, "package.json"), join(root, "package.json"));
    writeFileSync(join(root, "Dockerfile.agent"), "ARG NODE_IMAGE=node:24-slim\nFROM ${NODE_IMAGE}\n");
    writeFileSync(join(root, "Dockerfile.webhook"), "ARG NODE_IMAGE=node:26-slim\nFROM ${NODE_IMAGE}\n");
    const r = runScript(["--registry", "r.example/x"], fakeDockerEnv(), join(root, "scripts/images.sh"));
    expect(r.status).to.not.equal(0);
    expect(r.stdout).to.equal("");
    expect(r.stderr).to.equal(
      "images.sh: Dockerfile.webhook has ARG NODE_IMAGE=node:26-slim but Dockerfile.agent has ARG NODE_IMAGE=node:24-slim; set the same base image in both\n",
    );
    expect(inspectCalls()).to.deep.equal([]);
    expect(buildCalls()).to.deep.equal([]);
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
