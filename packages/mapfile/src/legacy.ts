import { ArchipelagoError } from '@archipelago/libxseg';
import { corruptMap } from './errors.js';
import {
  DEFAULT_BLOCKSIZE,
  MapFlag,
  ObjFlag,
  V0_ENTRY_SIZE,
  V1_ENTRY_SIZE,
  V1_HEADER_SIZE,
  ZERO_BLOCK,
} from './format.js';
import { stripTrailingZeros } from './hash.js';
import { objectCount } from './header.js';
import type { MapEntry, MapHeader } from './types.js';

const DIGEST_LEN = 32;
const ARCHIP_PREFIX = 'archip_';

/** Lowercase hex of the digest at `at`; the shared ZERO_BLOCK string when it is the zero hash. */
function digestName(obj: Buffer, at: number): string {
  const hex = obj.toString('hex', at, at + DIGEST_LEN);
  return hex === ZERO_BLOCK ? ZERO_BLOCK : hex;
}

/**
 * Decodes a whole v1 map object: little-endian header {u32 version = 1, u64 size}, then one 33-byte
 * entry {u8 flag, 32-byte digest} per object. Flag != 0 → `archip_<hex>` WRITABLE|ARCHIP;
 * flag 0 → `<hex>` (ZERO for the zero hash). The object must hold exactly ceil(size / 4 MiB) entries;
 * zero bytes after them are allowed (blockers zero-fill), anything else is ECORRUPT_MAP.
 */
export function decodeV1(obj: Buffer, volume: string): { header: MapHeader; entries: MapEntry[] } {
  if (obj.length < V1_HEADER_SIZE) {
    throw corruptMap(
      volume,
      'truncated-header',
      `truncated v1 header (${obj.length} bytes, need ${V1_HEADER_SIZE})`,
      { length: obj.length },
    );
  }
  const version = obj.readUInt32LE(0);
  if (version !== 1) {
    throw corruptMap(volume, 'bad-version', `v1 header carries version ${version}, expected 1`, { version });
  }
  const bigSize = obj.readBigUInt64LE(4);
  if (bigSize > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw corruptMap(volume, 'bad-size', `size ${bigSize} is larger than ${Number.MAX_SAFE_INTEGER}`, {
      size: bigSize.toString(),
    });
  }
  const size = Number(bigSize);
  const n = objectCount(size, DEFAULT_BLOCKSIZE);
  const end = V1_HEADER_SIZE + n * V1_ENTRY_SIZE;
  const present = Math.floor((obj.length - V1_HEADER_SIZE) / V1_ENTRY_SIZE);
  if (present < n) {
    throw corruptMap(
      volume,
      'entry-count-mismatch',
      `entry count does not match size: size ${size} needs ${n} entries, the object holds only ${present}`,
      { size, expected: n, found: present },
    );
  }
  const rest = stripTrailingZeros(obj.subarray(end));
  if (rest.length > 0) {
    const found = n + Math.ceil(rest.length / V1_ENTRY_SIZE);
    throw corruptMap(
      volume,
      'entry-count-mismatch',
      `entry count does not match size: size ${size} needs ${n} entries, the object holds ${found}`,
      { size, expected: n, found },
    );
  }
  const entries = new Array<MapEntry>(n);
  for (let i = 0; i < n; i++) {
    const at = V1_HEADER_SIZE + i * V1_ENTRY_SIZE;
    if (obj[at] !== 0) {
      entries[i] = {
        name: ARCHIP_PREFIX + obj.toString('hex', at + 1, at + 1 + DIGEST_LEN),
        flags: ObjFlag.WRITABLE | ObjFlag.ARCHIP,
      };
    } else {
      const name = digestName(obj, at + 1);
      entries[i] = { name, flags: name === ZERO_BLOCK ? ObjFlag.ZERO : 0 };
    }
  }
  return { header: { version: 1, size, blocksize: DEFAULT_BLOCKSIZE, flags: 0, epoch: 0n }, entries };
}

/** True when the 32 bytes at `at` are all zero. */
function isZeroDigest(obj: Buffer, at: number): boolean {
  for (let i = at; i < at + DIGEST_LEN; i++) if (obj[i] !== 0) return false;
  return true;
}

/**
 * Decodes a whole v0 (Pithos hashmap) object: raw 32-byte SHA-256 digests up to the first all-zero
 * digest or the end. The map is READONLY, epoch 0, blocksize 4 MiB; its size is `v0Size` when given
 * (then ceil(v0Size / 4 MiB) must equal the number of digests, else ECORRUPT_MAP), otherwise
 * digests * 4 MiB. A trailing partial digest with non-zero bytes is ECORRUPT_MAP.
 */
export function decodeV0(
  obj: Buffer,
  volume: string,
  v0Size?: number,
): { header: MapHeader; entries: MapEntry[] } {
  if (v0Size !== undefined && (!Number.isSafeInteger(v0Size) || v0Size < 0)) {
    throw new ArchipelagoError(
      'EINVAL_SIZE',
      `v0 size ${v0Size} for "${volume}" is not a non-negative integer`,
      {
        details: { volume, v0Size },
      },
    );
  }
  const whole = Math.floor(obj.length / V0_ENTRY_SIZE);
  let n = 0;
  while (n < whole && !isZeroDigest(obj, n * V0_ENTRY_SIZE)) n++;
  if (n === whole) {
    const tail = obj.subarray(whole * V0_ENTRY_SIZE);
    if (stripTrailingZeros(tail).length > 0) {
      throw corruptMap(
        volume,
        'truncated-entry',
        `truncated v0 entry at offset ${whole * V0_ENTRY_SIZE} (${tail.length} of ${V0_ENTRY_SIZE} bytes)`,
        { index: whole, length: obj.length },
      );
    }
  }
  let size = n * DEFAULT_BLOCKSIZE;
  if (v0Size !== undefined) {
    const expected = objectCount(v0Size, DEFAULT_BLOCKSIZE);
    if (expected !== n) {
      throw corruptMap(
        volume,
        'entry-count-mismatch',
        `entry count does not match size: v0 size ${v0Size} needs ${expected} entries, the hashmap holds ${n}`,
        { size: v0Size, expected, found: n },
      );
    }
    size = v0Size;
  }
  const entries = new Array<MapEntry>(n);
  for (let i = 0; i < n; i++) {
    const name = digestName(obj, i * V0_ENTRY_SIZE);
    entries[i] = { name, flags: name === ZERO_BLOCK ? ObjFlag.ZERO : 0 };
  }
  return {
    header: { version: 0, size, blocksize: DEFAULT_BLOCKSIZE, flags: MapFlag.READONLY, epoch: 0n },
    entries,
  };
}
