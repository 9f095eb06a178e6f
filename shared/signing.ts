/**
 * Per-pod ids and their signatures (DESIGN.md "Forgery"). The webhook mints and signs; the agent
 * verifies. Signature: lowercase hex HMAC-SHA256(key, "<namespace>/<id>").
 */
import { hash, randomBytes, timingSafeEqual } from "node:crypto";
import { POD_ID_PATTERN } from "./names.js";

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

/**
 * HMAC-SHA256 (RFC 2104) as two one-shot hashes over the key's inner and outer pads, prepared once
 * per key. `createHmac` allocates a stream object backed by a native handle on every call, which the
 * garbage collector then has to finalize; the webhook signs once per admission, so this is its
 * hottest cryptographic step. The message is written into a buffer kept with the pads, and the
 * inner digest comes back as a "binary" (latin1) string rather than a Buffer: a Buffer made in
 * native code costs more than the hash itself. The test suite checks the result against
 * `createHmac` over many keys.
 */
const BLOCK = 64;
const DIGEST = 32;
/** Messages up to this many UTF-8 bytes use the buffer kept with the pads; longer ones are copied. */
const SCRATCH = 256;
interface Pads {
  /** The inner pad followed by room for the message. */
  readonly inner: Buffer;
  /** The outer pad followed by room for the inner digest. */
  readonly outer: Buffer;
}
const padsByKey = new WeakMap<Uint8Array, Pads>();

function pads(key: Uint8Array): Pads {
  let p = padsByKey.get(key);
  if (p === undefined) {
    const k = key.length > BLOCK ? hash("sha256", key, "buffer") : key;
    const inner = Buffer.alloc(BLOCK + SCRATCH);
    const outer = Buffer.alloc(BLOCK + DIGEST);
    inner.fill(0x36, 0, BLOCK);
    outer.fill(0x5c, 0, BLOCK);
    for (let i = 0; i < k.length; i++) {
      inner[i]! ^= k[i]!;
      outer[i]! ^= k[i]!;
    }
    p = { inner, outer };
    padsByKey.set(key, p);
  }
  return p;
}

export function hmacSha256Hex(key: Uint8Array, message: string): string {
  const { inner, outer } = pads(key);
  // A UTF-16 code unit is at most 3 UTF-8 bytes, so a message this short always fits whole.
  const innerInput =
    message.length * 3 <= SCRATCH
      ? inner.subarray(0, BLOCK + inner.write(message, BLOCK, "utf8"))
      : Buffer.concat([inner.subarray(0, BLOCK), Buffer.from(message, "utf8")]);
  outer.write(hash("sha256", innerInput, "binary"), BLOCK, "latin1");
  return hash("sha256", outer, "hex");
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
