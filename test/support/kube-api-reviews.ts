/**
 * TokenReview and (Local/Self)SubjectAccessReview as the fake API server answers them: from a table of
 * tokens and an authorizer function. Nothing is stored, as upstream.
 */
import { apiVersionOf, kindOf, type KubeObject, type ResourceRef } from "./kube-resources.js";

export interface TokenReviewUser {
  readonly username: string;
  readonly uid?: string;
  readonly groups?: readonly string[];
  /** Audiences the token is valid for; when omitted, whatever the review asks for. */
  readonly audiences?: readonly string[];
}

export interface SubjectAccessReviewSpec {
  readonly user?: string;
  readonly uid?: string;
  readonly groups?: readonly string[];
  readonly resourceAttributes?: {
    readonly namespace?: string;
    readonly verb?: string;
    readonly group?: string;
    readonly resource?: string;
    readonly subresource?: string;
    readonly name?: string;
  };
  readonly nonResourceAttributes?: { readonly path?: string; readonly verb?: string };
}

export type Authorizer = (
  spec: SubjectAccessReviewSpec,
) => boolean | { allowed: boolean; denied?: boolean; reason?: string };

/** The user a SelfSubjectAccessReview is asked for: the fake's own client. */
export const FAKE_ADMIN = "fake-admin";

/** True for the review resources that {@link answerReview} handles. */
export function isReview(ref: ResourceRef): boolean {
  return (
    /reviews$/.test(ref.resource) && /^\/apis\/(authentication|authorization)\.k8s\.io\//.test(ref.apiPath)
  );
}

/** The posted review with its `status` filled in. */
export function answerReview(
  ref: ResourceRef,
  body: KubeObject,
  tokens: Readonly<Record<string, TokenReviewUser>>,
  authorizer: Authorizer,
): KubeObject {
  const spec = (body.spec ?? {}) as Record<string, unknown>;
  const base = { apiVersion: apiVersionOf(ref.apiPath), kind: kindOf(ref.resource), metadata: {}, spec };
  if (ref.resource === "tokenreviews") {
    const user = tokens[String(spec.token)];
    const wanted = (spec.audiences as string[] | undefined) ?? [];
    const audiences =
      user?.audiences === undefined ? wanted : wanted.filter((a) => user.audiences!.includes(a));
    if (user === undefined || (wanted.length > 0 && audiences.length === 0))
      return { ...base, status: { authenticated: false, error: "invalid bearer token" } };
    return {
      ...base,
      status: {
        authenticated: true,
        user: {
          username: user.username,
          ...(user.uid ? { uid: user.uid } : {}),
          groups: [...(user.groups ?? [])],
        },
        audiences,
      },
    };
  }
  const asked = (
    ref.resource === "selfsubjectaccessreviews" ? { ...spec, user: FAKE_ADMIN } : spec
  ) as SubjectAccessReviewSpec;
  if (ref.resource === "localsubjectaccessreviews" && asked.resourceAttributes)
    (asked.resourceAttributes as { namespace?: string }).namespace = ref.namespace;
  const decision = authorizer(asked);
  return { ...base, status: typeof decision === "boolean" ? { allowed: decision } : decision };
}
