/**
 * Storage accounting (`vlmc du`): what maps take in blockerb, counted from their entries and the
 * sizes of the objects they name. It works through the `MapperApi` and the blocker interface
 * only, so it runs the same against an embedded `Mapper` and the daemons' clients.
 */
import type { Blocker } from '@archipelago/blocker';
import { ArchipelagoError } from '@archipelago/libxseg';
import type { MapperApi } from './api.js';
import { unnamedGatewayMaps } from './gc.js';
import { isContentName, isZero } from './map.js';
import { pool } from './mutex.js';
import type { MapEntry } from './types.js';

/**
 * What the accounting reads: the maps, and the data objects' sizes; with `listTrash`, the trash's
 * entries too (`StoreUsage.trash*`; without it they count 0); with `blockerm`, the gateway's
 * records: a hashed map the gateway made that no gateway file names any more (its last file was
 * deleted) counts as removed, as the next gc removes it (without it, such a map counts live).
 */
export interface UsageSource {
  readonly mapper: Pick<MapperApi, 'info' | 'list' | 'entries'> & Partial<Pick<MapperApi, 'listTrash'>>;
  readonly blockerb: Pick<Blocker, 'info' | 'list'>;
  readonly blockerm?: Pick<Blocker, 'info' | 'list' | 'read'>;
}

/** The use of one map (`vlmc du NAME`). */
export interface VolumeUsage {
  name: string;
  readonly: boolean;
  /** Logical size in bytes. */
  size: number;
  blocks: number;
  /** Blocks backed by an object (not the zero block). */
  allocated: number;
  /** Distinct objects the map references. */
  objects: number;
  /** Of those, content-addressed (hashed) objects. */
  contentObjects: number;
  /** Bytes of all allocated blocks' objects, counted once per block (what a copy would take). */
  bytesReferenced: number;
  /** Bytes of the distinct objects (what the map really takes in blockerb). */
  bytesStored: number;
  /** Bytes saved inside this map by blocks sharing an object: referenced - stored. */
  bytesDeduplicated: number;
  /** Bytes of the distinct objects that other live maps reference too (see UsageSource). */
  bytesShared: number;
  /** Bytes of the distinct objects only this map references. */
  bytesExclusive: number;
  /** Referenced objects that are missing from blockerb (they read as zeros). */
  missingObjects: number;
}

/** The use of the whole store (`vlmc du`). */
export interface StoreUsage {
  /**
   * Live maps. Gateway maps no file names (gc removes them) count as removed when the source has
   * `blockerm` (see UsageSource): here, in `size` and in what is referenced.
   */
  maps: number;
  /** Sum of the logical sizes of every live map. */
  size: number;
  allocated: number;
  /** Bytes of every allocated block of every map, counted per block. */
  bytesReferenced: number;
  /** Distinct objects referenced by some map, and their bytes. */
  objects: number;
  bytesStored: number;
  /** referenced - stored: what sharing (snapshots, clones, content addressing) saves. */
  bytesDeduplicated: number;
  contentObjects: number;
  /** Every object in blockerb, and their bytes. */
  blockerObjects: number;
  blockerBytes: number;
  /**
   * Objects no live map references (left by removed volumes, deleted gateway files or interrupted
   * work), the trash's included. Bytes of every object are counted here (gc's report counts only
   * the unreferenced ones' bytes).
   */
  unreferencedObjects: number;
  unreferencedBytes: number;
  /** Removed volumes and snapshots in the trash (`vlmc trash ls`). */
  trashEntries: number;
  /**
   * Of the unreferenced objects, those a trash entry names, and their bytes: what the trash holds
   * (gc frees them once their entries expire, `[mapperd] trash_ttl`; `vlmc trash restore` brings
   * them back).
   */
  trashObjects: number;
  trashBytes: number;
}

/**
 * The use of map `name` (a volume, snapshot or hashed map): its blocks, the distinct objects it
 * names and their bytes, and how many of those bytes other live maps share. ENOENT_VOLUME when
 * there is no such map.
 */
export async function volumeUsage(src: UsageSource, name: string): Promise<VolumeUsage> {
  const sizeOf = objectSizes(src.blockerb);
  const info = await src.mapper.info(name);
  const entries = await src.mapper.entries(name);
  const distinct = new Set<string>();
  let allocated = 0;
  let referenced = 0;
  for (const e of entries) {
    if (isZero(e)) continue;
    allocated++;
    distinct.add(e.name);
  }
  const others = new Set<string>();
  for (const m of await allMaps(src.mapper, await gone(src))) {
    if (m.name === name) continue;
    for (const e of m.entries) if (!isZero(e) && distinct.has(e.name)) others.add(e.name);
  }
  let stored = 0;
  let shared = 0;
  let missing = 0;
  let content = 0;
  for (const o of distinct) {
    const s = await sizeOf(o);
    if (s === null) missing++;
    stored += s ?? 0;
    if (others.has(o)) shared += s ?? 0;
    if (isContentName(o)) content++;
  }
  for (const e of entries) if (!isZero(e)) referenced += (await sizeOf(e.name)) ?? 0;
  return {
    name,
    readonly: info.readonly,
    size: info.size,
    blocks: entries.length,
    allocated,
    objects: distinct.size,
    contentObjects: content,
    bytesReferenced: referenced,
    bytesStored: stored,
    bytesDeduplicated: referenced - stored,
    bytesShared: shared,
    bytesExclusive: stored - shared,
    missingObjects: missing,
  };
}

/**
 * The use of the whole store: every live map's blocks and the distinct objects they name, and
 * every object in blockerb, including those no map names.
 */
export async function storeUsage(src: UsageSource): Promise<StoreUsage> {
  const sizeOf = objectSizes(src.blockerb);
  const removed = await gone(src);
  const maps = await allMaps(src.mapper, removed);
  const distinct = new Set<string>();
  let size = 0;
  let allocated = 0;
  let referenced = 0;
  for (const v of await src.mapper.list()) if (!removed.has(v.name)) size += v.size;
  // Every object's size, asked of blockerb STAT_PARALLELISM at a time (one at a time, a store of
  // 90,000 RADOS objects took 25 s).
  const listed: string[] = [];
  for await (const o of src.blockerb.list()) listed.push(o);
  const named = new Set<string>();
  for (const m of maps) for (const e of m.entries) if (!isZero(e)) named.add(e.name);
  const toStat = [...new Set([...listed, ...named])];
  await pool(toStat.length, STAT_PARALLELISM, (i) => sizeOf(toStat[i]!));
  for (const m of maps) {
    for (const e of m.entries) {
      if (isZero(e)) continue;
      allocated++;
      distinct.add(e.name);
      referenced += (await sizeOf(e.name)) ?? 0;
    }
  }
  let stored = 0;
  let content = 0;
  for (const o of distinct) {
    stored += (await sizeOf(o)) ?? 0;
    if (isContentName(o)) content++;
  }
  const trash = await trashObjects(src.mapper, distinct);
  let blockerObjects = 0;
  let blockerBytes = 0;
  let unrefObjects = 0;
  let unrefBytes = 0;
  let trashObjectCount = 0;
  let trashBytes = 0;
  for (const o of listed) {
    const s = (await sizeOf(o)) ?? 0;
    blockerObjects++;
    blockerBytes += s;
    if (!distinct.has(o)) {
      unrefObjects++;
      unrefBytes += s;
      if (trash.objects.has(o)) {
        trashObjectCount++;
        trashBytes += s;
      }
    }
  }
  return {
    maps: maps.length,
    size,
    allocated,
    bytesReferenced: referenced,
    objects: distinct.size,
    bytesStored: stored,
    bytesDeduplicated: referenced - stored,
    contentObjects: content,
    blockerObjects,
    blockerBytes,
    unreferencedObjects: unrefObjects,
    unreferencedBytes: unrefBytes,
    trashEntries: trash.entries,
    trashObjects: trashObjectCount,
    trashBytes,
  };
}

/**
 * The trash's entries and the objects they name that no live map (`live`) names; an entry purged
 * or restored meanwhile is left out.
 */
async function trashObjects(
  mapper: UsageSource['mapper'],
  live: ReadonlySet<string>,
): Promise<{ entries: number; objects: Set<string> }> {
  const objects = new Set<string>();
  if (!mapper.listTrash) return { entries: 0, objects };
  let entries = 0;
  for (const t of await mapper.listTrash()) {
    let es: readonly MapEntry[];
    try {
      es = await mapper.entries(t.entry);
    } catch (e) {
      if (ArchipelagoError.is(e, 'ENOENT_VOLUME')) continue; // purged or restored meanwhile
      throw e;
    }
    entries++;
    for (const e of es) if (!isZero(e) && !live.has(e.name)) objects.add(e.name);
  }
  return { entries, objects };
}

/** Sizes asked of blockerb at once by storeUsage. */
const STAT_PARALLELISM = 32;

/** The size of an object in blockerb, null when it is missing; each object is asked once. */
function objectSizes(blockerb: UsageSource['blockerb']): (name: string) => Promise<number | null> {
  const sizes = new Map<string, number | null>();
  return async (o) => {
    let s = sizes.get(o);
    if (s === undefined) {
      s = (await blockerb.info(o))?.size ?? null;
      sizes.set(o, s);
    }
    return s;
  };
}

/** Live maps that count as removed: the gateway's maps no file names (see UsageSource). */
async function gone(src: UsageSource): Promise<ReadonlySet<string>> {
  return src.blockerm ? unnamedGatewayMaps(src.blockerm) : new Set();
}

/** The entries of every live map but those of `removed` (one removed meanwhile is left out). */
async function allMaps(
  mapper: UsageSource['mapper'],
  removed: ReadonlySet<string>,
): Promise<Array<{ name: string; entries: readonly MapEntry[] }>> {
  const out: Array<{ name: string; entries: readonly MapEntry[] }> = [];
  for (const v of await mapper.list()) {
    if (removed.has(v.name)) continue;
    try {
      out.push({ name: v.name, entries: await mapper.entries(v.name) });
    } catch (e) {
      if (!ArchipelagoError.is(e, 'ENOENT_VOLUME')) throw e; // removed meanwhile
    }
  }
  return out;
}
