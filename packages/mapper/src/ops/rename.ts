import { archipError } from '@archipelago/libxseg';
import { MapFlag, validateVolumeName } from '@archipelago/mapfile';
import type { MapperContext } from '../context.js';
import { describe, type LoadedMap } from '../map.js';
import type { VolumeInfo } from '../types.js';
import { dropLineage, readLineage, writeLineage } from './lineage.js';
import { claimName, repairing, settle, whileRenaming } from './repair.js';

/**
 * Renames a volume or snapshot. Its objects keep their names; the new name takes the epoch past
 * any deleted map of that name, the old name keeps its epoch (deleted). Crash-atomic: `moveMap`.
 */
export async function rename(ctx: MapperContext, name: string, newName: string): Promise<VolumeInfo> {
  ctx.checkOpen();
  validateVolumeName(newName);
  return repairing(ctx, () =>
    // Both names' host locks up front, in name order: no cycle with another process's operation,
    // and the old name stays this process's until its map is gone.
    ctx.locks.withHostLocks([name, newName], () =>
      ctx.locks.withChange(
        name,
        async (vol) => {
          if (newName === name) throw archipError('EEXIST_VOLUME', `volume "${name}" already has that name`);
          const renamed = await ctx.locks.withName(newName, () =>
            moveMap(ctx, vol.map, newName, new Set([name, newName])),
          );
          ctx.log.info({ volume: name, to: newName }, 'renamed volume');
          return describe(renamed, null);
        },
        {},
        { closeAfter: true },
      ),
    ),
  );
}

/**
 * Moves map `old` to `newName` (a rename; the trash's remove and restore, ops/trash.ts), the
 * caller holding the locks of both names (`held` has them). Crash-atomic (ops/repair.ts):
 * 1. the map is written under the new name, INCOMPLETE, with a `renamed-from` intent;
 * 2. the old header is marked DELETED with a `renamed-to` intent: the commit;
 * 3. the new header is rewritten without INCOMPLETE;
 * 4. the old map blocks go and the old header forgets the intent.
 * At no point are both names usable maps. Killed (or failing) before 2, the old name is the map
 * and the next use of the new name undoes step 1; after 2, the new name is, and its next use (or
 * the old name's) finishes the rest. EEXIST_VOLUME, before any change, when `newName` is taken.
 */
export function moveMap(
  ctx: MapperContext,
  old: LoadedMap,
  newName: string,
  held: Set<string>,
): Promise<LoadedMap> {
  const name = old.name;
  return whileRenaming(ctx, [name, newName], held, async () => {
    const epoch = (await claimName(ctx, newName, held)) + 1n;
    const moved: LoadedMap = { ...old, name: newName, storedAs: newName, version: 2, epoch };
    // The lineage record moves with the map (same id: references follow the move). The copy goes
    // first, like the map blocks: until the commit it is the new name's leftover.
    const lineage = await readLineage(ctx.blockerm, name);
    if (lineage) await writeLineage(ctx.blockerm, newName, lineage);
    else await dropLineage(ctx.blockerm, newName);
    try {
      await ctx.store.writeMap(moved, undefined, {
        flags: old.flags | MapFlag.INCOMPLETE,
        intent: { kind: 'renamed-from', name, epoch: old.epoch },
      });
      await ctx.store.markDeleted(old, { kind: 'renamed-to', name: newName, epoch });
      await ctx.store.writeHeader(moved, old.flags);
    } catch (e) {
      // Finish or undo it now if the store lets us; else the next use of either name does.
      if ((await settle(ctx, newName, held).catch(() => null)) !== 'rolled-forward') throw e;
    }
    ctx.locks.forget(name);
    try {
      await ctx.store.deleteMapBlocks(name, old.blocksize, 0, old.entries.length);
      await ctx.store.markDeleted(old);
      if (lineage) await dropLineage(ctx.blockerm, name);
    } catch (e) {
      // Moved all the same: the next use of the old name tidies it up (ops/repair.ts).
      ctx.log.warn({ volume: name, err: String(e) }, 'rename: the old map stays to be tidied up');
    }
    return moved;
  });
}
