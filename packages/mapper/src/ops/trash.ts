/**
 * The trash: where `remove` puts volumes and snapshots (ops/remove.ts), until they are restored
 * or purged (README, "Trash").
 *
 * A trash entry is a live map (not DELETED) under a reserved name,
 * `-trash.<removal time: 12 hex digits of ms since the epoch>.<original name>`: it starts with
 * '-', which no volume name may (mapfile's `validateVolumeName`), so no user name can be one, the
 * mapper never opens one for I/O or changes (they validate the name), and `list` hides them. Its
 * map is the removed map's, entries and flags (READONLY: a snapshot) unchanged; the original name
 * and the removal time are in its name, so no sidecar object is needed. The same name removed
 * twice gives two entries (two removal times; a clash within one millisecond takes the next).
 *
 * Entries move in and out with `moveMap` (ops/rename.ts), crash-atomic: an interrupted remove or
 * restore is settled by the next use of either name, and `listTrash` settles what it finds.
 */
import { ArchipelagoError, archipError } from '@archipelago/libxseg';
import { type MapEntry, MapFlag, validateVolumeName } from '@archipelago/mapfile';
import type { MapperContext } from '../context.js';
import { describe, isIncomplete, isOwned, isZero, type LoadedMap } from '../map.js';
import { pool } from '../mutex.js';
import type { VolumeInfo } from '../types.js';
import { moveMap } from './rename.js';
import { settle } from './repair.js';

/** What every trash entry's name starts with ('-': no volume name can). */
export const TRASH_PREFIX = '-trash.';
const TRASH_NAME = /^-trash\.([0-9a-f]{12})\.(.+)$/;

/** The trash name of `name` removed at `removedAtMs`. */
export function trashName(name: string, removedAtMs: number): string {
  return `${TRASH_PREFIX}${Math.floor(removedAtMs).toString(16).padStart(12, '0')}.${name}`;
}

/**
 * The original name and removal time of trash entry `entry`, or null when `entry` is no trash
 * entry's name (also for its map blocks and lock object: their tail is no volume name).
 */
export function parseTrashName(entry: string): { name: string; removedAt: number } | null {
  const m = TRASH_NAME.exec(entry);
  if (!m) return null;
  const name = m[2]!;
  try {
    validateVolumeName(name);
  } catch {
    return null;
  }
  return { name, removedAt: Number.parseInt(m[1]!, 16) };
}

/** True when `name` is a trash entry's name. */
export const isTrashName = (name: string): boolean => parseTrashName(name) !== null;

/**
 * `first`, or the trash name of the same volume one millisecond later, ..., whichever no map has
 * used yet (a name removed twice within one millisecond). The caller holds the volume's lock: no
 * one else makes trash names of it.
 */
export async function freeTrashName(ctx: MapperContext, first: string): Promise<string> {
  let entry = first;
  while ((await ctx.store.readHead(entry)) !== null) {
    const p = parseTrashName(entry)!;
    entry = trashName(p.name, p.removedAt + 1);
  }
  return entry;
}

/**
 * Drops a map for good: marks it deleted (the header stays, so the name's epoch survives; from
 * here on the map is gone, whatever happens next), then deletes the objects it owns that `mine`
 * accepts, and its map blocks. Killed after the header, what it owned is garbage for gc; before,
 * nothing happened. The caller holds the name's lock. Returns how many objects it deleted.
 */
export async function dropMap(
  ctx: MapperContext,
  map: LoadedMap,
  mine: (e: MapEntry, index: number) => boolean = () => true,
): Promise<number> {
  await ctx.store.markDeleted(map);
  const owned: string[] = [];
  map.entries.forEach((e, i) => {
    if (isOwned(e) && !isZero(e) && mine(e, i)) owned.push(e.name);
  });
  await pool(owned.length, ctx.parallelism, (i) => ctx.blockerb.delete(owned[i]!));
  await ctx.store.deleteMapBlocks(map.name, map.blocksize, 0, map.entries.length);
  ctx.log.info({ volume: map.name, deleted: owned.length, incomplete: isIncomplete(map) }, 'dropped map');
  return owned.length;
}

/** One volume or snapshot in the trash (`listTrash`). */
export interface TrashEntry {
  /** The entry's internal map name (`-trash.<time>.<name>`): which entry, when a name has several. */
  entry: string;
  /** The name it had. */
  name: string;
  kind: 'volume' | 'snapshot';
  size: number;
  blocksize: number;
  /** When it was removed, ms since the epoch. */
  removedAt: number;
  /** When it may be purged (removedAt + the trash TTL), ms since the epoch. */
  expiresAt: number;
}

export interface TrashOptions {
  /** How long an entry stays in the trash, ms (`[mapperd] trash_ttl` × 1000; default 0: until the next purge). */
  ttlMs?: number;
}

/**
 * Every entry of the trash, oldest removal first (then by name). Reads one header per entry; an
 * interrupted remove or restore found on the way is settled when its locks are free (else the
 * entry is not listed: it is not one yet, or not any more).
 */
export async function listTrash(ctx: MapperContext, opts: TrashOptions = {}): Promise<TrashEntry[]> {
  ctx.checkOpen();
  const ttlMs = opts.ttlMs ?? 0;
  const found: string[] = [];
  for await (const obj of ctx.store.objects()) if (isTrashName(obj)) found.push(obj);
  const out: TrashEntry[] = [];
  for (const entry of found) {
    let st = await ctx.store.state(entry);
    if (st?.intent) {
      await settle(ctx, entry).catch(() => null);
      st = await ctx.store.state(entry);
    }
    if (!st || st.header.flags & (MapFlag.DELETED | MapFlag.INCOMPLETE)) continue;
    const { name, removedAt } = parseTrashName(entry)!;
    out.push({
      entry,
      name,
      kind: st.header.flags & MapFlag.READONLY ? 'snapshot' : 'volume',
      size: st.header.size,
      blocksize: st.header.blocksize,
      removedAt,
      expiresAt: removedAt + ttlMs,
    });
  }
  return out.sort((a, b) => a.removedAt - b.removedAt || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export interface RestoreOptions {
  /** Which entry of the name (`TrashEntry.entry`); default: the latest removed. */
  entry?: string;
}

/**
 * Brings volume or snapshot `name` back from the trash under its name, as it was removed (a new
 * epoch past every earlier map of the name, so no object name is reused). ENOENT_VOLUME when the
 * trash has no such entry; EEXIST_VOLUME, changing nothing, when the name was used again since.
 */
export async function restoreTrash(
  ctx: MapperContext,
  name: string,
  opts: RestoreOptions = {},
): Promise<VolumeInfo> {
  ctx.checkOpen();
  validateVolumeName(name);
  const mine = (await listTrash(ctx)).filter(
    (e) => e.name === name && (opts.entry === undefined || e.entry === opts.entry),
  );
  const pick = mine[mine.length - 1];
  if (!pick) {
    const which = opts.entry === undefined ? '' : ` (entry ${opts.entry})`;
    throw archipError('ENOENT_VOLUME', `"${name}"${which} is not in the trash`, {
      details: { volume: name },
    });
  }
  const { entry } = pick;
  return ctx.locks.withHostLocks([entry, name], () =>
    ctx.locks.withName(entry, async () => {
      const map = await ctx.store.load(entry, {});
      const restored = await ctx.locks.withName(name, () =>
        moveMap(ctx, map, name, new Set([entry, name])).catch((e: unknown) => {
          if (!ArchipelagoError.is(e, 'EEXIST_VOLUME')) throw e;
          throw archipError(
            'EEXIST_VOLUME',
            `cannot restore "${name}" from the trash: the name was used again since it was removed; remove or rename that "${name}" first`,
            { details: { volume: name, entry } },
          );
        }),
      );
      ctx.log.info({ volume: name, trash: entry }, 'restored volume from the trash');
      return describe(restored, null);
    }),
  );
}

/**
 * Drops trash entry `entry` for good (`dropMap`): its header becomes DELETED, the objects it owns
 * and its map blocks go; what it shares with other maps stays (gc collects what nothing names).
 * ENOENT_VOLUME when there is no such entry (restored or purged already).
 */
export async function purgeTrash(ctx: MapperContext, entry: string): Promise<TrashEntry> {
  ctx.checkOpen();
  const p = parseTrashName(entry);
  if (!p) throw archipError('EINVAL_NAME', `"${entry}" is not the name of a trash entry`);
  return ctx.locks.withName(entry, async () => {
    await settle(ctx, entry, new Set([entry]));
    const map = await ctx.store.load(entry, {});
    await dropMap(ctx, map);
    ctx.log.info({ volume: p.name, trash: entry }, 'purged from the trash');
    return {
      entry,
      ...p,
      kind: map.flags & MapFlag.READONLY ? 'snapshot' : 'volume',
      size: map.size,
      blocksize: map.blocksize,
      expiresAt: p.removedAt,
    };
  });
}

/** Purge errors that skip an entry: gone meanwhile, or its lock busy. */
const SKIPPED = new Set<string>(['ENOENT_VOLUME', 'ELOCKED', 'EBUSY', 'ETIMEDOUT']);

/**
 * Purges every entry removed at least `ttlMs` before `nowMs` (what gc does first, with
 * `[mapperd] trash_ttl`; 0: every entry). An entry whose lock is busy (a restore under way) or
 * that is gone meanwhile is left out. Returns the entries purged.
 */
export async function purgeExpiredTrash(ctx: MapperContext, nowMs: number, ttlMs = 0): Promise<TrashEntry[]> {
  const out: TrashEntry[] = [];
  for (const e of await listTrash(ctx, { ttlMs })) {
    if (e.expiresAt > nowMs) continue;
    try {
      out.push({ ...(await purgeTrash(ctx, e.entry)), expiresAt: e.expiresAt });
    } catch (err) {
      if (!(ArchipelagoError.isInstance(err) && SKIPPED.has(err.code))) throw err;
      ctx.log.warn({ trash: e.entry, err: String(err) }, 'purge: entry skipped');
    }
  }
  return out;
}
