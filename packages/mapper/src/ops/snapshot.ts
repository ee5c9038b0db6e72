import { archipError } from '@archipelago/libxseg';
import { entriesPerMapBlock, MapFlag, ObjFlag, UINT64_MAX, validateVolumeName } from '@archipelago/mapfile';
import type { MapperContext } from '../context.js';
import { describe, isReadonly, type LoadedMap, newMap } from '../map.js';
import type { VolumeInfo } from '../types.js';
import { newLineageId, readLineage, writeLineage } from './lineage.js';
import { claimName, repairing } from './repair.js';

/**
 * Freezes volume `name` into the read-only snapshot `snap`. The volume's objects become shared
 * (copy-up on next write) and its epoch advances. The origin is written before the snapshot map:
 * its map blocks, then its header (epoch + 1), then the snapshot's map blocks, then its header.
 * Killed before the origin's header, nothing happened (a map block already rewritten only marks
 * objects of the current epoch shared, which their next write takes back without a copy);
 * between the two headers, the origin no longer owns objects no snapshot names (they are copied
 * up once more, and the old ones are garbage); after, it is done.
 */
export async function snapshot(ctx: MapperContext, name: string, snap: string): Promise<VolumeInfo> {
  ctx.checkOpen();
  validateVolumeName(snap);
  return repairing(ctx, () =>
    // Both names' host locks up front, in name order: no cycle with another process's operation.
    ctx.locks.withHostLocks([name, snap], () =>
      ctx.locks.withChange(name, async (vol) => {
        const origin = vol.map;
        if (isReadonly(origin)) {
          throw archipError(
            'EREADONLY',
            `"${name}" is a snapshot already; clone it to get a writable volume`,
          );
        }
        if (origin.epoch >= UINT64_MAX)
          throw archipError('EOVERFLOW', `volume "${name}" has used up its epochs`);
        return ctx.locks.withName(snap, async () => {
          const snapEpoch = await claimName(ctx, snap, new Set([name, snap]));
          // Lineage (ops/lineage.ts): the origin needs a record id to be referred to (an older map
          // gets one, its parent not known); the snapshot's record is written before its header.
          let originLineage = await readLineage(ctx.blockerm, name);
          if (!originLineage) {
            originLineage = { id: newLineageId(), created: 0 };
            await writeLineage(ctx.blockerm, name, originLineage);
          }
          // Entries are values: one that is not writable (a zero block, an object already shared)
          // is kept as it is instead of copied, which keeps a thin map's snapshot allocation-free.
          const shared = origin.entries.map((e) =>
            e.flags & ObjFlag.WRITABLE ? { name: e.name, flags: e.flags & ~ObjFlag.WRITABLE } : e,
          );
          // Origin first: once it no longer claims the objects, the snapshot can never see them change.
          const nextOrigin: LoadedMap = { ...origin, entries: shared, epoch: origin.epoch + 1n };
          const encoded = ctx.store.encodeBlocks(nextOrigin);
          // Only the origin's map blocks that held a WRITABLE entry change (a thin volume has none):
          // the others are skipped, and the origin's commit is its header alone.
          await ctx.store.writeMap(nextOrigin, encoded, { unchanged: unchangedBlocks(origin) });
          vol.map = nextOrigin;
          const snapMap = newMap(snap, {
            size: origin.size,
            blocksize: origin.blocksize,
            flags: ctx.store.newMapFlags(MapFlag.READONLY),
            // The reference gives snapshots epoch 0. We keep a deleted predecessor's epoch instead, so
            // that removing the snapshot and re-creating the name as a volume never reuses object names.
            epoch: snapEpoch,
            entries: shared.slice(),
          });
          await writeLineage(ctx.blockerm, snap, {
            id: newLineageId(),
            created: Date.now(),
            origin: { name, id: originLineage.id, epoch: origin.epoch },
          });
          await ctx.store.writeMap(snapMap, encoded);
          ctx.log.info({ volume: name, snapshot: snap }, 'snapshot taken');
          return describe(snapMap, null);
        });
      }),
    ),
  );
}

/** For each map block of `map`: true when no entry in it is WRITABLE (a snapshot leaves it as it is). */
function unchangedBlocks(map: LoadedMap): boolean[] {
  if (map.version !== 2 || map.storedAs !== map.name) return []; // not stored as v2 blocks: write all
  const per = entriesPerMapBlock(map.blocksize);
  const n = map.entries.length;
  return Array.from({ length: Math.ceil(n / per) }, (_, b) => {
    for (let i = b * per, end = Math.min(n, i + per); i < end; i++) {
      if (map.entries[i]!.flags & ObjFlag.WRITABLE) return false;
    }
    return true;
  });
}
