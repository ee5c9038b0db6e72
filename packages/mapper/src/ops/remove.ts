import { dataObjectName } from '@archipelago/mapfile';
import type { MapperContext } from '../context.js';
import { isIncomplete, isOwned, isZero } from '../map.js';
import { pool } from '../mutex.js';
import type { LoadOptions } from '../types.js';
import { settleIfInterrupted } from './repair.js';

/**
 * Removes a volume: marks its map deleted (the header stays, so the name's epoch survives), then
 * deletes the objects it owns and its map blocks. Killed after the header, the volume is gone and
 * what it owned is garbage; before, nothing happened.
 *
 * An INCOMPLETE map (a killed import) is removed too, deleting only the objects named by its own
 * name and epoch: nothing another map may own. The new name of an interrupted rename is settled
 * first: undone, there is nothing left to remove; finished, it is removed like any volume.
 */
export async function remove(ctx: MapperContext, name: string, opts: LoadOptions = {}): Promise<void> {
  ctx.checkOpen();
  if ((await settleIfInterrupted(ctx, name)) === 'rolled-back') return;
  await ctx.locks.withChange(
    name,
    async (vol) => {
      const map = vol.map;
      // Header first: from here on the volume is gone, whatever happens to the objects below.
      await ctx.store.markDeleted(map);
      const owned: string[] = [];
      const incomplete = isIncomplete(map);
      map.entries.forEach((e, i) => {
        if (!isOwned(e) || isZero(e)) return;
        if (!incomplete || e.name === dataObjectName(name, map.epoch, i)) owned.push(e.name);
      });
      await pool(owned.length, ctx.parallelism, (i) => ctx.blockerb.delete(owned[i]!));
      await ctx.store.deleteMapBlocks(name, map.blocksize, 0, map.entries.length);
      ctx.locks.forget(name);
      ctx.log.info({ volume: name, deleted: owned.length, incomplete }, 'removed volume');
    },
    { ...opts, incomplete: true },
    { closeAfter: true },
  );
}
