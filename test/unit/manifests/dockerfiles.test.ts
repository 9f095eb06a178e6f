import { AGENT_NODE_FLAGS } from "../../../agent/config.js";
import { expect } from "chai";
import { type Copy, DockerfileParser, From, type Instruction as DockerInstruction } from "dockerfile-ast";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join, posix } from "node:path";
import { WEBHOOK_OPTIONS } from "../../../webhook/config.js";
import { DOCKERFILES, lintDockerfile } from "../../../scripts/lint-dockerfiles.js";
import { MANIFESTS_DIR, REPO_ROOT, containerOf, podSpecOf, render } from "../../support/manifests.js";

interface Instruction {
  readonly line: number;
  readonly keyword: string;
  readonly args: string;
  /** Index of the build stage (FROM) it belongs to. */
  readonly stage: number;
  readonly node: DockerInstruction;
}

interface Stage {
  readonly base: string;
  readonly name: string | undefined;
}

/** A Dockerfile's instructions and stages, parsed by dockerfile-ast (comments dropped, `\\` continuations joined). */
function parseDockerfile(text: string): { instructions: Instruction[]; stages: Stage[] } {
  const dockerfile = DockerfileParser.parse(text);
  const stages: Stage[] = [];
  const instructions: Instruction[] = [];
  for (const i of dockerfile.getInstructions()) {
    const keyword = i.getKeyword();
    if (i instanceof From) stages.push({ base: i.getImage() ?? "", name: i.getBuildStage() ?? undefined });
    instructions.push({
      line: i.getRange().start.line + 1,
      keyword,
      args: (i.getArgumentsContent() ?? "").replace(/\s+/g, " ").trim(),
      stage: stages.length - 1,
      node: i,
    });
  }
  return { instructions, stages };
}

/** COPY/ADD: flags, sources and destination (JSON or shell form). */
function copyParts(i: Instruction): { flags: Map<string, string>; sources: string[]; dest: string } {
  const node = i.node as Copy;
  const json = node.getJSONStrings().map((s) => s.getJSONValue());
  const words = json.length > 0 ? json : node.getArguments().map((a) => a.getValue());
  const flags = new Map(node.getFlags().map((f) => [f.getName(), f.getValue() ?? ""] as const));
  const dest = words.pop();
  if (dest === undefined || words.length === 0)
    throw new Error(`line ${i.line}: COPY needs sources and a destination`);
  return { flags, sources: words, dest };
}

/** Every repository file reachable from `entries` through relative imports (static or dynamic). */
function importedFiles(entries: readonly string[]): Set<string> {
  const seen = new Set<string>();
  const queue = [...entries];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    if (!existsSync(join(REPO_ROOT, file)))
      throw new Error(`${file} does not exist (an entry point, or imported)`);
    const text = readFileSync(join(REPO_ROOT, file), "utf8");
    for (const m of text.matchAll(/(?:from\s+|import\s*\(\s*)"(\.{1,2}\/[^"]+)\.js"/g))
      queue.push(posix.normalize(posix.join(posix.dirname(file), `${m[1]!}.ts`)));
  }
  return seen;
}

/** Programs an image runs besides its ENTRYPOINT: the webhook's certificate bootstrap, the mounter. */
const OTHER_PROGRAMS: Readonly<Record<string, readonly string[]>> = {
  "Dockerfile.webhook": ["dist/certs/main.js"],
  "Dockerfile.agent": ["dist/agent/mounter/main.js"],
};

const tsconfigBuild = JSON.parse(readFileSync(join(REPO_ROOT, "tsconfig.build.json"), "utf8")) as {
  include: string[];
};

/** The script node is asked to run: its first argument that is not a flag. */
function mainOf(argv: readonly string[]): string {
  return argv.slice(1).find((a) => !a.startsWith("-")) ?? "";
}

for (const name of ["Dockerfile.webhook", "Dockerfile.agent"]) {
  describe(name, function () {
    // Rendering, dynamic imports and local servers: slow on a busy machine, whatever the mocha config.
    this.timeout(30_000);
    const { instructions, stages } = parseDockerfile(readFileSync(join(REPO_ROOT, name), "utf8"));
    const last = stages.length - 1;
    const entrypoint = instructions.filter((i) => i.keyword === "ENTRYPOINT" && i.stage === last);

    it("copies from the build context only files that exist in the repository", () => {
      const missing: string[] = [];
      for (const i of instructions.filter((x) => x.keyword === "COPY" || x.keyword === "ADD")) {
        const { flags, sources } = copyParts(i);
        if (flags.has("from")) {
          const from = flags.get("from")!;
          expect(
            stages.slice(0, i.stage).some((s) => s.name === from),
            `line ${i.line}: --from=${from} names an earlier stage`,
          ).to.equal(true);
          continue;
        }
        for (const s of sources) {
          if (/[*?[]/.test(s))
            throw new Error(`line ${i.line}: "${s}" is a pattern; teach this test about it`);
          if (/^[a-z]+:\/\//.test(s)) throw new Error(`line ${i.line}: ADD from a URL is not reproducible`);
          if (!existsSync(join(REPO_ROOT, s))) missing.push(`line ${i.line}: ${s}`);
        }
      }
      expect(missing).to.deep.equal([]);
    });

    it("copies into the build stage the sources its entry points import, and compiles them", () => {
      const build = stages.findIndex((s) => s.name === "build");
      expect(build, "a stage named build").to.be.at.least(0);
      const copied = instructions
        .filter((i) => i.keyword === "COPY" && i.stage === build && !copyParts(i).flags.has("from"))
        .flatMap((i) => copyParts(i).sources);
      expect(copied).to.include.members([
        "package.json",
        "package-lock.json",
        "tsconfig.json",
        "tsconfig.build.json",
      ]);
      expect(
        instructions.some((i) => i.stage === build && /tsc -p tsconfig\.build\.json/.test(i.args)),
      ).to.equal(true);
      const mains = [JSON.parse(entrypoint[0]!.args) as string[]]
        .concat(OTHER_PROGRAMS[name]!.map((script) => ["node", script]))
        .map((argv) =>
          mainOf(argv)
            .replace(/^dist\//, "")
            .replace(/\.js$/, ".ts"),
        );
      const needed = [...new Set([...importedFiles(mains)].map((f) => f.split("/")[0]!))].sort();
      expect(copied, "COPY'd into the build stage").to.include.members(needed);
      expect(tsconfigBuild.include, "compiled by tsconfig.build.json").to.include.members(needed);
    });

    it("starts node on a dist/<dir>/main.js that is compiled from an existing <dir>/main.ts", () => {
      expect(entrypoint, "one ENTRYPOINT in the final stage").to.have.length(1);
      const argv = JSON.parse(entrypoint[0]!.args) as string[];
      expect(argv[0]).to.equal("node");
      const main = mainOf(argv);
      // Node flags come before the script: the agent's are the ones the local node runs it with.
      expect(argv.slice(1, argv.indexOf(main))).to.deep.equal(
        name === "Dockerfile.agent" ? [...AGENT_NODE_FLAGS] : [],
      );
      const m = /^dist\/([a-z-]+)\/main\.js$/.exec(main);
      expect(m, `${main} is dist/<dir>/main.js`).to.not.equal(null);
      expect(existsSync(join(REPO_ROOT, m![1]!, "main.ts"))).to.equal(true);
      expect(tsconfigBuild.include).to.include(m![1]);
      // The default stays the component the image is named after; the others name their program.
      expect(main).to.equal(name === "Dockerfile.agent" ? "dist/agent/main.js" : "dist/webhook/main.js");
      const workdir = instructions.filter((i) => i.keyword === "WORKDIR" && i.stage === last).at(-1)?.args;
      const dist = instructions.find(
        (i) =>
          i.keyword === "COPY" && i.stage === last && copyParts(i).sources.some((s) => s.endsWith("/dist")),
      );
      expect(dist, "the final stage copies dist").to.not.equal(undefined);
      expect(posix.resolve(workdir ?? "/", copyParts(dist!).dest)).to.equal(
        posix.resolve(workdir ?? "/", "dist"),
      );
    });
  });
}

describe("Dockerfile.webhook and the webhook Deployment", function () {
  // Rendering, dynamic imports and local servers: slow on a busy machine, whatever the mocha config.
  this.timeout(30_000);
  it("expose the webhook's default port", () => {
    const text = readFileSync(join(REPO_ROOT, "Dockerfile.webhook"), "utf8");
    const exposed = [...text.matchAll(/^EXPOSE\s+(\d+)/gm)].map((m) => Number(m[1]));
    const port = Number(/:(\d+)$/.exec(WEBHOOK_OPTIONS.listen.default!)![1]);
    expect(exposed).to.deep.equal([port]);
  });
});

describe("the images and the manifests", function () {
  // Rendering, dynamic imports and local servers: slow on a busy machine, whatever the mocha config.
  this.timeout(30_000);
  it("run every node script of the manifests (commands and exec probes) from a main.ts the image compiles", () => {
    const objects = render(MANIFESTS_DIR).objects;
    const scripts = new Set<string>();
    for (const o of objects.filter((x) => x.kind === "Deployment" || x.kind === "DaemonSet")) {
      const spec = podSpecOf(o);
      for (const c of [...(spec.initContainers ?? []), ...spec.containers])
        for (const argv of [
          c.command,
          c.startupProbe?.exec?.command,
          c.livenessProbe?.exec?.command,
          c.readinessProbe?.exec?.command,
        ])
          if (argv?.[0] === "node") scripts.add(`${c.image!.replace(/:[^/:]*$/, "")} ${mainOf(argv)}`);
    }
    expect([...scripts].sort()).to.deep.equal([
      "ghcr.io/dynamic-volumes/agent dist/agent/mounter/main.js",
      "ghcr.io/dynamic-volumes/webhook dist/certs/main.js",
    ]);
    containerOf(podSpecOf(objects.find((o) => o.kind === "Deployment")!), "certs", true);
    for (const entry of scripts) {
      const [image, script] = entry.split(" ") as [string, string];
      const dockerfile = image.endsWith("/agent") ? "Dockerfile.agent" : "Dockerfile.webhook";
      expect(OTHER_PROGRAMS[dockerfile], `${dockerfile} knows that it runs ${script}`).to.include(script);
      const source = script.replace(/^dist\//, "").replace(/\.js$/, ".ts");
      expect(existsSync(join(REPO_ROOT, source)), `${script} is compiled from ${source}`).to.equal(true);
      expect(tsconfigBuild.include, script).to.include(source.split("/")[0]);
    }
  });
});

describe("Dockerfile.agent and the agent DaemonSet", function () {
  // Rendering, dynamic imports and local servers: slow on a busy machine, whatever the mocha config.
  this.timeout(30_000);
  const { instructions, stages } = parseDockerfile(readFileSync(join(REPO_ROOT, "Dockerfile.agent"), "utf8"));
  const last = stages.length - 1;

  it("leaves what the final stage copies from the build stage readable by any user, the agent's non-root uid included", () => {
    const build = stages.findIndex((s) => s.name === "build");
    const copied = instructions
      .filter((i) => i.keyword === "COPY" && i.stage === last && copyParts(i).flags.get("from") === "build")
      .flatMap((i) => copyParts(i).sources.map((s) => posix.relative("/src", s)));
    expect(copied).to.include.members(["dist", "node_modules", "package.json"]);
    // COPY --from keeps the modes of the build stage: a recursive a+rX there, after the build.
    const chmod = instructions.filter(
      (i) => i.stage === build && i.keyword === "RUN" && /\bchmod -R a\+rX\b/.test(i.args),
    );
    expect(chmod, "a `chmod -R a+rX ...` in the build stage").to.have.length(1);
    const tsc = instructions.findIndex(
      (i) => i.stage === build && /tsc -p tsconfig\.build\.json/.test(i.args),
    );
    expect(instructions.indexOf(chmod[0]!)).to.be.at.least(tsc);
    const targets = chmod[0]!.args
      .split(/chmod -R \S+/)[1]!
      .split("&&")[0]!
      .trim()
      .split(/\s+/);
    expect(targets).to.include.members(copied);
    // No --chown or --chmod that could take the access back.
    for (const i of instructions.filter((x) => x.keyword === "COPY" && x.stage === last))
      expect(
        [...copyParts(i).flags.keys()].filter((f) => f !== "from"),
        `line ${i.line}`,
      ).to.deep.equal([]);
  });

  it("sets no USER: the agent DaemonSet runs it as non-root, the mounter as root", () => {
    expect(instructions.filter((i) => i.keyword === "USER")).to.deep.equal([]);
    const objects = render(MANIFESTS_DIR).objects;
    const agent = podSpecOf(
      objects.find((o) => o.kind === "DaemonSet" && o.metadata.name === "dynamic-volumes-agent")!,
    );
    expect(agent.securityContext?.runAsNonRoot).to.equal(true);
    expect(agent.securityContext?.runAsUser).to.be.a("number").and.not.equal(0);
  });
});

describe("the base image and geesefs in the Dockerfiles", function () {
  this.timeout(30_000);

  for (const name of ["Dockerfile.webhook", "Dockerfile.agent"])
    it(`${name} takes its base image from ARG NODE_IMAGE, in every FROM`, () => {
      const { instructions, stages } = parseDockerfile(readFileSync(join(REPO_ROOT, name), "utf8"));
      const arg = instructions.filter((i) => i.keyword === "ARG" && i.stage === -1);
      expect(arg.map((i) => i.args)).to.deep.equal(["NODE_IMAGE=node:24-slim"]);
      expect(stages.map((s) => s.base)).to.deep.equal(stages.map(() => "${NODE_IMAGE}"));
    });

  it("Dockerfile.agent documents how to pin the base image by digest", () => {
    const text = readFileSync(join(REPO_ROOT, "Dockerfile.agent"), "utf8");
    expect(text).to.include("node:24-slim@sha256:");
    expect(text).to.include("docker buildx imagetools inspect node:24-slim");
  });

  /** The `case "$TARGETARCH" … esac` of the RUN that installs geesefs, as one shell line. */
  function geesefsCase(): string {
    const { instructions } = parseDockerfile(readFileSync(join(REPO_ROOT, "Dockerfile.agent"), "utf8"));
    const run = instructions.find((i) => i.keyword === "RUN" && /geesefs-linux-/.test(i.args));
    expect(run, "the RUN that installs geesefs").to.not.equal(undefined);
    const m = /case "\$TARGETARCH" in .*? esac/.exec(run!.args);
    expect(m, "a case on $TARGETARCH").to.not.equal(null);
    return `${m![0]}; echo "sum=$sum"`;
  }

  function runCase(env: Record<string, string>) {
    return spawnSync("sh", ["-c", geesefsCase()], {
      encoding: "utf8",
      env: { PATH: process.env.PATH, GEESEFS_VERSION: "v0.40.2", ...env },
    });
  }

  it("picks the pinned amd64 checksum, and an arm64 checksum passed as GEESEFS_SHA256_ARM64", () => {
    const text = readFileSync(join(REPO_ROOT, "Dockerfile.agent"), "utf8");
    const amd64 = /^ARG GEESEFS_SHA256_AMD64=([0-9a-f]{64})$/m.exec(text);
    expect(amd64, "a pinned amd64 checksum").to.not.equal(null);
    expect(text).to.match(/^ARG GEESEFS_SHA256_ARM64=$/m);
    const a = runCase({ TARGETARCH: "amd64", GEESEFS_SHA256_AMD64: amd64![1]! });
    expect(a.status, a.stderr).to.equal(0);
    expect(a.stdout.trim()).to.equal(`sum=${amd64![1]!}`);
    const b = runCase({ TARGETARCH: "arm64", GEESEFS_SHA256_ARM64: "ab".repeat(32) });
    expect(b.status, b.stderr).to.equal(0);
    expect(b.stdout.trim()).to.equal(`sum=${"ab".repeat(32)}`);
  });

  it("fails an arm64 build without GEESEFS_SHA256_ARM64, saying what to pass and how to get it", () => {
    const r = runCase({ TARGETARCH: "arm64", GEESEFS_SHA256_ARM64: "" });
    expect(r.status).to.equal(1);
    expect(r.stdout).to.equal("");
    expect(r.stderr).to.include("--build-arg GEESEFS_SHA256_ARM64=");
    expect(r.stderr).to.include(
      "curl -fsSL https://github.com/yandex-cloud/geesefs/releases/download/v0.40.2/geesefs-linux-arm64 | sha256sum",
    );
    const other = runCase({ TARGETARCH: "riscv64" });
    expect(other.status).to.equal(1);
    expect(other.stderr).to.include("riscv64");
  });
});

describe("the Dockerfile linter (scripts/lint-dockerfiles.ts, run by npm run lint)", () => {
  for (const name of DOCKERFILES)
    it(`finds no problem in ${name}`, () => {
      expect(lintDockerfile(readFileSync(join(REPO_ROOT, name), "utf8"))).to.deep.equal([]);
    });

  const bad: ReadonlyArray<readonly [string, string, RegExp]> = [
    ["a relative WORKDIR", "FROM scratch\nWORKDIR app\n", /^2: WORKDIR paths should be absolute/],
    ["two CMDs in one stage", "FROM scratch\nCMD a\nCMD b\n", /^2: There can only be one CMD/],
    [
      "a lowercase instruction",
      "FROM scratch\nrun true\n",
      /^2: Instructions should be written in uppercase/,
    ],
    ["MAINTAINER", "FROM scratch\nMAINTAINER me\n", /^2: MAINTAINER has been deprecated/],
    ["JSON in single quotes", "FROM scratch\nENTRYPOINT ['node']\n", /^2: .*single quotes/],
    ["COPY without a destination", "FROM scratch\nCOPY a\n", /^2: COPY requires at least two arguments/],
  ];
  for (const [what, text, message] of bad)
    it(`reports ${what}`, () => {
      const problems = lintDockerfile(text);
      expect(problems, problems.join("\n")).to.have.length(1);
      expect(problems[0]).to.match(message);
    });
});
