import { archipError } from '@archipelago/libxseg';
import { entriesPerMapBlock, MapFlag, ObjFlag, objectCount } from '@archipelago/mapfile';
import type { MapperContext } from '../context.js';
import { checkSize, describe, isOwned, isReadonly, isZero, type LoadedMap, zeroEntry } from '../map.js';
import { pool } from '../mutex.js';
import type { VolumeInfo } from '../types.js';
import { checkMapSpace } from './create.js';
import { copyUp } from './map-io.js';
import { repairing } from './repair.js';

/**
 * Grows or shrinks a volume; the header write is the commit. Growing writes the map blocks that
 * change (the old last one and the new ones) first, then the header: killed before it, the
 * entries past the old end are not read. Bytes beyond the old end read as zeros after growing.
 * A SPARSE map (`MapStore.writeMap`) writes none of those blocks that hold nothing but zero
 * entries, unless one is stored already (a shrink killed before deleting it left it): that one is
 * rewritten as zero entries. Growing is refused (ENOSPC, before any write) when blockerm has no
 * room for the blocks it writes (`checkMapSpace`: a thin SPARSE grow asks for none).
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
      const per = entriesPerMapBlock(bs);
      const first = Math.floor(oldN / per);
      const sparse = (map.flags & MapFlag.SPARSE) !== 0;
      if (newN > oldN) {
        // Before the entries are allocated: a grow to a size this process cannot hold is refused.
        checkMapSpace(await ctx.store.space(), name, size, bs, {
          sparse,
          entries: map.entries,
          firstBlock: first,
        });
      }
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
      const dropped: string[] = [];
      // Plain loops: a 1 TiB map is 262 144 entries, and Array.from with a map function or a
      // slice-filter-map over them cost 20-30 ms of a thin volume's resize.
      if (newN > oldN) {
        // Pushed, not preallocated: V8 keeps a large `new Array(n)` as a slow dictionary.
        entries = map.entries.slice();
        const zero = zeroEntry();
        for (let i = oldN; i < newN; i++) entries.push(zero);
      } else if (newN < oldN) {
        for (let i = newN; i < oldN; i++) {
          const e = entries[i]!;
          if (isOwned(e) && !isZero(e)) dropped.push(e.name);
        }
        entries = entries.slice(0, newN);
      }
      const next: LoadedMap = { ...vol.map, size, entries };
      if (newN > oldN) {
        // Blocks before `first` are unchanged (not encoded, not written); then the header.
        const encoded = ctx.store.encodeBlocks(next, first);
        const unchanged = Array.from({ length: first + encoded.length }, (_, b) => b < first);
        await ctx.store.writeMap(next, [...new Array<Buffer>(first), ...encoded], { unchanged });
      } else {
        await ctx.store.writeHeader(next, next.flags);
      }
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
