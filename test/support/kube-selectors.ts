/** Label and field selectors, and the JSON merge patch, as the API server applies them. */
import { StoreError, type KubeObject } from "./kube-resources.js";

/** A predicate for `labelSelector`: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`. */
export function parseLabelSelector(selector: string | undefined): (o: KubeObject) => boolean {
  if (!selector) return () => true;
  const terms = splitTerms(selector).map((term): ((l: Record<string, string>) => boolean) => {
    let m: RegExpExecArray | null;
    if ((m = /^([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(term))) {
      const [, key = "", op, list = ""] = m;
      const values = list.split(",").map((v) => v.trim());
      return op === "in"
        ? (l) => key in l && values.includes(l[key]!)
        : (l) => !(key in l) || !values.includes(l[key]!);
    }
    if ((m = /^([^\s!=]+)\s*(==|=|!=)\s*(\S*)$/.exec(term))) {
      const [, key = "", op, value] = m;
      return op === "!=" ? (l) => l[key] !== value : (l) => l[key] === value;
    }
    if ((m = /^!\s*(\S+)$/.exec(term))) {
      const key = m[1]!;
      return (l) => !(key in l);
    }
    const key = term;
    return (l) => key in l;
  });
  return (o) => terms.every((t) => t(o.metadata?.labels ?? {}));
}

/** A predicate for `fieldSelector`: comma-separated `path=value`, `path==value`, `path!=value` on dotted paths. */
export function parseFieldSelector(selector: string | undefined): (o: KubeObject) => boolean {
  if (!selector) return () => true;
  const terms = selector.split(",").map((term) => {
    const m = /^([^!=]+)(==|=|!=)(.*)$/.exec(term.trim());
    if (!m) throw new StoreError(400, "BadRequest", `invalid field selector: "${term}"`);
    const [, path = "", op, value] = m;
    return (o: KubeObject) => {
      const actual = path
        .split(".")
        .reduce<unknown>((v, k) => (v as Record<string, unknown> | undefined)?.[k], o);
      const text = fieldText(actual);
      return op === "!=" ? text !== value : text === value;
    };
  });
  return (o) => terms.every((t) => t(o));
}

/** A field's value as a field selector compares it: scalars as text, absent as "". */
function fieldText(v: unknown): string {
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  if (v === undefined || v === null) return "";
  return JSON.stringify(v);
}

/** RFC 7386 JSON merge patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return structuredClone(patch);
  const result: Record<string, unknown> =
    target !== null && typeof target === "object" && !Array.isArray(target)
      ? { ...(target as Record<string, unknown>) }
      : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete result[k];
    else result[k] = mergePatch(result[k], v);
  }
  return result;
}

function splitTerms(selector: string): string[] {
  // Commas inside "in (a,b)" do not separate terms.
  const terms: string[] = [];
  let depth = 0;
  let cur = "";
  for (const c of selector) {
    if (c === "(") depth++;
    if (c === ")") depth--;
    if (c === "," && depth === 0) {
      terms.push(cur.trim());
      cur = "";
    } else cur += c;
  }
  if (cur.trim() !== "") terms.push(cur.trim());
  return terms.filter((t) => t !== "");
}
