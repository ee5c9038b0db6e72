/**
 * Trailing-zero stripping for the Pithos block hash (reference §2.7). A copy of the idea in
 * @archipelago/mapfile (this package does not depend on it): whole zero runs are skipped 64 KiB
 * at a time with a native compare, the rest byte by byte.
 */
const PROBE = 64 * 1024;
const SMALL = 256;
const ZEROS = Buffer.alloc(PROBE);

/** `block` without its trailing 0x00 bytes, as a subarray (no copy). */
export function stripTrailingZeros(block: Uint8Array): Uint8Array {
  const b = Buffer.from(block.buffer, block.byteOffset, block.byteLength);
  let end = b.length;
  while (end >= PROBE && b.compare(ZEROS, 0, PROBE, end - PROBE, end) === 0) end -= PROBE;
  while (end >= SMALL && b.compare(ZEROS, 0, SMALL, end - SMALL, end) === 0) end -= SMALL;
  while (end > 0 && b[end - 1] === 0) end--;
  return block.subarray(0, end);
}
