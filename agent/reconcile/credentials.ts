/**
 * Turning the pod's credentials Secret into what a mounter needs (pure). Tenants are namespaces:
 * the Secret is always read from the pod's own namespace.
 */
import { AppError, publicMessage } from "../../shared/errors.js";
import { SECRET_KEYS } from "../../shared/names.js";
import { checkEndpoint } from "../mount/mounters/validate.js";

export interface BucketCredentials {
  readonly endpoint: string;
  readonly region: string;
  readonly accessKeyID: string;
  readonly secretAccessKey: string;
}

/**
 * Checks a Secret's decoded data. Throws AppError naming the missing or bad key, never echoing a
 * value; the mounter's own checks (`mounters/validate.ts`) cover region and key characters.
 */
export function credentialsFromSecret(
  data: Record<string, string> | undefined,
  what: string,
): BucketCredentials {
  if (data === undefined)
    throw new AppError(
      "NotFound",
      `Secret ${what} not found; create it in the pod's namespace with the keys ${Object.values(SECRET_KEYS).join(", ")}`,
    );
  const missing = [SECRET_KEYS.endpoint, SECRET_KEYS.accessKeyID, SECRET_KEYS.secretAccessKey].filter(
    (k) => (data[k] ?? "").trim() === "",
  );
  if (missing.length > 0)
    throw new AppError(
      "InvalidArgument",
      `Secret ${what} lacks the key${missing.length > 1 ? "s" : ""} ${missing.join(", ")}`,
    );
  const endpoint = data[SECRET_KEYS.endpoint]!.trim();
  try {
    checkEndpoint(endpoint);
  } catch (e) {
    // The message reaches the pod's status: only an AppError's is written for users.
    throw new AppError(
      "InvalidArgument",
      `Secret ${what}: key ${SECRET_KEYS.endpoint}: ${publicMessage(e)}`,
      {
        cause: e,
      },
    );
  }
  const region = (data[SECRET_KEYS.region] ?? "").trim();
  const accessKeyID = data[SECRET_KEYS.accessKeyID]!.trim();
  const secretAccessKey = data[SECRET_KEYS.secretAccessKey]!.trim();
  return { endpoint, region, accessKeyID, secretAccessKey };
}
