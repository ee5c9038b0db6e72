/**
 * Rollback (README "Lineage, rollback, flatten"): volume `name`'s contents become snapshot
 * `snap`'s (of its lineage: `checkLineage`), by a map change (O(map), never O(data)). The volume takes the snapshot's entries, none
 * writable (its next write to a block copies it up), the snapshot's size, and its epoch + 1, so no
 * object name is ever used twice. Crash-atomic, in this order:
 * 1. the new map is staged under `rollbackMapName(name)`, INCOMPLETE (map blocks, then header;
 *    SPARSE when new maps are: its blocks of nothing but zero entries are not written);
 * 2. the volume's header is rewritten INCOMPLETE with a `rolling-back` intent naming the staged
 *    map and its epoch: the **commit**;
 * 3. the volume's map blocks are rewritten from the staged map, then its header (new size, epoch,
 *    no INCOMPLETE, no intent); map blocks past the new end go;
 * 4. the staged map goes.
 * Killed before 2, nothing happened (the staged map is a leftover the next rollback replaces);
 * after 2, whoever next uses the volume finishes 3 and 4 (`settleRollback`, called by ops/repair.ts).
 */
import { ArchipelagoError, archipError } from '@archipelago/libxseg';
import { MapFlag, ObjFlag, objectCount, rollbackMapName, UINT64_MAX } from '@archipelago/mapfile';
import type { MapperContext } from '../context.js';
import { describe, isReadonly, type LoadedMap, newMap } from '../map.js';
import type { HeaderState } from '../map-store.js';
import type { VolumeInfo } from '../types.js';
import { readLineage } from './lineage.js';
import { repairing } from './repair.js';

const DATA_OBJECT = /^(.+)_[0-9a-f]{16}_[0-9a-f]{16}$/;

/** EBUSY naming the holder, for a map change refused because another owner holds the volume. */
export function heldElsewhere(e: unknown, name: string, action: string): unknown {
  if (!ArchipelagoError.is(e, 'ELOCKED')) return e;
  const owner = typeof e.details.owner === 'string' ? e.details.owner : 'another owner';
  return archipError(
    'EBUSY',
    `cannot ${action} "${name}": it is open (mapped) by ${owner}; unmap or close it there first`,
    { details: { volume: name, owner } },
  );
}

/**
 * Refuses (EINVAL) a rollback of `vol` to `snap` unless `snap` is of the volume's lineage: a
 * snapshot recorded as taken of it (under any name), or its recorded parent, or a snapshot of a
 * clone of a snapshot of it (what `import-diff` stages its change in and commits with a rollback:
 * runtime diff-transfer.ts; each link by record id, the clone and that snapshot found under the
 * names the records give); without records, a snapshot holding objects of the volume
 * (`<vol>_<epoch>_<index>`) or all of its shared entries.
 */
async function checkLineage(ctx: MapperContext, vol: LoadedMap, snap: LoadedMap): Promise<void> {
  const [v, s] = await Promise.all([
    readLineage(ctx.blockerm, vol.name),
    readLineage(ctx.blockerm, snap.name),
  ]);
  if (s?.origin) {
    if (v && s.origin.id === v.id) return;
    if (s.origin.id === null && s.origin.name === vol.name) return;
  }
  if (v?.parent) {
    if (s && v.parent.id === s.id) return;
    if (v.parent.id === null && v.parent.name === snap.name) return;
  }
  if (v && s?.origin?.id) {
    // A snapshot of a clone (not flattened) of a snapshot of the volume.
    const clone = await readLineage(ctx.blockerm, s.origin.name);
    if (clone?.id === s.origin.id && clone.parent?.id) {
      const base = await readLineage(ctx.blockerm, clone.parent.name);
      if (base?.id === clone.parent.id && base.origin?.id === v.id) return;
    }
  }
  if (!s?.origin) {
    // Not recorded: infer, as `vlmc info` does.
    if (snap.entries.some((e) => DATA_OBJECT.exec(e.name)?.[1] === vol.name)) return;
    const shared = vol.entries.filter(
      (e) => !(e.flags & (ObjFlag.WRITABLE | ObjFlag.ZERO)) && DATA_OBJECT.exec(e.name)?.[1] !== vol.name,
    );
    if (
      shared.length > 0 &&
      vol.entries.every(
        (e, i) =>
          e.flags & (ObjFlag.WRITABLE | ObjFlag.ZERO) ||
          DATA_OBJECT.exec(e.name)?.[1] === vol.name ||
          snap.entries[i]?.name === e.name,
      )
    )
      return;
  }
  throw archipError(
    'EINVAL',
    `cannot roll "${vol.name}" back to "${snap.name}": it is not a snapshot of "${vol.name}" nor its parent`,
    { details: { volume: vol.name, snapshot: snap.name } },
  );
}

/** Rolls volume `name` back to snapshot `snap` (see the file comment). */
export async function rollback(ctx: MapperContext, name: string, snap: string): Promise<VolumeInfo> {
  ctx.checkOpen();
  if (snap === name) throw archipError('EINVAL', `cannot roll "${name}" back to itself`);
  return repairing(ctx, () =>
    ctx.locks.withHostLocks(
      [name, snap],
      () =>
        ctx.locks
          .withChange(name, async (vol) => {
            const cur = vol.map;
            if (isReadonly(cur))
              throw archipError('EREADONLY', `"${name}" is a snapshot; only a volume can be rolled back`);
            const src = await repairing(ctx, () => ctx.store.load(snap, {}));
            if (!isReadonly(src)) {
              throw archipError('ENOTSNAPSHOT', `cannot roll back to "${snap}": it is a writable volume`, {
                details: { volume: snap },
              });
            }
            if (src.blocksize !== cur.blocksize) {
              throw archipError(
                'EINVAL',
                `cannot roll "${name}" back to "${snap}": block sizes differ (${cur.blocksize}, ${src.blocksize})`,
              );
            }
            await checkLineage(ctx, cur, src);
            if (cur.epoch >= UINT64_MAX - 1n)
              throw archipError('EOVERFLOW', `volume "${name}" has used up its epochs`);
            const epoch = cur.epoch + 1n;
            const staged = newMap(rollbackMapName(name), {
              size: src.size,
              blocksize: src.blocksize,
              // SPARSE when this store writes new maps so: no block of nothing but zero entries is
              // staged (a thin 1 TiB volume's staged map is its header).
              flags: ctx.store.newMapFlags(MapFlag.INCOMPLETE),
              epoch,
              entries: src.entries.map((e) =>
                e.flags & ObjFlag.WRITABLE ? { name: e.name, flags: e.flags & ~ObjFlag.WRITABLE } : e,
              ),
            });
            await ctx.store.writeMap(staged); // 1
            await ctx.store.writeHeader(cur, cur.flags | MapFlag.INCOMPLETE, {
              kind: 'rolling-back',
              name: staged.name,
              epoch,
            }); // 2: the commit
            try {
              vol.map = await finish(ctx, cur, staged);
            } catch (e) {
              ctx.locks.forget(name); // the store is ahead of the cache: the next use settles it
              throw e;
            }
            ctx.log.info({ volume: name, snapshot: snap, epoch: String(epoch) }, 'rolled back');
            return describe(vol.map, ctx.locks.identity);
          })
          .catch((e: unknown) => {
            throw heldElsewhere(e, name, 'roll back');
          }),
      { orHeldOpen: [snap] },
    ),
  );
}

/** Steps 3 and 4: the volume (`cur`: its header before the commit) takes the staged map. */
async function finish(
  ctx: MapperContext,
  cur: Pick<LoadedMap, 'name' | 'flags' | 'size' | 'blocksize'>,
  staged: LoadedMap,
): Promise<LoadedMap> {
  const next: LoadedMap = {
    ...staged,
    name: cur.name,
    storedAs: cur.name,
    version: 2,
    flags: cur.flags & ~MapFlag.INCOMPLETE,
  };
  await ctx.store.writeMap(next);
  const before = objectCount(cur.size, cur.blocksize);
  if (before > next.entries.length)
    await ctx.store.deleteMapBlocks(cur.name, cur.blocksize, next.entries.length, before);
  await ctx.store.deleteMapBlocks(staged.name, staged.blocksize, 0, staged.entries.length);
  await ctx.blockerm.delete(staged.name);
  return next;
}

/**
 * Finishes a committed rollback of `name` (its header INCOMPLETE with a `rolling-back` intent),
 * holding its lock: called by ops/repair.ts when a map is found so.
 */
export async function settleRollback(
  ctx: MapperContext,
  name: string,
  st: HeaderState,
): Promise<'rolled-forward'> {
  const intent = st.intent!;
  const staged = await ctx.store.load(intent.name, { incomplete: true }).catch(() => null);
  if (!staged || staged.epoch !== intent.epoch) {
    throw archipError(
      'EIO',
      `volume "${name}" is in the middle of a rollback whose staged map "${intent.name}" (epoch ${intent.epoch}) is missing`,
      { details: { volume: name, staged: intent.name } },
    );
  }
  await finish(ctx, { name, ...st.header }, staged);
  ctx.log.warn({ volume: name }, 'finished an interrupted rollback');
  return 'rolled-forward';
}
