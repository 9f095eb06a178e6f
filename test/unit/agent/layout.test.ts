/**
 * The agent's folders by subsystem: the mount engine (`agent/mount/`) and the mounter around it
 * (`agent/mounter/`) are what the privileged mounter process runs, so they must load without the
 * console, the reconciler, the pod sources or any network library. Type-only imports vanish at
 * compile time and are allowed.
 */
import { expect } from "chai";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? tsFiles(p) : p.endsWith(".ts") ? [p] : [];
  });
}

/** The specifiers of the runtime imports in `text` (not `import type`). */
function runtimeImports(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/^import\s+(type\s+)?[^;]*?from\s+"([^"]+)";/gms))
    if (m[1] === undefined) out.push(m[2]!);
  for (const m of text.matchAll(/import\("([^"]+)"\)/g)) out.push(m[1]!);
  return out;
}

const FORBIDDEN = [/\/console\//, /\/reconcile\//, /\/sources\//, /^@kubernetes\//, /^ws$/, /^express$/];

/** The forbidden runtime imports of `text`. */
function forbiddenImports(text: string): string[] {
  return runtimeImports(text).filter((s) => FORBIDDEN.some((r) => r.test(s)));
}

describe("the agent's layout", () => {
  const files = [...tsFiles("agent/mount"), ...tsFiles("agent/mounter")];

  it("has a mount engine and a mounter to check", () => {
    expect(files).to.include.members([
      "agent/mount/fuse-mount.ts",
      "agent/mount/exec.ts",
      "agent/mounter/main.ts",
      "agent/mounter/server.ts",
      "agent/mounter/service.ts",
      "agent/mounter/protocol.ts",
      "agent/mounter/client.ts",
      "agent/mounter/config.ts",
    ]);
  });

  for (const f of files)
    it(`${f} loads nothing of the console, the reconciler, the sources or the network`, () => {
      expect(forbiddenImports(readFileSync(f, "utf8")), f).to.deep.equal([]);
    });

  it("reads type-only imports as such (the check can fail)", () => {
    expect(runtimeImports('import type { A } from "../reconcile/plan.js";\n')).to.deep.equal([]);
    expect(runtimeImports('import { A } from "../reconcile/plan.js";\n')).to.deep.equal([
      "../reconcile/plan.js",
    ]);
  });

  it("finds what a mounter file must not load (the check can fail)", () => {
    // The mounter's own files, each given one forbidden import more: every one is caught.
    const mounterFiles = files.filter((f) => f.startsWith("agent/mounter/"));
    for (const f of mounterFiles) {
      const text = readFileSync(f, "utf8");
      for (const spec of [
        "../console/server.js",
        "../reconcile/mounter-link.js",
        "../sources/local.js",
        "@kubernetes/client-node",
        "ws",
        "express",
      ])
        expect(forbiddenImports(`import { X } from "${spec}";\n${text}`), `${f} + ${spec}`).to.deep.equal([
          spec,
        ]);
    }
    // A dynamic import, and a multi-line import list, count too; a type-only one does not.
    expect(forbiddenImports('const m = await import("../reconcile/engine.js");\n')).to.deep.equal([
      "../reconcile/engine.js",
    ]);
    expect(forbiddenImports('import {\n  A,\n  B,\n} from "../console/auth.js";\n')).to.deep.equal([
      "../console/auth.js",
    ]);
    expect(forbiddenImports('import type { MountEngine } from "../reconcile/engine.js";\n')).to.deep.equal(
      [],
    );
    // Allowed neighbours: the mount engine and shared code.
    expect(forbiddenImports('import { FuseMounter } from "../mount/fuse-mount.js";\n')).to.deep.equal([]);
    expect(forbiddenImports('import { AppError } from "../../shared/errors.js";\n')).to.deep.equal([]);
  });
});
