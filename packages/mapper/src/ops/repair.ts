/**
 * Settling what an interrupted operation left behind, so that every multi-step map change is done
 * or not done after a crash at any step (docs/ARCHITECTURE.md, "Crash-atomic map operations").
 *
 * Only a rename needs it: it writes the new name's map INCOMPLETE with a `renamed-from` intent,
 * then marks the old map DELETED with a `renamed-to` intent (the commit), then clears INCOMPLETE,
 * then drops the old map blocks and the old header's intent. Whoever next uses either name, holding
 * its lock, finds the rename where it stopped:
 * - the new map INCOMPLETE, the old one committed (DELETED, `renamed-to` this map at this epoch):
 *   roll forward (clear INCOMPLETE, then tidy up the old name);
 * - the new map INCOMPLETE, the old one not committed (still live, or removed since, or renamed
 *   elsewhere): roll back (mark the new map DELETED, keeping its epoch, and drop its map blocks);
 * - the old map DELETED with a `renamed-to` intent: settle the new name first (its map may be
 *   waiting for this commit), then drop the old map blocks and the intent, so the name can be
 *   reused without undoing the rename.
 * An INCOMPLETE map without an intent (a killed import) is left for `remove`.
 */
import { ArchipelagoError, archipError } from '@archipelago/libxseg';
import { MapFlag, type MapIntent, objectCount } from '@archipelago/mapfile';
import type { MapperContext } from '../context.js';
import type { HeaderState } from '../map-store.js';
import { settleRollback } from './rollback.js';

/** What settling a name found and did. */
export type Settled =
  /** Nothing was interrupted (or the name holds no v2 map). */
  | 'clean'
  /** An INCOMPLETE map no one can finish (a killed import): `remove` removes it. */
  | 'incomplete'
  /** An interrupted rename to this name was finished. */
  | 'rolled-forward'
  /** An interrupted rename to this name was undone: the name holds a deleted map now. */
  | 'rolled-back'
  /** The old name of a rename: the rename was settled and the name forgot it. */
  | 'forgotten';

/**
 * Settles `name` holding its lock (taken without waiting unless `held` has it: ELOCKED names the
 * owner). `held` is the set of names whose locks the caller holds already.
 */
export function settle(ctx: MapperContext, name: string, held: Set<string> = new Set()): Promise<Settled> {
  return locked(ctx, name, held, () => settleLocked(ctx, name, held));
}

/**
 * Names a rename of this mapper is changing, with the `held` set of that rename. One identity's
 * lock does not keep two callers of one mapper apart (mapperd serves many clients), so settling
 * checks here that it does not undo a rename that is still under way.
 */
const renaming = new WeakMap<object, Map<string, Set<string>>>();

/** Runs `fn` (a rename of `names`, holding their locks as `held`) with the names marked as being renamed. */
export async function whileRenaming<T>(
  ctx: MapperContext,
  names: string[],
  held: Set<string>,
  fn: () => Promise<T>,
): Promise<T> {
  let busy = renaming.get(ctx.store);
  if (!busy) {
    busy = new Map();
    renaming.set(ctx.store, busy);
  }
  for (const n of names) {
    if (busy.has(n)) throw beingRenamed(n);
  }
  for (const n of names) busy.set(n, held);
  try {
    return await fn();
  } finally {
    for (const n of names) busy.delete(n);
  }
}

function beingRenamed(name: string) {
  return archipError('EBUSY', `volume "${name}" is being renamed; try again`, { details: { volume: name } });
}

/**
 * Settles `name` when its header shows an interrupted rename (looked at without the lock first,
 * so that the usual case costs one header read and no lock); else 'clean' or 'incomplete'.
 */
export async function settleIfInterrupted(ctx: MapperContext, name: string): Promise<Settled> {
  const st = await ctx.store.state(name);
  if (st === null || isLive(st)) return 'clean';
  if (st.intent === null) return isIncomplete(st) ? 'incomplete' : 'clean';
  return settle(ctx, name);
}

/**
 * The epoch a new map under `name` follows (its deleted predecessor's, or 0), once what an
 * interrupted operation left under the name is settled: for create, clone, and the targets of
 * snapshot and rename. The caller holds the lock of `name` (and of every name in `held`).
 * EEXIST_VOLUME when a live or incomplete map has the name.
 */
export async function claimName(ctx: MapperContext, name: string, held: Set<string>): Promise<bigint> {
  await settleLocked(ctx, name, held);
  return ctx.store.deletedEpoch(name);
}

/**
 * Runs `fn`; when it fails because a map is the INCOMPLETE new name of an interrupted rename
 * (EBUSY with `details.renamedFrom`), settles that name and runs `fn` once more.
 */
export async function repairing<T>(ctx: MapperContext, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    const name = renameToSettle(e);
    if (name === null) throw e;
    await settle(ctx, name);
    return fn();
  }
}

/** The volume an EBUSY "incomplete, interrupted rename" error names, else null. */
export function renameToSettle(e: unknown): string | null {
  if (!ArchipelagoError.is(e, 'EBUSY') || e.details.incomplete !== true) return null;
  const { volume, renamedFrom, rollingBack } = e.details;
  return typeof volume === 'string' && (typeof renamedFrom === 'string' || rollingBack === true)
    ? volume
    : null;
}

/** Runs `fn` holding the lock of `name` (unless `held` has it already). */
function locked<T>(ctx: MapperContext, name: string, held: Set<string>, fn: () => Promise<T>): Promise<T> {
  if (held.has(name)) return fn();
  return ctx.locks.withName(name, async () => {
    held.add(name);
    try {
      return await fn();
    } finally {
      held.delete(name);
    }
  });
}

const isLive = (s: HeaderState) => (s.header.flags & (MapFlag.DELETED | MapFlag.INCOMPLETE)) === 0;
const isDeleted = (s: HeaderState) => (s.header.flags & MapFlag.DELETED) !== 0;
const isIncomplete = (s: HeaderState) => !isDeleted(s) && (s.header.flags & MapFlag.INCOMPLETE) !== 0;
const sameIntent = (i: MapIntent | null, kind: MapIntent['kind'], name: string, epoch: bigint) =>
  i !== null && i.kind === kind && i.name === name && i.epoch === epoch;

/** Entries of the map a header describes (its map blocks hold that many). */
const entryCount = (s: HeaderState) => objectCount(s.header.size, s.header.blocksize);

async function settleLocked(ctx: MapperContext, name: string, held: Set<string>): Promise<Settled> {
  const by = renaming.get(ctx.store)?.get(name);
  if (by !== undefined && by !== held) throw beingRenamed(name);
  const st = await ctx.store.state(name);
  if (st === null || isLive(st)) return 'clean';
  const { header, intent } = st;
  const map = { name, ...header };
  if (isIncomplete(st)) {
    if (intent?.kind === 'rolling-back') return settleRollback(ctx, name, st);
    if (intent?.kind !== 'renamed-from') return 'incomplete';
    const from = await ctx.store.state(intent.name);
    const committed =
      from !== null &&
      isDeleted(from) &&
      from.header.epoch === intent.epoch &&
      sameIntent(from.intent, 'renamed-to', name, header.epoch);
    if (committed) {
      await ctx.store.writeHeader(map, header.flags & ~MapFlag.INCOMPLETE);
      ctx.log.warn({ volume: name, from: intent.name }, 'finished an interrupted rename');
      // Tidying up the old name needs its lock; whoever holds it now settles it later.
      await locked(ctx, intent.name, held, () => forget(ctx, intent.name, name, header.epoch)).catch(
        (e: unknown) => {
          if (!isLockBusy(e)) throw e;
        },
      );
      return 'rolled-forward';
    }
    // Not committed: the old map is the volume (or was removed since). This map only names its
    // objects, owns none of its own (nothing was written under its name), and goes.
    await ctx.store.markDeleted(map);
    await ctx.store.deleteMapBlocks(name, header.blocksize, 0, entryCount(st));
    ctx.log.warn({ volume: name, from: intent.name }, 'undid an interrupted rename');
    return 'rolled-back';
  }
  if (intent?.kind !== 'renamed-to') return 'clean';
  // The old name of a rename. Its new name may still wait for this commit: settle it first, so
  // that reusing this name can never make it roll back.
  const to = await ctx.store.state(intent.name);
  if (
    to !== null &&
    isIncomplete(to) &&
    to.header.epoch === intent.epoch &&
    sameIntent(to.intent, 'renamed-from', name, header.epoch)
  ) {
    await settle(ctx, intent.name, held); // rolls it forward, and forgets here
  }
  await forget(ctx, name, intent.name, intent.epoch);
  return 'forgotten';
}

/**
 * The old name `old` of a settled rename to `to` (at epoch `epoch`): its map blocks go, then its
 * header is rewritten as a plain deleted one. Nothing when the header says something else now.
 */
async function forget(ctx: MapperContext, old: string, to: string, epoch: bigint): Promise<void> {
  const st = await ctx.store.state(old);
  if (st === null || !isDeleted(st) || !sameIntent(st.intent, 'renamed-to', to, epoch)) return;
  await ctx.store.deleteMapBlocks(old, st.header.blocksize, 0, entryCount(st));
  await ctx.store.markDeleted({ name: old, ...st.header });
}

/** A lock another holder has (this side gives up the best-effort part of a repair). */
function isLockBusy(e: unknown): boolean {
  return (
    ArchipelagoError.is(e, 'ELOCKED') ||
    ArchipelagoError.is(e, 'EBUSY') ||
    ArchipelagoError.is(e, 'ETIMEDOUT')
  );
}
