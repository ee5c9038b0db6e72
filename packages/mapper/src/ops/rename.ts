import { archipError } from '@archipelago/libxseg';
import { validateVolumeName } from '@archipelago/mapfile';
import type { MapperContext } from '../context.js';
import { describe, type LoadedMap } from '../map.js';
import type { VolumeInfo } from '../types.js';

/**
 * Renames a volume or snapshot: the map is written under the new name (taking the epoch past any
 * deleted map of that name), then the old header is marked deleted (keeping the old name's epoch)
 * and the old map blocks go. Its objects keep their names.
 */
export async function rename(ctx: MapperContext, name: string, newName: string): Promise<VolumeInfo> {
  ctx.checkOpen();
  validateVolumeName(newName);
  return ctx.locks.withChange(
    name,
    async (vol) => {
      if (newName === name) throw archipError('EEXIST_VOLUME', `volume "${name}" already has that name`);
      return ctx.locks.withName(newName, async () => {
        const epoch = (await ctx.store.deletedEpoch(newName)) + 1n;
        const old = vol.map;
        const renamed: LoadedMap = { ...old, name: newName, storedAs: newName, version: 2, epoch };
        await ctx.store.writeMap(renamed);
        await ctx.store.markDeleted(old);
        await ctx.store.deleteMapBlocks(name, old.blocksize, 0, old.entries.length);
        ctx.locks.forget(name);
        ctx.log.info({ volume: name, to: newName }, 'renamed volume');
        return describe(renamed, null);
      });
    },
    {},
    { closeAfter: true },
  );
}
