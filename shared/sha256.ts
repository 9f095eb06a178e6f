/**
 * SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104) for short messages, in plain JavaScript.
 *
 * Why not `node:crypto`: the webhook signs one id per admission. Measured inside the running
 * webhook under load, the native path (binding, OpenSSL's digest dispatch) cost about 5% of the
 * server's CPU per admission, several times its cost in a tight loop, because every request reaches
 * it with cold caches. This code is a few small functions over typed arrays, starts from the key's
 * inner and outer states computed once per key, and so hashes two or three 64-byte blocks per
 * signature. Nothing in it branches on the key or indexes a table with it. The test suite checks it
 * against `createHash`, `createHmac`, the FIPS 180-4 examples and the RFC 4231 vectors.
 */
const BLOCK = 64;

// prettier-ignore
const K = Int32Array.from([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
// prettier-ignore
const IV = Int32Array.from([
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
]);

/** The message schedule, reused by every call (JavaScript runs one call at a time). */
const W = new Int32Array(64);

/** Folds the 64-byte block at `bytes[offset]` into `state` (FIPS 180-4 §6.2.2). */
function compress(state: Int32Array, bytes: Uint8Array, offset: number): void {
  for (let i = 0; i < 16; i++) {
    const j = offset + i * 4;
    W[i] = (bytes[j]! << 24) | (bytes[j + 1]! << 16) | (bytes[j + 2]! << 8) | bytes[j + 3]!;
  }
  for (let i = 16; i < 64; i++) {
    const x = W[i - 15]!;
    const y = W[i - 2]!;
    const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
    const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
    W[i] = (W[i - 16]! + s0 + W[i - 7]! + s1) | 0;
  }
  let a = state[0]!;
  let b = state[1]!;
  let c = state[2]!;
  let d = state[3]!;
  let e = state[4]!;
  let f = state[5]!;
  let g = state[6]!;
  let h = state[7]!;
  for (let i = 0; i < 64; i++) {
    const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (h + S1 + ((e & f) ^ (~e & g)) + K[i]! + W[i]!) | 0;
    const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    h = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  state[0] = (state[0]! + a) | 0;
  state[1] = (state[1]! + b) | 0;
  state[2] = (state[2]! + c) | 0;
  state[3] = (state[3]! + d) | 0;
  state[4] = (state[4]! + e) | 0;
  state[5] = (state[5]! + f) | 0;
  state[6] = (state[6]! + g) | 0;
  state[7] = (state[7]! + h) | 0;
}

/**
 * Pads the `length` message bytes at the start of `buf` (FIPS 180-4 §5.1.1), counting `prefixBytes`
 * already hashed before them, and returns the padded length, a multiple of 64. `buf` must have room.
 * Plain loops rather than `fill`: see hmacSha256Hex.
 */
function pad(buf: Uint8Array, length: number, prefixBytes: number): number {
  const end = paddedLength(length);
  buf[length] = 0x80;
  for (let i = length + 1; i < end - 4; i++) buf[i] = 0;
  // Bit length as 64 bits, big-endian; messages here stay far below 2^29 bytes, so the high word is 0.
  const bits = (prefixBytes + length) * 8;
  buf[end - 4] = bits >>> 24;
  buf[end - 3] = bits >>> 16;
  buf[end - 2] = bits >>> 8;
  buf[end - 1] = bits;
  return end;
}

/** The length of `length` message bytes padded: a 0x80 byte and 8 length bytes, rounded up to a block. */
function paddedLength(length: number): number {
  return Math.ceil((length + 9) / BLOCK) * BLOCK;
}

/** SHA-256 of `bytes`. */
export function sha256(bytes: Uint8Array): Uint8Array {
  const state = IV.slice();
  const buf = new Uint8Array(paddedLength(bytes.length));
  buf.set(bytes);
  const end = pad(buf, bytes.length, 0);
  for (let o = 0; o < end; o += BLOCK) compress(state, buf, o);
  return stateBytes(state, new Uint8Array(32));
}

/** Writes the 32-byte digest held in `state` to the start of `out`. */
function stateBytes(state: Int32Array, out: Uint8Array): Uint8Array {
  for (let i = 0; i < 8; i++) {
    const v = state[i]!;
    out[i * 4] = v >>> 24;
    out[i * 4 + 1] = v >>> 16;
    out[i * 4 + 2] = v >>> 8;
    out[i * 4 + 3] = v;
  }
  return out;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** The key's states after its inner and outer pad blocks (RFC 2104), computed once per key. */
interface KeyStates {
  readonly inner: Int32Array;
  readonly outer: Int32Array;
}
const statesByKey = new WeakMap<Uint8Array, KeyStates>();

function keyStates(key: Uint8Array): KeyStates {
  let s = statesByKey.get(key);
  if (s === undefined) {
    const k = key.length > BLOCK ? sha256(key) : key;
    const ipad = new Uint8Array(BLOCK).fill(0x36);
    const opad = new Uint8Array(BLOCK).fill(0x5c);
    for (let i = 0; i < k.length; i++) {
      ipad[i]! ^= k[i]!;
      opad[i]! ^= k[i]!;
    }
    const inner = IV.slice();
    const outer = IV.slice();
    compress(inner, ipad, 0);
    compress(outer, opad, 0);
    ipad.fill(0);
    opad.fill(0);
    s = { inner, outer };
    statesByKey.set(key, s);
  }
  return s;
}

/** Room for messages up to 183 bytes and their padding; longer ones get their own buffer. */
const SCRATCH = new Uint8Array(3 * BLOCK);
const STATE = new Int32Array(8);

/**
 * Writes the UTF-8 bytes of `message` to a buffer with room for the padding, and returns the
 * buffer and the byte count. An ASCII message, which every `<namespace>/<id>` is, is copied by a
 * plain loop into SCRATCH. Loops instead of native calls here and in pad (a Buffer's `write` and
 * `fill`, a typed array's `set`) halved the signature's time inside the loaded webhook, from about
 * 5 µs to 2.5 µs per admission: that code is cold by the next request.
 */
function messageBytes(message: string): { buf: Uint8Array; length: number } {
  const n = message.length;
  if (n + 9 <= SCRATCH.length) {
    let i = 0;
    for (; i < n; i++) {
      const c = message.charCodeAt(i);
      if (c >= 0x80) break;
      SCRATCH[i] = c;
    }
    if (i === n) return { buf: SCRATCH, length: n };
  }
  const bytes = Buffer.from(message, "utf8");
  const buf = bytes.length + 9 <= SCRATCH.length ? SCRATCH : new Uint8Array(paddedLength(bytes.length));
  buf.set(bytes);
  return { buf, length: bytes.length };
}

/** Lowercase hex HMAC-SHA256 of the UTF-8 bytes of `message` under `key`. */
export function hmacSha256Hex(key: Uint8Array, message: string): string {
  const { inner, outer } = keyStates(key);
  const { buf, length } = messageBytes(message);
  for (let i = 0; i < 8; i++) STATE[i] = inner[i]!;
  const end = pad(buf, length, BLOCK);
  for (let o = 0; o < end; o += BLOCK) compress(STATE, buf, o);
  // The outer hash: its pad block is in `outer`; then the inner digest and padding, one block.
  stateBytes(STATE, buf);
  pad(buf, 32, BLOCK);
  for (let i = 0; i < 8; i++) STATE[i] = outer[i]!;
  compress(STATE, buf, 0);
  for (let i = 0; i < end; i++) buf[i] = 0;
  let hex = "";
  for (let i = 0; i < 8; i++) {
    const v = STATE[i]!;
    hex += HEX[v >>> 24]! + HEX[(v >>> 16) & 255]! + HEX[(v >>> 8) & 255]! + HEX[v & 255]!;
  }
  return hex;
}
