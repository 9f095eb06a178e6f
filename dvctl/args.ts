/**
 * Parsing of dvctl's arguments: `NS/POD`, `BUCKET[/PREFIX]`, mount names, timeouts, the agent URL,
 * and the words of a console line. Everything a user types is checked here with the console's own
 * validation (`shared/protocol.ts`), so a bad value exits 2 before any connection is opened.
 * Pure: no I/O.
 */
import { checkBucketName, checkMountName, checkPrefix } from "../shared/buckets.js";
import {
  CONSOLE_PATH,
  MAX_TIMEOUT_SECONDS,
  checkNamespace,
  checkPodName,
  encodeRequest,
  parseRequest,
  type MountRequest,
  type UnmountRequest,
} from "../shared/protocol.js";
import { UsageError } from "./errors.js";
import { printable } from "./format.js";

/** The agent's console port in the manifests (`containerPort: 9443`). */
export const DEFAULT_AGENT_PORT = 9443;

/** A request as dvctl builds it; the client numbers it. */
export type Unnumbered<R> = R extends unknown ? Omit<R, "id"> : never;

export interface PodRef {
  readonly namespace: string;
  readonly pod: string;
}

function check(what: string, problem: string | undefined): void {
  // The shared checks quote the value as typed; it may hold terminal escapes.
  if (problem !== undefined) throw new UsageError(`${what}: ${printable(problem).replace(/[\t\n]/g, "?")}`);
}

/**
 * `NS/POD`, or `POD` when `defaultNamespace` is given (from `-n`). Both parts must be names the API
 * server would accept, so that nothing else (paths, options, control characters) gets through.
 */
export function parsePodRef(text: string, defaultNamespace?: string): PodRef {
  if (text.length > 320) throw new UsageError("NS/POD is longer than 320 characters");
  const parts = text.split("/");
  let namespace: string;
  let pod: string;
  if (parts.length === 2) [namespace, pod] = parts as [string, string];
  else if (parts.length === 1 && defaultNamespace !== undefined) [namespace, pod] = [defaultNamespace, text];
  else throw new UsageError(`"${clip(text)}" is not NS/POD (for example team-a/trainer-0)`);
  check("NS/POD", checkNamespace(namespace));
  check("NS/POD", checkPodName(pod));
  return { namespace, pod };
}

/** A namespace for `-n`. */
export function parseNamespace(text: string): string {
  check("-n/--namespace", checkNamespace(text));
  return text;
}

/** `BUCKET[/PREFIX]`; slashes around the prefix are dropped, as the annotation grammar does. */
export function parseBucketRef(text: string): { bucket: string; prefix: string } {
  if (text.length > 1100) throw new UsageError("BUCKET/PREFIX is longer than 1100 characters");
  const slash = text.indexOf("/");
  const bucket = slash < 0 ? text : text.slice(0, slash);
  const prefix = slash < 0 ? "" : text.slice(slash + 1).replace(/^\/+|\/+$/g, "");
  check("BUCKET", checkBucketName(bucket));
  check("PREFIX", checkPrefix(prefix));
  return { bucket, prefix };
}

export function parseMountName(text: string): string {
  check("mount name", checkMountName(text));
  return text;
}

/** Whole seconds from 1 to {@link MAX_TIMEOUT_SECONDS}. */
export function parseTimeoutSeconds(text: string, flag = "--timeout"): number {
  const n = Number(text);
  if (!/^\d{1,5}$/.test(text) || n < 1 || n > MAX_TIMEOUT_SECONDS)
    throw new UsageError(`${flag}: "${clip(text)}" must be whole seconds from 1 to ${MAX_TIMEOUT_SECONDS}`);
  return n;
}

export type OutputFormat = "table" | "json";

export function parseOutput(text: string): OutputFormat {
  if (text === "table" || text === "json") return text;
  throw new UsageError(`-o/--output: "${clip(text)}" must be table or json`);
}

/**
 * `wss://HOST[:PORT][/console]` to the console's URL. Plain `ws://` is refused: the token would
 * travel in clear text. Credentials, queries and other paths are refused rather than ignored.
 */
export function parseAgentUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`--agent: "${clip(text)}" is not a URL; use wss://HOST:PORT`);
  }
  if (url.protocol !== "wss:")
    throw new UsageError(
      `--agent: "${clip(text)}" must start with wss:// (the console only speaks TLS, so that the token stays secret)`,
    );
  if (url.username !== "" || url.password !== "")
    throw new UsageError("--agent: the URL must not carry credentials; use --token or --token-file");
  if (url.search !== "" || url.hash !== "") throw new UsageError("--agent: the URL must not have a query");
  if (!["", "/", CONSOLE_PATH].includes(url.pathname))
    throw new UsageError(`--agent: the console is at ${CONSOLE_PATH}; give wss://HOST:PORT`);
  if (url.hostname === "") throw new UsageError("--agent: the URL has no host");
  return `wss://${url.hostname}:${url.port === "" ? DEFAULT_AGENT_PORT : url.port}${CONSOLE_PATH}`;
}

/** A TLS server name for `--tls-server-name`: a DNS name (the agent certificate's SAN). */
export function parseServerName(text: string): string {
  if (text.length > 253 || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/i.test(text))
    throw new UsageError(`--tls-server-name: "${clip(text)}" is not a DNS name`);
  return text;
}

/** Runs the console's own request validation, so that dvctl never sends what the agent refuses. */
function validated<R extends MountRequest | UnmountRequest>(req: Unnumbered<R>): Unnumbered<R> {
  try {
    parseRequest(encodeRequest({ id: 1, ...req }));
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/"timeoutSeconds"/, "--timeout"));
  }
  return req;
}

export interface MountArgs {
  readonly target: string;
  readonly source: string;
  readonly name?: string;
  readonly readOnly?: boolean;
  /** Replace an existing mount of that name (`--replace`); sent as `replace: true`. */
  readonly replace?: boolean;
  readonly timeout?: string;
}

/** `mount NS/POD BUCKET[/PREFIX] [--name N] [--ro] [--replace] [--timeout S]` to a mount request. */
export function buildMountRequest(a: MountArgs): Unnumbered<MountRequest> {
  const ref = parsePodRef(a.target);
  const { bucket, prefix } = parseBucketRef(a.source);
  const name = a.name !== undefined ? parseMountName(a.name) : undefined;
  if (name === undefined && checkMountName(bucket) !== undefined)
    throw new UsageError(
      `bucket "${bucket}" cannot be a mount name (a DNS-1123 label); give one with --name, as in --name data`,
    );
  return validated<MountRequest>({
    op: "mount",
    ...ref,
    bucket,
    ...(prefix !== "" ? { prefix } : {}),
    ...(name !== undefined ? { name } : {}),
    ...(a.readOnly === true ? { readOnly: true } : {}),
    // Only when asked: an agent that predates the field refuses requests that carry it.
    ...(a.replace === true ? { replace: true } : {}),
    ...(a.timeout !== undefined ? { timeoutSeconds: parseTimeoutSeconds(a.timeout) } : {}),
  });
}

/** `umount NS/POD NAME [--timeout S]` to an unmount request. */
export function buildUnmountRequest(a: {
  target: string;
  name: string;
  timeout?: string;
}): Unnumbered<UnmountRequest> {
  return validated<UnmountRequest>({
    op: "unmount",
    ...parsePodRef(a.target),
    name: parseMountName(a.name),
    ...(a.timeout !== undefined ? { timeoutSeconds: parseTimeoutSeconds(a.timeout) } : {}),
  });
}

/**
 * Splits a console line into words: whitespace separates, single or double quotes group. There is
 * no escaping, no variables and no globbing: the words go to the same parser as the command line.
 */
export function splitWords(line: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  let quote: string | undefined;
  for (const ch of line) {
    if (quote !== undefined) {
      if (ch === quote) quote = undefined;
      else word += ch;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      word ??= "";
    } else if (/\s/.test(ch)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else word = (word ?? "") + ch;
  }
  if (quote !== undefined) throw new UsageError(`unterminated ${quote} quote`);
  if (word !== undefined) words.push(word);
  return words;
}

function clip(s: string, max = 60): string {
  const p = printable(s).replace(/[\t\n]/g, "?");
  return p.length > max ? `${p.slice(0, max)}…` : p;
}
