import { corruptMap } from './errors.js';
import {
  AMF_SIGNATURE,
  AMF_VERSION,
  ENTRY_V2_SIZE,
  HEADER_V2_SIZE,
  INTENT_FIXED_SIZE,
  INTENT_MAGIC,
  INTENT_OFFSET,
  IntentKind,
  MAX_HEADER_SIZE,
  MAX_OBJECT_LEN,
  MIN_BLOCKSIZE,
  UINT64_MAX,
} from './format.js';
import { hex16, isValidObjectName } from './names.js';
import type { MapHeader, MapIntent } from './types.js';

const U32_MAX = 0xffffffff;

/** True when `blocksize` is a power of two strictly greater than MIN_BLOCKSIZE that fits a u32. */
export function isValidBlocksize(blocksize: number): boolean {
  return (
    Number.isInteger(blocksize) &&
    blocksize > MIN_BLOCKSIZE &&
    blocksize <= 0x80000000 &&
    (blocksize & (blocksize - 1)) === 0
  );
}

function checkBlocksize(fn: string, blocksize: number): void {
  if (!isValidBlocksize(blocksize)) {
    throw new RangeError(`${fn}: blocksize ${blocksize} is not a power of two greater than ${MIN_BLOCKSIZE}`);
  }
}

function checkCount(fn: string, what: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0)
    throw new RangeError(`${fn}: ${what} ${n} is not a non-negative safe integer`);
}

/** Encodes a v2 header: 32 bytes, big-endian. Throws RangeError for a field that does not fit. */
export function encodeHeaderV2(h: { size: number; blocksize: number; flags: number; epoch: bigint }): Buffer {
  checkCount('encodeHeaderV2', 'size', h.size);
  checkBlocksize('encodeHeaderV2', h.blocksize);
  if (!Number.isInteger(h.flags) || h.flags < 0 || h.flags > U32_MAX) {
    throw new RangeError(`encodeHeaderV2: flags ${h.flags} is not a u32`);
  }
  if (typeof h.epoch !== 'bigint' || h.epoch < 0n || h.epoch > UINT64_MAX) {
    throw new RangeError(`encodeHeaderV2: epoch ${String(h.epoch)} is not a u64`);
  }
  const buf = Buffer.alloc(HEADER_V2_SIZE);
  buf.writeUInt32BE(AMF_SIGNATURE, 0);
  buf.writeUInt32BE(AMF_VERSION, 4);
  buf.writeBigUInt64BE(BigInt(h.size), 8);
  buf.writeUInt32BE(h.blocksize, 16);
  buf.writeUInt32BE(h.flags, 20);
  buf.writeBigUInt64BE(h.epoch, 24);
  return buf;
}

/**
 * Encodes an intent record (FORMAT.md, "Intent record"), to be stored right after the 32-byte
 * header. Throws RangeError for a name that is not a valid object name or an epoch that is not a u64.
 */
export function encodeIntent(intent: MapIntent): Buffer {
  const kind =
    intent.kind === 'renamed-from'
      ? IntentKind.RENAMED_FROM
      : intent.kind === 'renamed-to'
        ? IntentKind.RENAMED_TO
        : intent.kind === 'rolling-back'
          ? IntentKind.ROLLING_BACK
          : 0;
  if (kind === 0) throw new RangeError(`encodeIntent: unknown kind ${String(intent.kind)}`);
  if (!isValidObjectName(intent.name)) throw new RangeError(`encodeIntent: bad name "${intent.name}"`);
  if (typeof intent.epoch !== 'bigint' || intent.epoch < 0n || intent.epoch > UINT64_MAX) {
    throw new RangeError(`encodeIntent: epoch ${String(intent.epoch)} is not a u64`);
  }
  const name = Buffer.from(intent.name, 'latin1');
  const buf = Buffer.alloc(INTENT_FIXED_SIZE + name.length);
  buf.writeUInt32BE(INTENT_MAGIC, 0);
  buf.writeUInt8(kind, 4);
  buf.writeUInt8(name.length, 5);
  buf.writeBigUInt64BE(intent.epoch, 6);
  name.copy(buf, INTENT_FIXED_SIZE);
  return buf;
}

/**
 * The intent record stored after the header in `head` (the first bytes of a v2 header object), or
 * null when there is none. Anything that is not a well-formed record (no magic, an unknown kind, a
 * bad name) reads as none: bytes 32..511 of older maps may hold anything.
 */
export function decodeIntent(head: Buffer): MapIntent | null {
  const at = INTENT_OFFSET;
  if (head.length < at + INTENT_FIXED_SIZE || head.readUInt32BE(at) !== INTENT_MAGIC) return null;
  const kind = head.readUInt8(at + 4);
  const len = head.readUInt8(at + 5);
  if (len < 1 || len > MAX_OBJECT_LEN || head.length < at + INTENT_FIXED_SIZE + len) return null;
  const name = head.toString('latin1', at + INTENT_FIXED_SIZE, at + INTENT_FIXED_SIZE + len);
  if (!isValidObjectName(name)) return null;
  const epoch = head.readBigUInt64BE(at + 6);
  if (kind === IntentKind.RENAMED_FROM) return { kind: 'renamed-from', name, epoch };
  if (kind === IntentKind.RENAMED_TO) return { kind: 'renamed-to', name, epoch };
  if (kind === IntentKind.ROLLING_BACK) return { kind: 'rolling-back', name, epoch };
  return null;
}

/** u32 at `at`, reading missing bytes past the end of `head` as zero (blockers zero-fill past EOF). */
function u32At(head: Buffer, at: number, bigEndian: boolean): number {
  let v = 0;
  for (let i = 0; i < 4; i++) {
    const b = head[at + (bigEndian ? i : 3 - i)] ?? 0;
    v = v * 256 + b;
  }
  return v;
}

/**
 * Detects the version of a map from its first bytes (`head`, at most MAX_HEADER_SIZE bytes are
 * looked at; missing bytes count as zero): "AMF." signature → the big-endian version at 4 (must be
 * 2); else v0 when `assumeV0`; else v1 when the little-endian u32 at 0 is 1; else ECORRUPT_MAP.
 */
export function detectVersion(head: Buffer, volume: string, opts: { assumeV0?: boolean } = {}): 0 | 1 | 2 {
  const h = head.length > MAX_HEADER_SIZE ? head.subarray(0, MAX_HEADER_SIZE) : head;
  if (u32At(h, 0, true) === AMF_SIGNATURE) {
    const version = u32At(h, 4, true);
    if (version !== AMF_VERSION) {
      throw corruptMap(volume, 'bad-version', `unsupported map version ${version} after the AMF. signature`, {
        version,
      });
    }
    return 2;
  }
  if (opts.assumeV0) return 0;
  if (u32At(h, 0, false) === 1) return 1;
  const first = Buffer.alloc(4);
  h.copy(first, 0, 0, Math.min(4, h.length));
  throw corruptMap(volume, 'no-signature', `no signature found (first bytes 0x${first.toString('hex')})`);
}

/**
 * Decodes and validates a v2 header from the first bytes of the map object. ECORRUPT_MAP when
 * shorter than 32 bytes, on a bad signature or version, a blocksize that is not a power of two
 * greater than 128, or a size above Number.MAX_SAFE_INTEGER.
 */
export function decodeHeaderV2(head: Buffer, volume: string): MapHeader {
  if (head.length < HEADER_V2_SIZE) {
    throw corruptMap(
      volume,
      'truncated-header',
      `truncated header (${head.length} bytes, need ${HEADER_V2_SIZE})`,
      {
        length: head.length,
      },
    );
  }
  const signature = head.readUInt32BE(0);
  if (signature !== AMF_SIGNATURE) {
    throw corruptMap(
      volume,
      'bad-signature',
      `bad signature 0x${hex16(signature).slice(8)} (expected 0x414d462e "AMF.")`,
      { signature },
    );
  }
  const version = head.readUInt32BE(4);
  if (version !== AMF_VERSION) {
    throw corruptMap(volume, 'bad-version', `unsupported map version ${version}`, { version });
  }
  const size = head.readBigUInt64BE(8);
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw corruptMap(volume, 'bad-size', `size ${size} is larger than ${Number.MAX_SAFE_INTEGER}`, {
      size: size.toString(),
    });
  }
  const blocksize = head.readUInt32BE(16);
  if (!isValidBlocksize(blocksize)) {
    throw corruptMap(
      volume,
      'bad-blocksize',
      `invalid blocksize ${blocksize} (must be a power of two greater than ${MIN_BLOCKSIZE})`,
      { blocksize },
    );
  }
  return {
    version: 2,
    size: Number(size),
    blocksize,
    flags: head.readUInt32BE(20),
    epoch: head.readBigUInt64BE(24),
  };
}

/** Number of objects (entries) of a map: ceil(size / blocksize). */
export function objectCount(size: number, blocksize: number): number {
  checkCount('objectCount', 'size', size);
  if (!Number.isSafeInteger(blocksize) || blocksize <= 0) {
    throw new RangeError(`objectCount: blocksize ${blocksize} is not a positive integer`);
  }
  const rest = size % blocksize;
  return (size - rest) / blocksize + (rest === 0 ? 0 : 1);
}

/** Entries held by one v2 map-block object: blocksize / 128. */
export function entriesPerMapBlock(blocksize: number): number {
  checkBlocksize('entriesPerMapBlock', blocksize);
  return blocksize / ENTRY_V2_SIZE;
}

/** Name of v2 map-block object `blockId` of `volume`: `<volume>_<hex16(blockId)>`. */
export function mapBlockName(volume: string, blockId: number): string {
  return `${volume}_${hex16(blockId)}`;
}

/** Where entry `index` lives: map-block object id and byte offset inside it. */
export function mapBlockLocation(index: number, blocksize: number): { blockId: number; offset: number } {
  checkCount('mapBlockLocation', 'index', index);
  const perBlock = entriesPerMapBlock(blocksize);
  const inBlock = index % perBlock;
  return { blockId: (index - inBlock) / perBlock, offset: inBlock * ENTRY_V2_SIZE };
}
