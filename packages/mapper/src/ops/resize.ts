import { archipError } from '@archipelago/libxseg';
import { entriesPerMapBlock, ObjFlag, objectCount } from '@archipelago/mapfile';
import type { MapperContext } from '../context.js';
import { checkSize, describe, isOwned, isReadonly, isZero, type LoadedMap, zeroEntry } from '../map.js';
import { pool } from '../mutex.js';
import type { VolumeInfo } from '../types.js';
import { copyUp } from './map-io.js';
import { repairing } from './repair.js';

/**
 * Grows or shrinks a volume; the header write is the commit. Growing writes the map blocks that
 * change (the old last one and the new ones) first, then the header: killed before it, the
 * entries past the old end are not read. Bytes beyond the old end read as zeros after growing.
 * Shrinking writes the header first, then frees the map blocks and owned objects past the new
 * end: killed after it, those are garbage (entries past the end are never read, and a later grow
 * rewrites them).
 */
export async function resize(ctx: MapperContext, name: string, size: number): Promise<VolumeInfo> {
  ctx.checkOpen();
  checkSize(size);
  const resized = await repairing(ctx, () =>
    ctx.locks.withChange(name, async (vol) => {
      const map = vol.map;
      if (isReadonly(map)) throw archipError('EREADONLY', `"${name}" is a snapshot; it cannot be resized`);
      const bs = map.blocksize;
      const oldN = map.entries.length;
      const newN = objectCount(size, bs);
      if (size > map.size && map.size % bs !== 0) {
        // The old last block may hold bytes past the old end (left by an earlier shrink, or by a
        // snapshot's larger view). Zero them so growth exposes only zeros.
        const idx = oldN - 1;
        const from = map.size % bs;
        const e = map.entries[idx]!;
        if (!isZero(e)) {
          if ((e.flags & ObjFlag.WRITABLE) === 0) await copyUp(ctx, vol, idx);
          await ctx.blockerb.write(vol.map.entries[idx]!.name, from, Buffer.alloc(bs - from));
        }
      }
      let entries = map.entries;
      let dropped: string[] = [];
      if (newN > oldN) {
        entries = entries.concat(Array.from({ length: newN - oldN }, zeroEntry));
      } else if (newN < oldN) {
        dropped = entries
          .slice(newN)
          .filter((e) => isOwned(e) && !isZero(e))
          .map((e) => e.name);
        entries = entries.slice(0, newN);
      }
      const next: LoadedMap = { ...vol.map, size, entries };
      if (newN > oldN) {
        const first = Math.floor(oldN / entriesPerMapBlock(bs));
        await ctx.store.writeBlocks(name, ctx.store.encodeBlocks(next, first), first);
      }
      await ctx.store.writeHeader(next, next.flags);
      vol.map = next;
      if (newN < oldN) {
        await ctx.store.deleteMapBlocks(name, bs, newN, oldN);
        await pool(dropped.length, ctx.parallelism, (i) => ctx.blockerb.delete(dropped[i]!));
      }
      ctx.log.info({ volume: name, from: map.size, to: size }, 'resized volume');
      return next;
    }),
  );
  return describe(resized, await ctx.locks.owner(name));
}
