import * as crypto from 'node:crypto';
import { ZERO_BLOCK } from './format.js';

/** One-shot SHA-256 (crypto.hash where available, Node >= 20.12; createHash otherwise). */
const sha256: (data: Uint8Array) => Buffer =
  typeof crypto.hash === 'function'
    ? (data) => crypto.hash('sha256', data, 'buffer')
    : (data) => crypto.createHash('sha256').update(data).digest();

/** Width of the zero-run probe; each all-zero probe is skipped with one native memcmp. */
const PROBE = 64 * 1024;
const ZERO_PROBE = new Uint8Array(PROBE);

/**
 * Returns `block` without its trailing 0x00 bytes, as a subarray (no copy). Whole zero runs are
 * skipped PROBE bytes at a time with a native compare against a zero buffer; the rest is scanned
 * backwards 8 bytes at a time through an aligned BigUint64Array view, then byte by byte.
 */
export function stripTrailingZeros(block: Uint8Array): Uint8Array {
  let end = block.length;
  while (end >= PROBE && Buffer.compare(block.subarray(end - PROBE, end), ZERO_PROBE) === 0) end -= PROBE;
  const base = block.byteOffset;
  // Single bytes until the absolute end address is 8-aligned.
  while (end > 0 && ((base + end) & 7) !== 0) {
    if (block[end - 1] !== 0) return block.subarray(0, end);
    end--;
  }
  // Whole aligned 64-bit words [firstWord, lastWord) of the underlying buffer.
  const firstWord = Math.ceil(base / 8);
  const lastWord = (base + end) / 8;
  if (lastWord > firstWord) {
    const words = new BigUint64Array(block.buffer, firstWord * 8, lastWord - firstWord);
    let w = words.length;
    while (w > 0 && words[w - 1] === 0n) w--;
    end = (firstWord + w) * 8 - base;
    if (w > 0) {
      // The last non-zero byte lies in the word that ends at `end`.
      while (block[end - 1] === 0) end--;
      return block.subarray(0, end);
    }
  }
  // Up to 7 unaligned leading bytes.
  while (end > 0 && block[end - 1] === 0) end--;
  return block.subarray(0, end);
}

/**
 * Pithos block hash: lowercase hex SHA-256 of the block with trailing 0x00 bytes stripped.
 * An all-zero (or empty) block hashes to ZERO_BLOCK.
 */
export function pithosBlockHash(block: Uint8Array): string {
  const data = stripTrailingZeros(block);
  if (data.length === 0) return ZERO_BLOCK;
  return sha256(data).toString('hex');
}

const HEX = /^[0-9a-fA-F]*$/;

/**
 * Pithos top-level hash (Merkle root) of a list of hex block hashes: SHA-256("") for none, the only
 * hash for one; otherwise the leaves are padded with all-zero `hashlen`-byte leaves up to the next
 * power of two (>= 2) and each level is the SHA-256 of each pair of raw digests concatenated.
 */
export function merkleRoot(hexHashes: readonly string[], hashlen = 32): string {
  if (!Number.isSafeInteger(hashlen) || hashlen < 1)
    throw new RangeError(`merkleRoot: bad hashlen ${hashlen}`);
  const n = hexHashes.length;
  for (let i = 0; i < n; i++) {
    const h = hexHashes[i];
    if (typeof h !== 'string' || h.length !== hashlen * 2 || !HEX.test(h)) {
      throw new TypeError(`merkleRoot: hash ${i} is not ${hashlen * 2} hex characters`);
    }
  }
  if (n === 0) return ZERO_BLOCK;
  if (n === 1) return hexHashes[0]!.toLowerCase();
  let width = 2;
  while (width < n) width *= 2;
  // All leaves in one buffer; the zero padding leaves are already there.
  let level = Buffer.alloc(width * hashlen);
  for (let i = 0; i < n; i++) level.write(hexHashes[i]!, i * hashlen, 'hex');
  let nodeLen = hashlen;
  while (width > 1) {
    const next = Buffer.allocUnsafe((width / 2) * 32);
    for (let i = 0; i < width; i += 2) {
      const pair = level.subarray(i * nodeLen, (i + 2) * nodeLen);
      sha256(pair).copy(next, (i / 2) * 32);
    }
    level = next;
    nodeLen = 32;
    width /= 2;
  }
  return level.toString('hex');
}
