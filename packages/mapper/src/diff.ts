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
