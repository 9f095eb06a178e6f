/**
 * Per-pod ids and their signatures (docs/design.md "Forgery"). The webhook mints and signs; the agent
 * verifies. Signature: lowercase hex HMAC-SHA256(key, "<namespace>/<id>"), the key being the key
 * file's text, trimmed, as UTF-8 bytes.
 */
import { createHmac, createSecretKey, randomBytes, timingSafeEqual, type KeyObject } from "node:crypto";
import { isPodId } from "./names.js";

/**
 * The id-signing key. The programs load it once as a secret KeyObject ({@link signingKeyObject});
 * raw bytes are accepted too, for tests and tools.
 */
export type SigningKey = KeyObject | Uint8Array;

/** 128 random bits as 32 lowercase hex digits. */
export function mintPodId(): string {
  return randomBytes(16).toString("hex");
}

/** Lowercase hex HMAC-SHA256 of the UTF-8 bytes of `message` under `key`. */
export function hmacSha256Hex(key: SigningKey, message: string): string {
  return createHmac("sha256", key).update(message, "utf8").digest("hex");
}

/** The signature of a pod id: {@link hmacSha256Hex} of `<namespace>/<id>`. */
export function signPodId(key: SigningKey, namespace: string, id: string): string {
  return hmacSha256Hex(key, `${namespace}/${id}`);
}

/** Constant-time check that `signature` signs `<namespace>/<id>` and that `id` is well-formed. */
export function verifyPodId(key: SigningKey, namespace: string, id: string, signature: string): boolean {
  if (!isPodId(id) || !/^[0-9a-f]{64}$/.test(signature)) return false;
  return timingSafeEqual(Buffer.from(signPodId(key, namespace, id), "hex"), Buffer.from(signature, "hex"));
}

/** The key's bytes from a file's text: surrounding whitespace trimmed, UTF-8. */
export function signingKeyFromText(text: string): Buffer {
  return Buffer.from(text.trim(), "utf8");
}

/** The key as a secret KeyObject, made once when it is loaded rather than on every signature. */
export function signingKeyObject(bytes: Uint8Array): KeyObject {
  return createSecretKey(bytes);
}
