import type { MapperContext } from '../context.js';
import { isOwned, isZero } from '../map.js';
import { pool } from '../mutex.js';
import type { LoadOptions } from '../types.js';

/**
 * Removes a volume: marks its map deleted (the header stays, so the name's epoch survives), then
 * deletes the objects it owns and its map blocks.
 */
export async function remove(ctx: MapperContext, name: string, opts: LoadOptions = {}): Promise<void> {
  ctx.checkOpen();
  await ctx.locks.withChange(
    name,
    async (vol) => {
      const map = vol.map;
      // Header first: from here on the volume is gone, whatever happens to the objects below.
      await ctx.store.markDeleted(map);
      const owned = map.entries.filter((e) => isOwned(e) && !isZero(e)).map((e) => e.name);
      await pool(owned.length, ctx.parallelism, (i) => ctx.blockerb.delete(owned[i]!));
      await ctx.store.deleteMapBlocks(name, map.blocksize, 0, map.entries.length);
      ctx.locks.forget(name);
      ctx.log.info({ volume: name, deleted: owned.length }, 'removed volume');
    },
    opts,
    { closeAfter: true },
  );
}
