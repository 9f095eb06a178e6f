/**
 * Rendering and validating `manifests/` for the tests in `test/unit/manifests/`.
 *
 * - {@link render} builds a kustomization with `kubectl kustomize` (spawned without a shell). When
 *   kubectl is not installed (Debian does not package it), it says so on stderr and builds it with
 *   {@link renderWithoutKubectl}, a small re-implementation of the kustomize features the manifests
 *   use; anything else in a kustomization.yaml is an error, never skipped. Where kubectl exists, a
 *   test checks that both give the same objects.
 * - {@link validateObject} checks one object against the published schema of its kind
 *   (`kubernetes-models`), rejects fields the Kubernetes API does not define (strict decoding, from
 *   the field lists of `@kubernetes/client-node`'s models), and knows cert-manager's Issuer and
 *   Certificate from a transcription of their CRDs. An unknown apiVersion or kind is an error.
 */
import * as k8s from "@kubernetes/client-node";
import { spawnSync } from "node:child_process";
import { readFileSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { YAML11_SCHEMA, loadAll } from "js-yaml";
import { applyPatch, type Operation } from "rfc6902";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const MANIFESTS_DIR = join(REPO_ROOT, "manifests");
export const CERT_MANAGER_OVERLAY_DIR = join(MANIFESTS_DIR, "overlays/cert-manager");

/** A rendered Kubernetes object. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  [field: string]: unknown;
}

export type Renderer = "kubectl" | "fallback";

export interface Rendered {
  readonly objects: readonly KubeObject[];
  readonly renderer: Renderer;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** `kind/namespace/name` (namespace empty for cluster-scoped objects). */
export function objectId(o: Pick<KubeObject, "kind" | "metadata">): string {
  return `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`;
}

/** Parses a multi-document YAML stream with YAML 1.1 rules, as kubectl and kustomize do. */
export function parseObjects(text: string, source: string): KubeObject[] {
  const out: KubeObject[] = [];
  for (const doc of loadAll(text, { schema: YAML11_SCHEMA })) {
    if (doc === null || doc === undefined) continue;
    if (
      !isObject(doc) ||
      typeof doc.apiVersion !== "string" ||
      typeof doc.kind !== "string" ||
      !isObject(doc.metadata) ||
      typeof doc.metadata.name !== "string"
    )
      throw new Error(`${source}: a document without apiVersion, kind and metadata.name`);
    out.push(doc as KubeObject);
  }
  return out;
}

let kubectlFound: boolean | undefined;

/** Whether `kubectl` runs here. */
export function hasKubectl(): boolean {
  kubectlFound ??=
    spawnSync("kubectl", ["version", "--client"], { encoding: "utf8", timeout: 30_000 }).status === 0;
  return kubectlFound;
}

/** `kubectl kustomize DIR`, parsed. */
export function renderWithKubectl(dir: string): KubeObject[] {
  const r = spawnSync("kubectl", ["kustomize", dir], {
    encoding: "utf8",
    timeout: 60_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  if (r.error || r.status !== 0)
    throw new Error(`kubectl kustomize ${dir} failed: ${r.stderr || r.error?.message || `exit ${r.status}`}`);
  return parseObjects(r.stdout, `kubectl kustomize ${dir}`);
}

const cache = new Map<string, Rendered>();

/** Renders a kustomization with kubectl, or without it when kubectl is missing (and says so). */
export function render(dir: string): Rendered {
  let r = cache.get(dir);
  if (r === undefined) {
    if (hasKubectl()) r = { objects: renderWithKubectl(dir), renderer: "kubectl" };
    else {
      process.stderr.write(
        `      kubectl is not installed: rendering ${dir} with the fallback in test/support/manifests.ts (the files listed in each kustomization.yaml, with its labels, images and patches)\n`,
      );
      r = { objects: renderWithoutKubectl(dir), renderer: "fallback" };
    }
    cache.set(dir, r);
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// The fallback renderer.

const KUSTOMIZATION_FIELDS = new Set(["apiVersion", "kind", "resources", "labels", "images", "patches"]);

function unsupported(where: string, what: string): Error {
  return new Error(
    `${where}: the fallback renderer does not implement ${what}; install kubectl, or extend test/support/manifests.ts`,
  );
}

function readYaml(path: string): unknown[] {
  return loadAll(readFileSync(path, "utf8"), { schema: YAML11_SCHEMA }).filter((d) => d != null);
}

/**
 * Builds a kustomization the way kustomize does, for the features the manifests use: `resources`
 * (files and directories), `patches` (JSON 6902 with a target; strategic merge of maps and
 * `$patch: delete`), `labels` (pairs on metadata only) and `images`. Applied in kustomize's order:
 * resources, patches, labels, images. Anything else throws.
 */
export function renderWithoutKubectl(dir: string): KubeObject[] {
  const file = join(dir, "kustomization.yaml");
  const [k] = readYaml(file);
  if (!isObject(k)) throw new Error(`${file}: not a mapping`);
  for (const key of Object.keys(k)) if (!KUSTOMIZATION_FIELDS.has(key)) throw unsupported(file, `"${key}"`);

  let objects: KubeObject[] = [];
  for (const entry of list(k.resources, `${file} resources`)) {
    if (typeof entry !== "string") throw new Error(`${file}: resources must be paths`);
    const path = resolve(dir, entry);
    objects.push(
      ...(statSync(path).isDirectory()
        ? renderWithoutKubectl(path)
        : parseObjects(readFileSync(path, "utf8"), path)),
    );
  }
  for (const p of list(k.patches, `${file} patches`)) objects = applyKustomizePatch(objects, p, dir, file);
  for (const l of list(k.labels, `${file} labels`)) applyLabels(objects, l, file);
  for (const i of list(k.images, `${file} images`)) applyImage(objects, i, file);
  return objects;
}

function list(v: unknown, where: string): unknown[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new Error(`${where}: must be a list`);
  return v as unknown[];
}

function applyLabels(objects: KubeObject[], entry: unknown, file: string): void {
  if (!isObject(entry) || !isObject(entry.pairs)) throw new Error(`${file}: labels entries need pairs`);
  for (const key of Object.keys(entry))
    if (key !== "pairs" && !(key === "includeSelectors" && entry[key] === false))
      throw unsupported(file, `labels.${key}`);
  for (const o of objects)
    o.metadata.labels = { ...o.metadata.labels, ...(entry.pairs as Record<string, string>) };
}

function applyImage(objects: KubeObject[], entry: unknown, file: string): void {
  if (!isObject(entry) || typeof entry.name !== "string")
    throw new Error(`${file}: images entries need a name`);
  for (const key of Object.keys(entry))
    if (!["name", "newName", "newTag"].includes(key)) throw unsupported(file, `images.${key}`);
  const { name, newName, newTag } = entry as { name: string; newName?: string; newTag?: string };
  const visit = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(visit);
    else if (isObject(v)) {
      for (const [key, child] of Object.entries(v)) {
        if ((key === "containers" || key === "initContainers") && Array.isArray(child))
          for (const c of child as unknown[]) {
            if (!isObject(c) || typeof c.image !== "string") continue;
            const m = /^([^@:]+(?::\d+\/[^@:]+)?)(?::([^@]+))?$/.exec(c.image);
            if (m?.[1] !== name) continue;
            const tag = newTag ?? m[2];
            c.image = `${newName ?? name}${tag !== undefined ? `:${tag}` : ""}`;
          }
        visit(child);
      }
    }
  };
  visit(objects);
}

interface PatchTarget {
  group?: string;
  version?: string;
  kind?: string;
  name?: string;
  namespace?: string;
}

function matchesTarget(o: KubeObject, t: PatchTarget): boolean {
  const [group, version] = o.apiVersion.includes("/") ? o.apiVersion.split("/") : ["", o.apiVersion];
  return (
    (t.group === undefined || t.group === group) &&
    (t.version === undefined || t.version === version) &&
    (t.kind === undefined || t.kind === o.kind) &&
    (t.name === undefined || t.name === o.metadata.name) &&
    (t.namespace === undefined || t.namespace === (o.metadata.namespace ?? ""))
  );
}

function applyKustomizePatch(objects: KubeObject[], entry: unknown, dir: string, file: string): KubeObject[] {
  if (!isObject(entry)) throw new Error(`${file}: a patch must be a mapping`);
  for (const key of Object.keys(entry))
    if (!["path", "patch", "target"].includes(key)) throw unsupported(file, `patches.${key}`);
  let target: PatchTarget | undefined;
  if (entry.target !== undefined) {
    if (!isObject(entry.target)) throw new Error(`${file}: patch target must be a mapping`);
    for (const key of Object.keys(entry.target))
      if (!["group", "version", "kind", "name", "namespace"].includes(key))
        throw unsupported(file, `patches.target.${key}`);
    target = entry.target;
  }
  const where = typeof entry.path === "string" ? join(dir, entry.path) : `${file} (inline patch)`;
  const docs =
    typeof entry.path === "string"
      ? readYaml(join(dir, entry.path))
      : typeof entry.patch === "string"
        ? loadAll(entry.patch, { schema: YAML11_SCHEMA }).filter((d) => d != null)
        : [];
  if (docs.length === 0) throw new Error(`${where}: an empty patch`);

  if (docs.length === 1 && Array.isArray(docs[0])) {
    if (target === undefined) throw new Error(`${where}: a JSON 6902 patch needs a target`);
    const matched = objects.filter((o) => matchesTarget(o, target));
    if (matched.length === 0) throw new Error(`${where}: the target matches no object`);
    for (const o of matched) {
      const errors = applyPatch(o, docs[0] as Operation[]);
      const failed = errors.map((e, i) => (e ? `op ${i}: ${e.message}` : "")).filter((e) => e !== "");
      if (failed.length > 0) throw new Error(`${where} on ${objectId(o)}: ${failed.join("; ")}`);
    }
    return objects;
  }

  let out = objects;
  for (const doc of docs) {
    if (!isObject(doc)) throw new Error(`${where}: a strategic merge patch must be a mapping`);
    const self = parseObjects(JSON.stringify(doc), where)[0]!;
    const t: PatchTarget = target ?? {
      kind: self.kind,
      name: self.metadata.name,
      ...(self.metadata.namespace !== undefined ? { namespace: self.metadata.namespace } : {}),
    };
    const matched = out.filter((o) => matchesTarget(o, t));
    if (matched.length === 0) throw new Error(`${where}: no object matches ${JSON.stringify(t)}`);
    if (doc.$patch === "delete") {
      out = out.filter((o) => !matched.includes(o));
      continue;
    }
    if (doc.$patch !== undefined) throw unsupported(where, `$patch: ${JSON.stringify(doc.$patch)}`);
    for (const o of matched) mergeMaps(o, doc, where);
  }
  return out;
}

/** Strategic merge restricted to maps: lists and directives are not emulated, so they throw. */
function mergeMaps(target: Json, patch: Json, where: string): void {
  for (const [key, value] of Object.entries(patch)) {
    if (key.startsWith("$")) throw unsupported(where, `the directive ${key}`);
    if (Array.isArray(value)) throw unsupported(where, `merging the list at "${key}"`);
    if (value === null) delete target[key];
    else if (isObject(value)) {
      if (!isObject(target[key])) target[key] = {};
      mergeMaps(target[key] as Json, value, where);
    } else target[key] = value;
  }
}

// ---------------------------------------------------------------------------------------------
// Validation.

interface Validatable {
  validate(): void;
}

/**
 * Throws unless `obj` is valid for its apiVersion and kind: the published schema, no field that the
 * API does not define, and a known kind.
 */
export async function validateObject(obj: KubeObject): Promise<void> {
  const id = `${obj.apiVersion} ${objectId(obj)}`;
  const extra = EXTRA_KINDS[`${obj.apiVersion}/${obj.kind}`];
  if (extra !== undefined) {
    const errors: string[] = [];
    checkShape(obj, extra, "", errors);
    if (errors.length > 0) throw new Error(`${id}: ${errors.join("; ")}`);
    return;
  }
  if (!/^([a-z0-9.-]+\/)?v\d+((alpha|beta)\d+)?$/.test(obj.apiVersion))
    throw new Error(`${id}: not an apiVersion kubernetes-models can know`);
  let mod: Record<string, unknown>;
  try {
    mod = (await import(`kubernetes-models/${obj.apiVersion}`)) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${id}: kubernetes-models has no API group version ${obj.apiVersion} (${String(e)})`);
  }
  const Model = mod[obj.kind];
  if (typeof Model !== "function") throw new Error(`${id}: kubernetes-models has no kind ${obj.kind}`);
  try {
    new (Model as new (data: unknown) => Validatable)(obj).validate();
  } catch (e) {
    throw new Error(`${id}: ${(e as Error).message}`);
  }
  const errors: string[] = [];
  checkKnownFields(obj, rootModelName(obj), "", errors);
  if (errors.length > 0) throw new Error(`${id}: ${errors.join("; ")}`);
}

interface AttributeType {
  readonly baseName: string;
  readonly type: string;
}

function modelAttributes(typeName: string): readonly AttributeType[] | undefined {
  const cls = (k8s as unknown as Record<string, unknown>)[typeName];
  if (typeof cls !== "function" || !("getAttributeTypeMap" in cls)) return undefined;
  return (cls as { getAttributeTypeMap(): AttributeType[] }).getAttributeTypeMap();
}

function rootModelName(obj: KubeObject): string {
  const [group, version] = obj.apiVersion.includes("/") ? obj.apiVersion.split("/") : ["", obj.apiVersion];
  const v = version!.replace(/^./, (c) => c.toUpperCase());
  const g = (group === "" ? "core" : group!.split(".")[0]!).replace(/^./, (c) => c.toUpperCase());
  for (const name of [`${v}${obj.kind}`, `${g}${v}${obj.kind}`])
    if (modelAttributes(name) !== undefined) return name;
  throw new Error(`${obj.apiVersion} ${obj.kind}: @kubernetes/client-node has no model for it`);
}

/** Strict decoding: every field must be one the model defines, recursively. */
function checkKnownFields(value: unknown, type: string, path: string, errors: string[]): void {
  const at = path === "" ? "(root)" : path;
  if (type === "any" || type === "object") return;
  const arrayOf = /^Array<(.+)>$/.exec(type);
  if (arrayOf) {
    if (!Array.isArray(value)) errors.push(`${at}: expected a list`);
    else value.forEach((v, i) => checkKnownFields(v, arrayOf[1]!, `${path}[${i}]`, errors));
    return;
  }
  const mapOf = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (mapOf) {
    if (!isObject(value)) errors.push(`${at}: expected a map`);
    else for (const [k, v] of Object.entries(value)) checkKnownFields(v, mapOf[1]!, `${path}.${k}`, errors);
    return;
  }
  const primitive: Record<string, (v: unknown) => boolean> = {
    string: (v) => typeof v === "string",
    Date: (v) => typeof v === "string",
    number: (v) => typeof v === "number",
    boolean: (v) => typeof v === "boolean",
    IntOrString: (v) => typeof v === "string" || typeof v === "number",
  };
  const check = primitive[type];
  if (check) {
    if (!check(value)) errors.push(`${at}: expected ${type}, got ${JSON.stringify(value)}`);
    return;
  }
  const attrs = modelAttributes(type);
  if (attrs === undefined) {
    errors.push(`${at}: no model for type ${type}`);
    return;
  }
  if (!isObject(value)) {
    errors.push(`${at}: expected an object (${type})`);
    return;
  }
  const fields = new Map(attrs.map((a) => [a.baseName, a.type]));
  for (const [k, v] of Object.entries(value)) {
    const t = fields.get(k);
    if (t === undefined) errors.push(`${path}.${k}: unknown field (not in ${type})`);
    else checkKnownFields(v, t, `${path}.${k}`, errors);
  }
}

/** A transcription of the parts of a CRD schema that the manifests use, strict about field names. */
type Shape =
  | "string"
  | "integer"
  | "boolean"
  | { readonly enum: readonly string[] }
  | { readonly pattern: RegExp }
  | { readonly list: Shape }
  | { readonly map: Shape }
  | { readonly object: Readonly<Record<string, Shape>>; readonly required?: readonly string[] }
  | { readonly any: true };

const ANY: Shape = { any: true };
const STRINGS: Shape = { list: "string" };
const GO_DURATION: Shape = { pattern: /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/ };

const METADATA: Shape = {
  object: {
    name: "string",
    namespace: "string",
    labels: { map: "string" },
    annotations: { map: "string" },
  },
  required: ["name"],
};

/** cert-manager.io/v1 (cert-manager 1.x CRDs): the fields of Certificate and Issuer specs. */
const CERTIFICATE: Shape = {
  object: {
    apiVersion: "string",
    kind: "string",
    metadata: METADATA,
    spec: {
      object: {
        additionalOutputFormats: ANY,
        commonName: "string",
        dnsNames: STRINGS,
        duration: GO_DURATION,
        emailAddresses: STRINGS,
        encodeUsagesInRequest: "boolean",
        ipAddresses: STRINGS,
        isCA: "boolean",
        issuerRef: {
          object: { name: "string", kind: "string", group: "string" },
          required: ["name"],
        },
        keystores: ANY,
        literalSubject: "string",
        nameConstraints: ANY,
        otherNames: ANY,
        privateKey: {
          object: {
            algorithm: { enum: ["RSA", "ECDSA", "Ed25519"] },
            encoding: { enum: ["PKCS1", "PKCS8"] },
            rotationPolicy: { enum: ["Never", "Always"] },
            size: "integer",
          },
        },
        renewBefore: GO_DURATION,
        renewBeforePercentage: "integer",
        revisionHistoryLimit: "integer",
        secretName: "string",
        secretTemplate: { object: { annotations: { map: "string" }, labels: { map: "string" } } },
        signatureAlgorithm: "string",
        subject: ANY,
        uris: STRINGS,
        usages: STRINGS,
      },
      required: ["issuerRef", "secretName"],
    },
  },
  required: ["apiVersion", "kind", "metadata", "spec"],
};

const ISSUER: Shape = {
  object: {
    apiVersion: "string",
    kind: "string",
    metadata: METADATA,
    spec: {
      object: {
        acme: ANY,
        ca: {
          object: {
            secretName: "string",
            crlDistributionPoints: STRINGS,
            ocspServers: STRINGS,
            issuingCertificateURLs: STRINGS,
          },
          required: ["secretName"],
        },
        selfSigned: { object: { crlDistributionPoints: STRINGS } },
        vault: ANY,
        venafi: ANY,
      },
    },
  },
  required: ["apiVersion", "kind", "metadata", "spec"],
};

const EXTRA_KINDS: Readonly<Record<string, Shape>> = {
  "cert-manager.io/v1/Certificate": CERTIFICATE,
  "cert-manager.io/v1/Issuer": ISSUER,
};

function checkShape(value: unknown, shape: Shape, path: string, errors: string[]): void {
  const at = path === "" ? "(root)" : path;
  if (shape === "string" || shape === "boolean") {
    if (typeof value !== shape) errors.push(`${at}: expected a ${shape}`);
    return;
  }
  if (shape === "integer") {
    if (!Number.isInteger(value)) errors.push(`${at}: expected an integer`);
    return;
  }
  if ("any" in shape) return;
  if ("enum" in shape) {
    if (typeof value !== "string" || !shape.enum.includes(value))
      errors.push(`${at}: must be one of ${shape.enum.join(", ")}`);
    return;
  }
  if ("pattern" in shape) {
    if (typeof value !== "string" || !shape.pattern.test(value))
      errors.push(`${at}: must match ${String(shape.pattern)}`);
    return;
  }
  if ("list" in shape) {
    if (!Array.isArray(value)) errors.push(`${at}: expected a list`);
    else value.forEach((v, i) => checkShape(v, shape.list, `${path}[${i}]`, errors));
    return;
  }
  if (!isObject(value)) {
    errors.push(`${at}: expected a map`);
    return;
  }
  if ("map" in shape) {
    for (const [k, v] of Object.entries(value)) checkShape(v, shape.map, `${path}.${k}`, errors);
    return;
  }
  for (const r of shape.required ?? []) if (!(r in value)) errors.push(`${path}.${r}: required`);
  for (const [k, v] of Object.entries(value)) {
    const s = shape.object[k];
    if (s === undefined) errors.push(`${path}.${k}: unknown field`);
    else checkShape(v, s, `${path}.${k}`, errors);
  }
}

// ---------------------------------------------------------------------------------------------
// Lookups.

/** The one object of this kind and name; throws with the names present otherwise. */
export function findObject(objects: readonly KubeObject[], kind: string, name: string): KubeObject {
  const found = objects.filter((o) => o.kind === kind && o.metadata.name === name);
  if (found.length !== 1)
    throw new Error(
      `expected one ${kind} "${name}", found ${found.length}; ${kind}s: ${objects
        .filter((o) => o.kind === kind)
        .map((o) => o.metadata.name)
        .join(", ")}`,
    );
  return found[0]!;
}

/** A label selector in object form (`matchLabels`, `matchExpressions`) applied to a label set. */
export function selectorMatches(selector: unknown, labels: Readonly<Record<string, string>>): boolean {
  if (!isObject(selector)) throw new Error("a label selector must be a mapping");
  const matchLabels = (selector.matchLabels ?? {}) as Record<string, string>;
  for (const [k, v] of Object.entries(matchLabels)) if (labels[k] !== v) return false;
  for (const e of (selector.matchExpressions ?? []) as {
    key: string;
    operator: string;
    values?: string[];
  }[]) {
    const has = Object.hasOwn(labels, e.key);
    const value = labels[e.key];
    const values = e.values ?? [];
    switch (e.operator) {
      case "In":
        if (!has || !values.includes(value!)) return false;
        break;
      case "NotIn":
        // As in Kubernetes: an object without the key matches NotIn.
        if (has && values.includes(value!)) return false;
        break;
      case "Exists":
        if (!has) return false;
        break;
      case "DoesNotExist":
        if (has) return false;
        break;
      default:
        throw new Error(`unknown selector operator ${e.operator}`);
    }
  }
  return true;
}

/** The pod template's spec of a Deployment or DaemonSet. */
export function podSpecOf(o: KubeObject): k8s.V1PodSpec {
  const spec = (o as { spec?: { template?: { spec?: k8s.V1PodSpec } } }).spec?.template?.spec;
  if (spec === undefined) throw new Error(`${objectId(o)} has no pod template`);
  return spec;
}

/** The container (or init container) of that name. */
export function containerOf(spec: k8s.V1PodSpec, name: string, init = false): k8s.V1Container {
  const list = (init ? spec.initContainers : spec.containers) ?? [];
  const c = list.find((x) => x.name === name);
  if (c === undefined)
    throw new Error(
      `no ${init ? "init container" : "container"} "${name}"; have ${list.map((x) => x.name).join(", ")}`,
    );
  return c;
}

export function volumeOf(spec: k8s.V1PodSpec, name: string): k8s.V1Volume {
  const v = (spec.volumes ?? []).find((x) => x.name === name);
  if (v === undefined) throw new Error(`no volume "${name}"`);
  return v;
}

export function mountOf(c: k8s.V1Container, volume: string): k8s.V1VolumeMount {
  const m = (c.volumeMounts ?? []).filter((x) => x.name === volume);
  if (m.length !== 1) throw new Error(`container "${c.name}" mounts volume "${volume}" ${m.length} times`);
  return m[0]!;
}

/** A container's env as name → plain value; `valueFrom` fieldRefs resolve through `fieldValues`. */
export function envValues(
  c: k8s.V1Container,
  fieldValues: Readonly<Record<string, string>>,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of c.env ?? []) {
    if (e.value !== undefined) out[e.name] = e.value;
    else if (e.valueFrom?.fieldRef !== undefined) {
      const v = fieldValues[e.valueFrom.fieldRef.fieldPath];
      if (v === undefined)
        throw new Error(`env ${e.name}: no test value for ${e.valueFrom.fieldRef.fieldPath}`);
      out[e.name] = v;
    } else throw new Error(`env ${e.name}: only value and fieldRef are expected here`);
  }
  return out;
}

/** Kubernetes' `$(VAR)` expansion in command and args; an undefined variable is an error here. */
export function expandVars(s: string, env: Readonly<Record<string, string>>): string {
  return s.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (_m, name: string) => {
    const v = env[name];
    if (v === undefined) throw new Error(`$(${name}) is not defined in the container's env`);
    return v;
  });
}
