/** A bound on JSON nesting, checked before a parse: `JSON.parse` recurses, and deep input costs it dearly. */

/**
 * Whether the JSON text in `bytes` (UTF-8) nests arrays and objects deeper than `max`. One linear
 * scan that skips strings, meant to run before the parse; it stops at the first level too deep.
 * In UTF-8 the bytes of `"`, `\`, brackets and braces never occur inside a multi-byte character.
 */
export function nestsDeeperThan(bytes: Uint8Array, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (inString) {
      // A backslash escapes the byte after it, a quote among them.
      if (b === 0x5c) i++;
      else if (b === 0x22) inString = false;
    } else if (b === 0x22) inString = true;
    else if (b === 0x5b || b === 0x7b) {
      if (++depth > max) return true;
    } else if (b === 0x5d || b === 0x7d) depth--;
  }
  return false;
}
