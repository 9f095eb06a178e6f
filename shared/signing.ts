/**
 * Per-pod ids and their signatures (DESIGN.md "Forgery"). The webhook mints and signs; the agent
 * verifies. Signature: lowercase hex HMAC-SHA256(key, "<namespace>/<id>").
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import { POD_ID_PATTERN } from "./names.js";
import { hmacSha256Hex } from "./sha256.js";

// Ids are drawn from a pool refilled 256 at a time: one randomBytes call per admission costs more
// than the rest of the id's handling.
const POOL_IDS = 256;
let pool = Buffer.alloc(0);
let poolOffset = 0;

/** 128 random bits as 32 lowercase hex digits. */
export function mintPodId(): string {
  if (poolOffset >= pool.length) {
    pool = randomBytes(16 * POOL_IDS);
    poolOffset = 0;
  }
  const id = pool.toString("hex", poolOffset, poolOffset + 16);
  // Each id's bytes are used once and then wiped from the pool.
  pool.fill(0, poolOffset, poolOffset + 16);
  poolOffset += 16;
  return id;
}

export function signPodId(key: Uint8Array, namespace: string, id: string): string {
  return hmacSha256Hex(key, `${namespace}/${id}`);
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
