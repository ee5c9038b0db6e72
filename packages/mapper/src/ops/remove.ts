import { dataObjectName } from '@archipelago/mapfile';
import type { MapperContext } from '../context.js';
import { isIncomplete } from '../map.js';
import type { LoadOptions } from '../types.js';
import { moveMap } from './rename.js';
import { settleIfInterrupted } from './repair.js';
import { dropMap, freeTrashName, trashName } from './trash.js';

/**
 * Removes a volume or snapshot: for its users it is gone at once (ENOENT; the name can be created
 * again), and its map moves to the trash (ops/trash.ts) under a reserved name, with every object
 * it names, until `purgeTrash` (or gc, after `trash_ttl`) drops it. The old name keeps its epoch
 * (deleted), so no object name is ever reused. Crash-atomic like a rename (`moveMap`): killed at
 * any step, either the volume or the trash entry is there, never both, never neither.
 *
 * An INCOMPLETE map (a killed import) never was a volume: it does not go to the trash but is
 * dropped at once (`dropMap`), deleting only the objects named by its own name and epoch: nothing
 * another map may own. The new name of an interrupted rename is settled first: undone, there is
 * nothing left to remove; finished, it is removed like any volume.
 */
export async function remove(ctx: MapperContext, name: string, opts: LoadOptions = {}): Promise<void> {
  ctx.checkOpen();
  if ((await settleIfInterrupted(ctx, name)) === 'rolled-back') return;
  const first = trashName(name, Date.now());
  // Both names' host locks up front, in name order (as a rename takes them).
  await ctx.locks.withHostLocks([name, first], () =>
    ctx.locks.withChange(
      name,
      async (vol) => {
        const map = vol.map;
        if (isIncomplete(map)) {
          await dropMap(ctx, map, (e, i) => e.name === dataObjectName(name, map.epoch, i));
          ctx.locks.forget(name);
          return;
        }
        const entry = await freeTrashName(ctx, first);
        await ctx.locks.withName(entry, () => moveMap(ctx, map, entry, new Set([name, entry])));
        ctx.log.info({ volume: name, trash: entry }, 'removed volume (moved to the trash)');
      },
      { ...opts, incomplete: true },
      { closeAfter: true },
    ),
  );
}
