/**
 * Who may use the console (docs/design.md "Websocket console protocol", "Local mode").
 *
 * - In a cluster: TokenReview authenticates the bearer token (audiences configurable) and
 *   SubjectAccessReview authorizes each request: `mount`/`unmount` need `patch pods`,
 *   `list`/`status`/`watch` need `get pods`, in the target namespace. Both answers are cached briefly.
 * - In local mode: a kube-apiserver static token file; a listed token may do everything.
 *
 * Anonymous users are always refused. Tokens are never logged, and never kept as cache keys.
 * The Kubernetes API clients are passed in (`kubernetesAuth` in main builds them), so this module
 * only imports their types.
 */
import { createHash } from "node:crypto";
import type { AuthenticationV1Api, AuthorizationV1Api } from "@kubernetes/client-node";
import { AppError, ConfigError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";

export interface UserInfo {
  readonly username: string;
  readonly uid?: string;
  readonly groups: readonly string[];
  readonly extra?: Readonly<Record<string, string[]>>;
}

export interface Authenticator {
  /**
   * The user a bearer token belongs to, or undefined when it is refused (unknown, expired, wrong
   * audience, anonymous). Throws AppError("Unavailable") when the answer cannot be had now.
   */
  authenticate(token: string): Promise<UserInfo | undefined>;
}

/** The verbs on `pods` that console operations need. */
export type PodVerb = "get" | "patch";

export interface AuthzDecision {
  readonly allowed: boolean;
  readonly reason?: string;
}

export interface Authorizer {
  /** May `user` do `verb` on pods in `namespace`? Throws AppError("Unavailable") when unknown now. */
  authorize(user: UserInfo, verb: PodVerb, namespace: string): Promise<AuthzDecision>;
}

/** Kubernetes' anonymous identity, which the console never serves. */
export function isAnonymous(user: UserInfo): boolean {
  return (
    user.username === "" ||
    user.username === "system:anonymous" ||
    user.groups.includes("system:unauthenticated")
  );
}

/** A small TTL cache with a size bound (oldest entries go first) that also merges concurrent lookups. */
export class TtlCache<V> {
  private readonly entries = new Map<string, { value: V; expires: number }>();
  private readonly inflight = new Map<string, Promise<V>>();

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries: number,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** The cached value, or the result of `load` (cached unless it throws). */
  async get(key: string, load: () => Promise<V>): Promise<V> {
    const hit = this.entries.get(key);
    if (hit !== undefined && hit.expires > this.now()) return hit.value;
    if (hit !== undefined) this.entries.delete(key);
    const pending = this.inflight.get(key);
    if (pending !== undefined) return pending;
    const p = load().then(
      (value) => {
        this.inflight.delete(key);
        this.entries.set(key, { value, expires: this.now() + this.ttlMs });
        while (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
        return value;
      },
      (e: unknown) => {
        this.inflight.delete(key);
        throw e;
      },
    );
    this.inflight.set(key, p);
    return p;
  }
}

/** Cache keys hold a hash of the token, so that a heap dump of the agent does not list tokens. */
function tokenKey(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

export interface CacheOptions {
  /** How long an answer is reused, in ms. Default 10 s. */
  readonly ttlMs?: number;
  /** Most answers kept. Default 4096. */
  readonly maxEntries?: number;
  readonly now?: () => number;
}

export type TokenReviewApi = Pick<AuthenticationV1Api, "createTokenReview">;
export type SubjectAccessReviewApi = Pick<AuthorizationV1Api, "createSubjectAccessReview">;

function apiUnavailable(what: string, e: unknown): AppError {
  const code = (e as { code?: unknown }).code;
  return new AppError(
    "Unavailable",
    `the agent could not ask the Kubernetes API for a ${what}${typeof code === "number" ? ` (HTTP ${code})` : ""}; try again, and check the agent's RBAC (create tokenreviews and subjectaccessreviews)`,
    { cause: e },
  );
}

/** TokenReview. `audiences`, when non-empty, must be confirmed by the API server. */
export class TokenReviewAuthenticator implements Authenticator {
  private readonly cache: TtlCache<UserInfo | undefined>;

  constructor(
    private readonly api: TokenReviewApi,
    private readonly opts: CacheOptions & { readonly audiences?: readonly string[]; readonly log: Logger },
  ) {
    this.cache = new TtlCache(opts.ttlMs ?? 10_000, opts.maxEntries ?? 4096, opts.now);
  }

  async authenticate(token: string): Promise<UserInfo | undefined> {
    if (token === "") return undefined;
    return this.cache.get(tokenKey(token), () => this.review(token));
  }

  private async review(token: string): Promise<UserInfo | undefined> {
    const audiences = [...(this.opts.audiences ?? [])];
    let status;
    try {
      const review = await this.api.createTokenReview({
        body: {
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenReview",
          spec: { token, ...(audiences.length > 0 ? { audiences } : {}) },
        },
      });
      status = review.status;
    } catch (e) {
      throw apiUnavailable("TokenReview", e);
    }
    if (status?.authenticated !== true || status.user?.username === undefined) return undefined;
    // An API server that ignores audiences returns none; the token must not pass then.
    if (audiences.length > 0 && !(status.audiences ?? []).some((a) => audiences.includes(a)))
      return undefined;
    const u = status.user;
    const user: UserInfo = {
      username: u.username ?? "",
      ...(u.uid !== undefined ? { uid: u.uid } : {}),
      groups: u.groups ?? [],
      ...(u.extra !== undefined ? { extra: u.extra } : {}),
    };
    return isAnonymous(user) ? undefined : user;
  }
}

/** SubjectAccessReview on `pods` (core group) in the target namespace. */
export class SubjectAccessReviewAuthorizer implements Authorizer {
  private readonly cache: TtlCache<AuthzDecision>;

  constructor(
    private readonly api: SubjectAccessReviewApi,
    opts: CacheOptions = {},
  ) {
    this.cache = new TtlCache(opts.ttlMs ?? 10_000, opts.maxEntries ?? 4096, opts.now);
  }

  async authorize(user: UserInfo, verb: PodVerb, namespace: string): Promise<AuthzDecision> {
    if (isAnonymous(user)) return { allowed: false, reason: "anonymous users are refused" };
    const key = JSON.stringify([
      user.username,
      user.uid,
      [...user.groups].sort(),
      user.extra,
      verb,
      namespace,
    ]);
    return this.cache.get(key, async () => {
      let status;
      try {
        const review = await this.api.createSubjectAccessReview({
          body: {
            apiVersion: "authorization.k8s.io/v1",
            kind: "SubjectAccessReview",
            spec: {
              user: user.username,
              ...(user.uid !== undefined ? { uid: user.uid } : {}),
              groups: [...user.groups],
              ...(user.extra !== undefined ? { extra: { ...user.extra } } : {}),
              resourceAttributes: { namespace, verb, group: "", resource: "pods" },
            },
          },
        });
        status = review.status;
      } catch (e) {
        throw apiUnavailable("SubjectAccessReview", e);
      }
      return {
        allowed: status?.allowed === true && status.denied !== true,
        ...(status?.reason ? { reason: status.reason } : {}),
      };
    });
  }
}

export interface StaticToken {
  readonly token: string;
  readonly user: UserInfo;
}

/**
 * Parses a kube-apiserver static token file: one `token,user,uid[,"group1,group2"]` CSV line per
 * token; blank lines and `#` comments are skipped. A repeated token: the later line wins, as in
 * the kube-apiserver, with a warning. Throws ConfigError naming the line (never the token).
 */
export function parseTokenAuthFile(
  text: string,
  what = "token file",
): {
  tokens: StaticToken[];
  warnings: string[];
} {
  const byToken = new Map<string, StaticToken>();
  const warnings: string[] = [];
  text
    .replace(/^\uFEFF/, "")
    .split(/\r?\n/)
    .forEach((line, i) => {
      if (line.trim() === "" || line.trimStart().startsWith("#")) return;
      const where = `${what} line ${i + 1}`;
      const fields = parseCsvLine(line, where).map((f) => f.trim());
      if (fields.length < 3)
        throw new ConfigError(
          `${where}: expected token,user,uid[,"group1,group2"], found ${fields.length} field(s)`,
        );
      const [token, username, uid, groups] = fields as [string, string, string, string | undefined];
      if (token === "") throw new ConfigError(`${where}: the token is empty`);
      if (username === "") throw new ConfigError(`${where}: the user name is empty`);
      const user: UserInfo = {
        username,
        ...(uid !== "" ? { uid } : {}),
        groups: (groups ?? "")
          .split(",")
          .map((g) => g.trim())
          .filter((g) => g !== ""),
      };
      if (isAnonymous(user))
        throw new ConfigError(`${where}: user "${username}" is anonymous; the console refuses it`);
      if (byToken.has(token)) warnings.push(`${where}: the token repeats an earlier line; this line wins`);
      byToken.set(token, { token, user });
    });
  return { tokens: [...byToken.values()], warnings };
}

/** Splits one RFC 4180 line: fields in double quotes may hold commas, and `""` stands for `"`. */
function parseCsvLine(line: string, where: string): string[] {
  const out: string[] = [];
  let i = 0;
  for (;;) {
    let field = "";
    if (line[i] === '"') {
      i++;
      for (;;) {
        if (i >= line.length) throw new ConfigError(`${where}: a quoted field is not closed`);
        if (line[i] === '"') {
          if (line[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        field += line[i++];
      }
      if (i < line.length && line[i] !== ",") throw new ConfigError(`${where}: text after a closing quote`);
    } else {
      const end = line.indexOf(",", i);
      field = line.slice(i, end < 0 ? line.length : end);
      if (field.includes('"')) throw new ConfigError(`${where}: a quote inside an unquoted field`);
      i = end < 0 ? line.length : end;
    }
    out.push(field);
    if (i >= line.length) return out;
    i++; // the comma
  }
}

/** Local mode: the tokens of a static token file, compared by hash so lookups take the same time. */
export class StaticTokenAuthenticator implements Authenticator {
  private readonly users = new Map<string, UserInfo>();

  constructor(tokens: readonly StaticToken[]) {
    for (const t of tokens) this.users.set(tokenKey(t.token), t.user);
  }

  async authenticate(token: string): Promise<UserInfo | undefined> {
    if (token === "") return undefined;
    return this.users.get(tokenKey(token));
  }
}

/** Local mode: every authenticated (listed, non-anonymous) user may do everything. */
export class AuthenticatedUserAuthorizer implements Authorizer {
  async authorize(user: UserInfo): Promise<AuthzDecision> {
    return isAnonymous(user) ? { allowed: false, reason: "anonymous users are refused" } : { allowed: true };
  }
}
