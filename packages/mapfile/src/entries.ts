import { ArchipelagoError } from '@archipelago/libxseg';
import { corruptMap } from './errors.js';
import { ENTRY_V2_SIZE, MAX_OBJECT_LEN, ObjFlag, ZERO_BLOCK } from './format.js';
import type { MapEntry } from './types.js';

/** Offset of the u32 little-endian name length inside a record. */
const LEN_AT = 1;
/** Offset of the name bytes inside a record. */
const NAME_AT = 5;
const FLAG_MASK = 0x0f;

/** ASCII codes allowed in object names: [A-Za-z0-9._-]. */
const NAME_CHAR = new Uint8Array(128);
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-')
  NAME_CHAR[c.charCodeAt(0)] = 1;

/** The zero block name as bytes, and the used prefix (flags, length, name) of its record. */
const ZERO_NAME_BYTES = Buffer.from(ZERO_BLOCK, 'latin1');
const ZERO_PREFIX_LEN = NAME_AT + ZERO_BLOCK.length;
const ZERO_RECORD_PREFIX = (() => {
  const b = Buffer.alloc(ZERO_PREFIX_LEN);
  b[0] = ObjFlag.ZERO;
  b.writeUInt32LE(ZERO_BLOCK.length, LEN_AT);
  ZERO_NAME_BYTES.copy(b, NAME_AT);
  return b;
})();

/** Flags an entry that names the zero block always has: ZERO set, WRITABLE clear. */
function zeroFlags(flags: number): number {
  return (flags | ObjFlag.ZERO) & ~ObjFlag.WRITABLE;
}

/**
 * The whole 128-byte record of the plain zero entry (flags ZERO), the most common record by far:
 * a thin 1 TiB volume is 262 144 of them. Runs of it are encoded with one Buffer.fill, and
 * decoded into one shared, frozen entry (entries are values; nothing mutates them in place).
 */
const ZERO_RECORD = (() => {
  const b = Buffer.alloc(ENTRY_V2_SIZE);
  ZERO_RECORD_PREFIX.copy(b, 0);
  return b;
})();
const ZERO_RECORD_WORDS = new Int32Array(ZERO_RECORD.buffer, ZERO_RECORD.byteOffset, ENTRY_V2_SIZE / 4);
/** The decoded zero entry for each flags value (0..15), shared. */
const ZERO_ENTRIES: readonly MapEntry[] = Array.from({ length: FLAG_MASK + 1 }, (_, f) =>
  Object.freeze({ name: ZERO_BLOCK, flags: zeroFlags(f) }),
);
const PLAIN_ZERO_FLAGS = ObjFlag.ZERO;
/** The zero entry (flags ZERO), shared and frozen: use it instead of building new ones. */
export const ZERO_ENTRY: MapEntry = ZERO_ENTRIES[PLAIN_ZERO_FLAGS]!;

/** Records compared at once (one native compare) when decoding. */
const RUN = 512;
/** RUN zero records, for comparing runs of records at once. */
const ZERO_RUN = Buffer.alloc(RUN * ENTRY_V2_SIZE);
fillZeroRecords(ZERO_RUN, 0, ZERO_RUN.length);

let zeroRecordsCache = ZERO_RUN;
/**
 * `count` zero-entry records (what encodeEntriesV2 gives for that many ZERO_ENTRYs), from one
 * shared buffer: callers must not modify it. Writing a thin map's blocks from it costs no fresh
 * memory per block (first touches of fresh memory are what large map writes spend most time on).
 */
export function zeroRecords(count: number): Buffer {
  if (!Number.isSafeInteger(count) || count < 0) throw new RangeError(`zeroRecords: bad count ${count}`);
  const need = count * ENTRY_V2_SIZE;
  if (zeroRecordsCache.length < need) {
    const grown = Buffer.allocUnsafe(need);
    fillZeroRecords(grown, 0, need);
    zeroRecordsCache = grown;
  }
  return zeroRecordsCache.subarray(0, need);
}

/** Writes ZERO_RECORD over [start, end) of `buf` (a multiple of 128 bytes): log2(n) memmoves. */
function fillZeroRecords(buf: Buffer, start: number, end: number): void {
  if (end <= start) return;
  ZERO_RECORD.copy(buf, start);
  for (let done = ENTRY_V2_SIZE; start + done < end; ) {
    const n = Math.min(done, end - start - done);
    buf.copyWithin(start + done, start, start + n);
    done += n;
  }
}

/** True when the record at word `w` of `words` is exactly ZERO_RECORD. */
function isZeroRecord(words: Int32Array, w: number): boolean {
  for (let i = 0; i < ZERO_RECORD_WORDS.length; i++) if (words[w + i] !== ZERO_RECORD_WORDS[i]) return false;
  return true;
}

/** True when `e` encodes to exactly ZERO_RECORD. */
function isPlainZero(e: MapEntry): boolean {
  return e.name === ZERO_BLOCK && zeroFlags(e.flags) === PLAIN_ZERO_FLAGS;
}

function badEntryName(name: string, index: number, why: string): ArchipelagoError {
  return new ArchipelagoError('EINVAL_NAME', `map entry ${index}: object name "${name}" ${why}`, {
    details: { name, index },
  });
}

/**
 * Writes one record at `at` of a buffer whose 128 bytes there are already zero (a fresh
 * Buffer.alloc), so the padding need not be cleared.
 */
function writeRecord(buf: Buffer, at: number, e: MapEntry, index: number): void {
  const name = e.name;
  const flags = e.flags;
  if (typeof flags !== 'number' || flags >>> 0 !== flags || flags > FLAG_MASK) {
    throw new RangeError(`map entry ${index}: flags ${String(flags)} are not in 0..15`);
  }
  if (name === ZERO_BLOCK) {
    buf.set(ZERO_RECORD_PREFIX, at);
    buf[at] = zeroFlags(flags);
    return;
  }
  if (typeof name !== 'string') throw new TypeError(`map entry ${index}: name must be a string`);
  const len = name.length;
  if (len === 0 || len > MAX_OBJECT_LEN) badLength(name, index);
  buf[at] = flags;
  buf[at + LEN_AT] = len; // u32 little-endian; len <= 123 fits the low byte
  buf[at + LEN_AT + 1] = 0;
  buf[at + LEN_AT + 2] = 0;
  buf[at + LEN_AT + 3] = 0;
  const base = at + NAME_AT;
  for (let i = 0; i < len; i++) {
    const c = name.charCodeAt(i);
    if (c >= 128 || NAME_CHAR[c] === 0) {
      throw badEntryName(name, index, "may contain only letters, digits, '.', '_' and '-'");
    }
    buf[base + i] = c;
  }
  if (len <= 2 && (name === '.' || name === '..')) throw badEntryName(name, index, 'must not be "." or ".."');
}

function badLength(name: string, index: number): never {
  throw badEntryName(name, index, `must be 1 to ${MAX_OBJECT_LEN} characters long (got ${name.length})`);
}

/**
 * Encodes one v2 entry record (128 bytes: u8 flags, u32 little-endian name length, 123 name bytes
 * zero padded) into `into` at `at` (default 0), or into a new buffer. Returns the buffer written.
 * A name equal to ZERO_BLOCK is always written with ZERO set and WRITABLE clear. Throws
 * EINVAL_NAME for a name that is not a valid object name, RangeError for flags outside 0..15.
 */
export function encodeEntryV2(e: MapEntry, into?: Buffer, at = 0): Buffer {
  if (into === undefined) {
    const buf = Buffer.alloc(ENTRY_V2_SIZE);
    writeRecord(buf, 0, e, 0);
    return buf;
  }
  if (!Number.isSafeInteger(at) || at < 0 || at + ENTRY_V2_SIZE > into.length) {
    throw new RangeError(`encodeEntryV2: no room for a ${ENTRY_V2_SIZE}-byte record at offset ${at}`);
  }
  // Encode aside first so that a rejected entry leaves `into` untouched.
  const rec = Buffer.alloc(ENTRY_V2_SIZE);
  writeRecord(rec, 0, e, 0);
  rec.copy(into, at);
  return into;
}

/** Encodes entries as consecutive 128-byte records (entries.length * 128 bytes). */
export function encodeEntriesV2(entries: readonly MapEntry[]): Buffer {
  const n = entries.length;
  const buf = Buffer.alloc(n * ENTRY_V2_SIZE);
  for (let i = 0; i < n; ) {
    const e = entries[i]!;
    if (typeof e.flags === 'number' && e.flags >= 0 && e.flags <= FLAG_MASK && isPlainZero(e)) {
      let end = i + 1;
      while (end < n && entries[end]!.flags === e.flags && isPlainZero(entries[end]!)) end++;
      fillZeroRecords(buf, i * ENTRY_V2_SIZE, end * ENTRY_V2_SIZE);
      i = end;
    } else {
      writeRecord(buf, i * ENTRY_V2_SIZE, e, i);
      i++;
    }
  }
  return buf;
}

/** Decodes the record at `at`; `index` is the entry index, used in error messages. */
function readRecord(buf: Buffer, at: number, volume: string, index: number): MapEntry {
  const flags = buf[at]! & FLAG_MASK;
  const len = buf.readUInt32LE(at + LEN_AT);
  if (len === 0 || len > MAX_OBJECT_LEN) {
    throw corruptMap(
      volume,
      'bad-objectlen',
      `entry ${index}: object name length ${len} is out of range 1..${MAX_OBJECT_LEN}`,
      { index, objectlen: len },
    );
  }
  const start = at + NAME_AT;
  if (len === ZERO_NAME_BYTES.length && isZeroName(buf, start)) return ZERO_ENTRIES[flags]!;
  return { name: buf.toString('latin1', start, start + len), flags };
}

/** True when the 64 bytes at `start` spell ZERO_BLOCK (a JS loop beats a native call per record). */
function isZeroName(buf: Buffer, start: number): boolean {
  const n = ZERO_NAME_BYTES.length;
  for (let i = 0; i < n; i++) if (buf[start + i] !== ZERO_NAME_BYTES[i]) return false;
  return true;
}

/**
 * Decodes the 128-byte record at byte `at` of `buf` (entry number `index` of `volume`). Flags are
 * masked to 0xf; the zero-block name forces ZERO and clears WRITABLE. ECORRUPT_MAP when the name
 * length is 0 or above 123, or the record does not fit in `buf`.
 */
export function decodeEntryV2(buf: Buffer, at: number, volume: string, index: number): MapEntry {
  if (!Number.isSafeInteger(at) || at < 0) throw new RangeError(`decodeEntryV2: bad offset ${at}`);
  if (at + ENTRY_V2_SIZE > buf.length) {
    throw corruptMap(
      volume,
      'truncated-map-block',
      `truncated map block: entry ${index} needs bytes ${at}..${at + ENTRY_V2_SIZE}, only ${buf.length} present`,
      { index, length: buf.length },
    );
  }
  return readRecord(buf, at, volume, index);
}

/**
 * Decodes `count` consecutive records from the start of `buf`; the first is entry `firstIndex`.
 * ECORRUPT_MAP "truncated map block" when `buf` holds fewer than count * 128 bytes.
 */
export function decodeEntriesV2(buf: Buffer, count: number, volume: string, firstIndex: number): MapEntry[] {
  if (!Number.isSafeInteger(count) || count < 0) throw new RangeError(`decodeEntriesV2: bad count ${count}`);
  const need = count * ENTRY_V2_SIZE;
  if (buf.length < need) {
    throw corruptMap(
      volume,
      'truncated-map-block',
      `truncated map block: entries ${firstIndex}..${firstIndex + count - 1} need ${need} bytes, got ${buf.length}`,
      { index: firstIndex, count, length: buf.length },
    );
  }
  const out = new Array<MapEntry>(count);
  // Word view for the zero-record fast path (Int32Array needs 4-byte alignment; pooled or
  // sliced buffers may not have it, then every record takes the general path).
  const words = buf.byteOffset % 4 === 0 ? new Int32Array(buf.buffer, buf.byteOffset, need / 4) : null;
  for (let i = 0; i < count; ) {
    const at = i * ENTRY_V2_SIZE;
    // A whole run of zero records (thin maps are mostly that) is one memcmp.
    if (i + RUN <= count && buf.compare(ZERO_RUN, 0, ZERO_RUN.length, at, at + ZERO_RUN.length) === 0) {
      out.fill(ZERO_ENTRY, i, i + RUN);
      i += RUN;
      continue;
    }
    const stop = Math.min(count, i + RUN);
    for (; i < stop; i++) {
      const a = i * ENTRY_V2_SIZE;
      out[i] =
        words !== null && isZeroRecord(words, a / 4)
          ? ZERO_ENTRY
          : readRecord(buf, a, volume, firstIndex + i);
    }
  }
  return out;
}
