/**
 * The changed extents between two maps of one lineage, from their entries alone (`vlmc diff`,
 * `vlmc export-diff`). Objects are never rewritten under a name a snapshot holds (a write to a
 * shared block copies it up to a new name), so a block whose entry names the same object in both
 * maps is unchanged, and no data needs reading to tell.
 */
import { archipError } from '@archipelago/libxseg';
import { type MapEntry, ObjFlag, ZERO_BLOCK } from '@archipelago/mapfile';

/** One side of a diff: a map's size, block size and entries. */
export interface DiffSide {
  size: number;
  blocksize: number;
  entries: readonly MapEntry[];
}

/** A byte range of the later map that differs from the earlier one. */
export interface DiffExtent {
  offset: number;
  length: number;
  /** The range reads as zeros now (its block became the zero block); otherwise it holds data. */
  zero: boolean;
}

const isZeroEntry = (e: MapEntry | undefined): boolean =>
  e === undefined || (e.flags & ObjFlag.ZERO) !== 0 || e.name === ZERO_BLOCK;

/**
 * The extents of `to` that differ from `from` (null: from nothing, every allocated extent), in
 * offset order, adjacent ones of the same kind merged, none past `to.size`. A block is changed
 * when its entries name different objects; it is a zero extent when its `to` entry is the zero
 * block, a data extent otherwise. Blocks past `from`'s end count as zeros there (a resize grows
 * with zeros), and so do zero blocks of `to` against nothing. When `from` ends inside a block
 * both maps share, the bytes of that block past `from`'s end are reported as data (they are not
 * part of `from`). Both maps must have the same block size (EINVAL otherwise).
 */
export function diffEntries(from: DiffSide | null, to: DiffSide): DiffExtent[] {
  const bs = to.blocksize;
  if (from && from.blocksize !== bs) {
    throw archipError(
      'EINVAL',
      `cannot diff maps of different block sizes (${from.blocksize} and ${bs}): they are not one lineage`,
    );
  }
  const out: DiffExtent[] = [];
  const add = (offset: number, end: number, zero: boolean) => {
    if (end <= offset) return;
    const last = out[out.length - 1];
    if (last && last.zero === zero && last.offset + last.length === offset) last.length = end - last.offset;
    else out.push({ offset, length: end - offset, zero });
  };
  const blocks = Math.ceil(to.size / bs);
  const fromSize = from?.size ?? 0;
  for (let i = 0; i < blocks; i++) {
    const start = i * bs;
    const end = Math.min(start + bs, to.size);
    const t = to.entries[i];
    const f = from && start < fromSize ? from.entries[i] : undefined;
    const tZero = isZeroEntry(t);
    const fZero = isZeroEntry(f);
    if (tZero) {
      if (!fZero) add(start, end, true);
    } else if (fZero || f!.name !== t!.name) add(start, end, false);
    else if (fromSize < end) add(fromSize, end, false); // same object, but only partly in `from`
  }
  return out;
}

/** Bytes of data and zero extents in `extents`. */
export function diffBytes(extents: readonly DiffExtent[]): { data: number; zero: number } {
  let data = 0;
  let zero = 0;
  for (const e of extents) {
    if (e.zero) zero += e.length;
    else data += e.length;
  }
  return { data, zero };
}

/** The granule `changedRuns` compares by default: 4 KiB, the smallest write a disk makes. */
export const DIFF_GRANULE = 4096;
const ZEROS = Buffer.alloc(DIFF_GRANULE);

/**
 * The runs of `to` (bytes of one changed extent) that differ from `from` (the same range before;
 * null: zeros, as an extent that was unallocated), compared `granule` bytes at a time, as offsets
 * relative to the start of `to`, adjacent runs of the same kind merged. A run is `zero` when its
 * bytes in `to` are all zeros. Unchanged granules are left out, so an export sends what a write
 * changed rather than whole blocks: a 64 KiB write into a 4 MiB block gives one 64 KiB run.
 * `from` must be as long as `to` (EINVAL otherwise); `granule` must be a positive integer.
 */
export function changedRuns(
  from: Uint8Array | null,
  to: Uint8Array,
  granule: number = DIFF_GRANULE,
): DiffExtent[] {
  if (from !== null && from.length !== to.length) {
    throw archipError('EINVAL', `changedRuns: ${from.length} bytes before, ${to.length} after`);
  }
  if (!Number.isInteger(granule) || granule <= 0) {
    throw archipError('EINVAL', `changedRuns: granule ${granule} is not a positive integer`);
  }
  const zeros = granule === DIFF_GRANULE ? ZEROS : Buffer.alloc(granule);
  const t = Buffer.from(to.buffer, to.byteOffset, to.length);
  const f = from === null ? null : Buffer.from(from.buffer, from.byteOffset, from.length);
  const out: DiffExtent[] = [];
  for (let o = 0; o < t.length; o += granule) {
    const end = Math.min(o + granule, t.length);
    const after = t.subarray(o, end);
    const z = after.equals(end - o === granule ? zeros : zeros.subarray(0, end - o));
    const same = f === null ? z : after.equals(f.subarray(o, end));
    if (same) continue;
    const last = out[out.length - 1];
    if (last && last.zero === z && last.offset + last.length === o) last.length = end - last.offset;
    else out.push({ offset: o, length: end - o, zero: z });
  }
  return out;
}
