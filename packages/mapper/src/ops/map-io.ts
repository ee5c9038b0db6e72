/**
 * Mapping volume byte ranges to object segments: mapRead, and mapWrite with its copy-up (the
 * first write to a shared block copies its object to one this volume owns).
 */
import { ArchipelagoError, archipError } from '@archipelago/libxseg';
import { dataObjectName, ObjFlag } from '@archipelago/mapfile';
import type { MapperContext } from '../context.js';
import { isReadonly, isZero, type LoadedMap } from '../map.js';
import type { LoadOptions, ObjectSegment } from '../types.js';
import type { OpenVolume } from '../volume-locks.js';
import { repairing } from './repair.js';

/**
 * Opens volume `name` for this mapper (lock taken, map cached; `wait`: as a write does, up to the
 * lock timeout), settling an interrupted rename to it first when there is one.
 */
export function openVolume(
  ctx: MapperContext,
  name: string,
  opts: LoadOptions,
  wait: boolean | 'ask',
): Promise<OpenVolume> {
  return repairing(ctx, () => ctx.locks.openVolume(name, opts, wait));
}

/** Maps `[offset, offset+length)` of volume `name` to the object segments that hold it. */
export type MapRange = (
  ctx: MapperContext,
  name: string,
  offset: number,
  length: number,
  opts?: LoadOptions,
) => Promise<ObjectSegment[]>;

/**
 * Object segments for reading `[offset, offset+length)`. Tries the lock without waiting; when
 * another owner holds it (or this mapper handed the volume over), the map is loaded fresh and
 * not cached (the guide's rule a).
 */
export const mapRead: MapRange = async (ctx, name, offset, length, opts = {}) => {
  ctx.checkOpen();
  let map: LoadedMap;
  const cached = ctx.locks.cached(name);
  if (cached) map = cached.map;
  else if (ctx.locks.isYielded(name)) {
    // Handed over to (or found held by) another owner: read without trying the lock.
    map = await ctx.store.load(name, opts);
  } else {
    try {
      map = (await openVolume(ctx, name, opts, false)).map;
    } catch (e) {
      // Another host holds the volume (ELOCKED), or another process of this host (EBUSY).
      if (!ArchipelagoError.is(e, 'ELOCKED') && !ArchipelagoError.is(e, 'EBUSY')) throw e;
      map = await ctx.store.load(name, opts);
    }
  }
  return segmentsOf(map, offset, length);
};

/**
 * Object segments for writing `[offset, offset+length)`, every one writable by this volume:
 * shared blocks are copied up first (whole object; zero blocks need no copy). Waits for the
 * lock up to the lock timeout.
 */
export const mapWrite: MapRange = async (ctx, name, offset, length, opts = {}) => {
  ctx.checkOpen();
  const vol = ctx.locks.cached(name, true) ?? (await openVolume(ctx, name, opts, true));
  while (vol.barrier) await vol.barrier;
  const map = vol.map;
  if (isReadonly(map)) throw refused(map.name);
  const segs = segmentsOf(map, offset, length);
  const pending: Promise<void>[] = [];
  for (const s of segs) {
    const e = vol.map.entries[s.index]!;
    if ((e.flags & ObjFlag.WRITABLE) === 0) pending.push(copyUp(ctx, vol, s.index));
  }
  if (pending.length > 0) {
    await Promise.all(pending);
    return segmentsOf(vol.map, offset, length);
  }
  return segs;
};

/**
 * Opens the volume for writing (waiting for the lock like a write) and fails with EREADONLY
 * when it is a snapshot.
 */
export async function assertWritable(
  ctx: MapperContext,
  name: string,
  opts: LoadOptions = {},
): Promise<void> {
  ctx.checkOpen();
  const { map } = ctx.locks.cached(name, true) ?? (await openVolume(ctx, name, opts, true));
  if (isReadonly(map)) throw refused(name);
}

/**
 * Makes block `index` of an open volume writable: copies its object to
 * `<volume>_<epoch>_<index>` (durably), then writes the one map entry that names the copy. A
 * crash between the two leaves the old entry, so the volume still reads its old data (and the
 * copy is overwritten by the next copy-up).
 */
export function copyUp(ctx: MapperContext, vol: OpenVolume, index: number): Promise<void> {
  return vol.entryLocks.run(index, async () => {
    const map = vol.map;
    const e = map.entries[index]!;
    if (e.flags & ObjFlag.WRITABLE) return; // done by an earlier waiter
    const target = dataObjectName(map.name, map.epoch, index);
    if (e.name === target) {
      // Its own object of the current epoch, not marked writable: only a snapshot killed while
      // rewriting the origin's map blocks (before its header moved the epoch on) leaves that, and
      // no snapshot names an object of the current epoch. It is this volume's to write again.
    } else if (isZero(e)) {
      // No data to copy. An object of that name can only be a leftover of an interrupted
      // discard; clear it so the unwritten parts of the block read as zeros.
      await ctx.blockerb.delete(target);
    } else {
      await ctx.blockerb.copy(e.name, target, { missingOk: true });
    }
    // The entry makes the copy this volume's: only while the volume is still ours (fencing).
    await ctx.locks.verify(map.name);
    await ctx.store.writeEntry(vol, index, { name: target, flags: ObjFlag.WRITABLE | ObjFlag.ARCHIP });
  });
}

/** EREADONLY for a write to snapshot `name`. */
export function refused(name: string): ArchipelagoError {
  return archipError('EREADONLY', `"${name}" is a snapshot; writes are refused`, {
    details: { volume: name },
  });
}

/** Splits `[offset, offset+length)` of a map into per-object segments, one per block it touches. */
function segmentsOf(map: LoadedMap, offset: number, length: number): ObjectSegment[] {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw archipError('EINVAL', `bad I/O range offset=${offset} length=${length}`);
  }
  const end = offset + length;
  if (end > map.size) {
    throw archipError(
      'ERANGE',
      `I/O [${offset}, ${end}) reaches past the end of "${map.name}" (${map.size} bytes)`,
      {
        details: { volume: map.name, offset, length, size: map.size },
      },
    );
  }
  const bs = map.blocksize;
  const out: ObjectSegment[] = [];
  if (length === 0) return out;
  const last = Math.floor((end - 1) / bs);
  for (let index = Math.floor(offset / bs); index <= last; index++) {
    const start = index * bs;
    const from = Math.max(offset, start);
    const e = map.entries[index]!;
    out.push({
      index,
      target: e.name,
      zero: isZero(e),
      offset: from - start,
      size: Math.min(end, start + bs) - from,
      blocksize: bs,
    });
  }
  return out;
}
