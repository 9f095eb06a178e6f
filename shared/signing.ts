/**
 * Per-pod ids and their signatures (DESIGN.md "Forgery"). The webhook mints and signs; the agent
 * verifies. Signature: lowercase hex HMAC-SHA256(key, "<namespace>/<id>").
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { POD_ID_PATTERN } from "./names.js";

/** 128 random bits as 32 lowercase hex digits. */
export function mintPodId(): string {
  return randomBytes(16).toString("hex");
}

export function signPodId(key: Uint8Array, namespace: string, id: string): string {
  return createHmac("sha256", key).update(`${namespace}/${id}`, "utf8").digest("hex");
}

/** Constant-time check that `signature` signs `<namespace>/<id>` and that `id` is well-formed. */
export function verifyPodId(key: Uint8Array, namespace: string, id: string, signature: string): boolean {
  if (!POD_ID_PATTERN.test(id) || !/^[0-9a-f]{64}$/.test(signature)) return false;
  const want = Buffer.from(signPodId(key, namespace, id), "hex");
  return timingSafeEqual(want, Buffer.from(signature, "hex"));
}

/** The key from a file's text: surrounding whitespace trimmed, UTF-8 bytes. */
export function signingKeyFromText(text: string): Buffer {
  return Buffer.from(text.trim(), "utf8");
}
