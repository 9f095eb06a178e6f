/**
 * The agent's folders by subsystem: the mount engine (`agent/mount/`) is what a privileged
 * mounter process runs, so it must load without the console, the reconciler, the pod sources or
 * any network library. Type-only imports vanish at compile time and are allowed.
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

describe("the agent's layout", () => {
  const files = tsFiles("agent/mount");

  it("has a mount engine to check", () => {
    expect(files).to.include.members(["agent/mount/fuse-mount.ts", "agent/mount/exec.ts"]);
  });

  for (const f of files)
    it(`${f} loads nothing of the console, the reconciler, the sources or the network`, () => {
      const bad = runtimeImports(readFileSync(f, "utf8")).filter((s) => FORBIDDEN.some((r) => r.test(s)));
      expect(bad, f).to.deep.equal([]);
    });

  it("reads type-only imports as such (the check can fail)", () => {
    expect(runtimeImports('import type { A } from "../reconcile/plan.js";\n')).to.deep.equal([]);
    expect(runtimeImports('import { A } from "../reconcile/plan.js";\n')).to.deep.equal([
      "../reconcile/plan.js",
    ]);
  });
});
