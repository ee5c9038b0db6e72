/** Making maps under new names: create, clone, createFromEntries. */
import { getHeapStatistics } from 'node:v8';
import type { StorageSpace } from '@archipelago/blocker';
import { ArchipelagoError, archipError } from '@archipelago/libxseg';
import {
  DEFAULT_BLOCKSIZE,
  ENTRY_V2_SIZE,
  entriesPerMapBlock,
  isValidObjectName,
  MAX_HEADER_SIZE,
  type MapEntry,
  MapFlag,
  ObjFlag,
  objectCount,
  UINT64_MAX,
  validateVolumeName,
  ZERO_BLOCK,
  ZERO_ENTRY,
} from '@archipelago/mapfile';
import type { MapperContext } from '../context.js';
import {
  checkBlocksize,
  checkSize,
  describe,
  isIncomplete,
  isReadonly,
  MAX_VOLUME_SIZE,
  type NewMap,
  newMap,
  zeroEntry,
} from '../map.js';
import type { CloneOptions, CreateFromEntriesOptions, CreateOptions, VolumeInfo } from '../types.js';
import { dropLineage, type LineageRecord, newLineageId, readLineage, writeLineage } from './lineage.js';
import { claimName, repairing } from './repair.js';

/** What `mapStorageBytes` and `checkMapSpace` count of a map. */
export interface MapSpaceOptions {
  /**
   * The map is written SPARSE (`MapStore.sparse`, header flag 0x8): only its map blocks that are
   * not all zero entries are stored.
   */
  sparse?: boolean;
  /**
   * The map's entries, which tell a SPARSE map's stored blocks (a clone's source, a grown map's
   * entries); entries past their end are zero entries. Without them a SPARSE map is thin: it
   * stores its header only.
   */
  entries?: readonly MapEntry[];
  /**
   * Count map blocks from this one on and no header: what a grow writes (the old last block and
   * the new ones) into a map that exists. Default 0 and the header.
   */
  firstBlock?: number;
}

/**
 * Bytes a v2 map of `size` bytes in `blocksize` blocks takes in blockerm: its entries and header;
 * a SPARSE map only its header and its blocks that are not all zero entries (`opts`).
 */
export function mapStorageBytes(size: number, blocksize: number, opts: MapSpaceOptions = {}): number {
  const n = objectCount(size, blocksize);
  const per = entriesPerMapBlock(blocksize);
  const first = opts.firstBlock ?? 0;
  let bytes = first === 0 ? MAX_HEADER_SIZE : 0;
  if (!opts.sparse) return bytes + Math.max(0, n - first * per) * ENTRY_V2_SIZE;
  const entries = opts.entries;
  if (!entries) return bytes;
  const stop = Math.min(n, entries.length);
  for (let from = first * per; from < stop; from += per) {
    const to = Math.min(n, from + per);
    for (let j = from; j < Math.min(to, stop); j++) {
      if (entries[j] !== ZERO_ENTRY) {
        bytes += (to - from) * ENTRY_V2_SIZE;
        break;
      }
    }
  }
  return bytes;
}

/** `n` bytes, with the binary unit when it is at least 1 KiB (`34359738880 bytes (32 GiB)`). */
function bytesText(n: number): string {
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let u = -1;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u < 0 ? `${n} bytes` : `${n} bytes (${Math.round(v * 100) / 100} ${units[u]})`;
}

/** Bytes of this process's memory an entry of a held map takes at most (its array slot and a share). */
const ENTRY_MEMORY = 16;

/** Entries one JavaScript array holds at most (V8's FixedArray limit, 2^27 less a header). */
const MAX_HELD_ENTRIES = 2 ** 27 - 16;

/**
 * Refuses (EINVAL_SIZE) a map whose entries this process could not hold: the mapper keeps a volume's
 * entries in memory, and a 1 PiB volume has 268 million of them. Better refused up front than a
 * JavaScript heap abort halfway through writing the map.
 */
function checkMapMemory(name: string, size: number, blocksize: number): void {
  const n = objectCount(size, blocksize);
  const heap = getHeapStatistics();
  const room = heap.heap_size_limit - heap.used_heap_size;
  const most = Math.min(MAX_HELD_ENTRIES, Math.floor(room / 2 / ENTRY_MEMORY));
  if (n <= most) return;
  throw archipError(
    'EINVAL_SIZE',
    `the map of "${name}" (${size} bytes: ${n} blocks of ${blocksize} bytes) is more than the mapper can hold in memory ` +
      `(${most} entries here); the largest volume with ${blocksize}-byte blocks is ${bytesText(most * blocksize)}`,
    { details: { volume: name, size, blocks: n } },
  );
}

/**
 * Refuses (ENOSPC) a new map of `size` bytes that storage with `space` free has no room for
 * (null `space`: a blocker that cannot tell, RADOS, passes), then (EINVAL_SIZE) one whose entries
 * this process cannot hold. A 1 PiB volume's plain map alone is 32 GiB; a SPARSE one (`opts`,
 * `mapStorageBytes`) asks only for what it stores (a thin one: its header). Called before anything
 * is allocated or written.
 */
export function checkMapSpace(
  space: StorageSpace | null,
  name: string,
  size: number,
  blocksize: number,
  opts: MapSpaceOptions = {},
): void {
  const needed = mapStorageBytes(size, blocksize, opts);
  if (space === null || needed <= space.available) {
    checkMapMemory(name, size, blocksize);
    return;
  }
  throw archipError(
    'ENOSPC',
    `not enough space for the map of "${name}": ${size} bytes in ${blocksize}-byte blocks need ` +
      `${bytesText(needed)} of map, ${space.where} has ${bytesText(space.available)} available`,
    { details: { volume: name, size, needed, available: space.available, where: space.where } },
  );
}

/**
 * Creates an empty volume of `size` bytes: every block is the zero block. With `incomplete`, the
 * volume is created INCOMPLETE and opened by this mapper for its builder (import), which makes it
 * a volume with `complete` once it is filled.
 */
export async function create(ctx: MapperContext, name: string, opts: CreateOptions): Promise<VolumeInfo> {
  ctx.checkOpen();
  validateVolumeName(name);
  const blocksize = opts.blocksize ?? DEFAULT_BLOCKSIZE;
  checkBlocksize(blocksize);
  checkSize(opts.size);
  checkMapSpace(await ctx.store.space(), name, opts.size, blocksize, { sparse: ctx.store.sparse });
  const entries = Array.from({ length: objectCount(opts.size, blocksize) }, zeroEntry);
  const flags = opts.incomplete ? MapFlag.INCOMPLETE : 0;
  let info = await writeNew(ctx, name, { size: opts.size, blocksize, flags, entries });
  if (opts.incomplete) {
    const vol = await ctx.locks.openVolume(name, { incomplete: true }, false);
    info = describe(vol.map, ctx.locks.identity);
  }
  ctx.log.info(
    { volume: name, size: opts.size, epoch: String(info.epoch), incomplete: info.incomplete },
    'created volume',
  );
  return info;
}

/**
 * Makes volume `name`, created `incomplete` and open in this mapper, a volume: its header is
 * rewritten without INCOMPLETE. The builder calls it once everything it wrote is durable. A
 * volume that is complete already is left as it is.
 */
export async function complete(ctx: MapperContext, name: string): Promise<VolumeInfo> {
  ctx.checkOpen();
  if (!ctx.locks.cached(name)) {
    throw archipError(
      'EINVAL',
      `cannot complete "${name}": this mapper is not building it (create it incomplete)`,
      {
        details: { volume: name },
      },
    );
  }
  const map = await ctx.locks.withChange(
    name,
    async (vol) => {
      if (isIncomplete(vol.map)) {
        const flags = vol.map.flags & ~MapFlag.INCOMPLETE;
        await ctx.store.writeHeader(vol.map, flags);
        vol.map = { ...vol.map, flags };
        ctx.log.info({ volume: name }, 'completed volume');
      }
      return vol.map;
    },
    { incomplete: true },
  );
  return describe(map, await ctx.locks.owner(name));
}

/** Creates volume `name` as a thin clone of snapshot `source`; no data is copied. */
export async function clone(
  ctx: MapperContext,
  source: string,
  name: string,
  opts: CloneOptions = {},
): Promise<VolumeInfo> {
  ctx.checkOpen();
  validateVolumeName(name);
  // The source's host lock too (both in name order): no other process of this host removes or
  // renames the snapshot while its entries are being copied. A snapshot another process of this
  // host holds open (mapped) is kept from that by its holder: its host lock is not waited for.
  return ctx.locks.withHostLocks([source, name], () => cloneLocked(ctx, source, name, opts), {
    orHeldOpen: [source],
  });
}

async function cloneLocked(
  ctx: MapperContext,
  source: string,
  name: string,
  opts: CloneOptions,
): Promise<VolumeInfo> {
  const src = await repairing(ctx, () => ctx.store.load(source, opts));
  if (!isReadonly(src)) {
    throw archipError(
      'ENOTSNAPSHOT',
      `cannot clone "${source}": it is a writable volume; snapshot it first`,
      {
        details: { volume: source },
      },
    );
  }
  const size = opts.size ?? src.size;
  checkSize(size);
  if (size < src.size) {
    throw archipError(
      'EINVAL_SIZE',
      `clone size ${size} is smaller than snapshot "${source}" (${src.size} bytes)`,
    );
  }
  // The source is read without its name's lock (the host lock excludes other processes only), so
  // a remove or rename of it in this process may run between this read and the claim of `name`.
  // Linearizable outcomes: a clone onto its own name exists already when the source does (it just
  // did); a claim that finds `name` taken after the source went is the clone coming second.
  if (name === source) {
    throw archipError('EEXIST_VOLUME', `volume "${name}" already exists (it is the clone's source)`, {
      details: { volume: name },
    });
  }
  // A SPARSE clone stores the source's map blocks that are not all zero (the entries it takes).
  checkMapSpace(await ctx.store.space(), name, size, src.blocksize, {
    sparse: ctx.store.sparse,
    entries: src.entries,
  });
  const n = objectCount(size, src.blocksize);
  const entries: MapEntry[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const e = src.entries[i];
    if (!e) entries[i] = zeroEntry();
    else {
      const flags = e.flags & (ObjFlag.ARCHIP | ObjFlag.ZERO);
      entries[i] = flags === e.flags ? e : { name: e.name, flags }; // entries are values
    }
  }
  const srcLineage = await readLineage(ctx.blockerm, source);
  const info = await writeNew(
    ctx,
    name,
    { size, blocksize: src.blocksize, flags: 0, entries },
    { parent: { name: source, id: srcLineage?.id ?? null } },
  ).catch(async (e: unknown) => {
    // `name` taken meanwhile by the source itself (renamed to it): the clone came second.
    if (ArchipelagoError.is(e, 'EEXIST_VOLUME') && src.version === 2) {
      const now = await ctx.store.state(source);
      if (!now || now.header.flags & MapFlag.DELETED) {
        throw archipError('ENOENT_VOLUME', `no volume named "${source}"`, { details: { volume: source } });
      }
    }
    throw e;
  });
  ctx.log.info({ volume: name, source, size }, 'cloned volume');
  return info;
}

/**
 * Creates map `name` from explicit entries (reference §2.5, X_CREATE; how Pithos stores a file's
 * hashmap as a map). The entry count must equal ceil(size / blocksize). Zero-hash entries become
 * zero entries; ARCHIP is never set (the objects are content-addressed, not owned); an entry is
 * WRITABLE unless it is `readonly`. Fails with EEXIST_VOLUME when a live map has the name.
 */
export async function createFromEntries(
  ctx: MapperContext,
  name: string,
  opts: CreateFromEntriesOptions,
): Promise<VolumeInfo> {
  ctx.checkOpen();
  validateVolumeName(name);
  const blocksize = opts.blocksize || DEFAULT_BLOCKSIZE;
  checkBlocksize(blocksize);
  if (!Number.isSafeInteger(opts.size) || opts.size < 0 || opts.size > MAX_VOLUME_SIZE) {
    throw archipError('EINVAL_SIZE', `map size must be 0..${MAX_VOLUME_SIZE} bytes, got ${opts.size}`);
  }
  const n = objectCount(opts.size, blocksize);
  if (!Array.isArray(opts.entries) || opts.entries.length !== n) {
    throw archipError(
      'EINVAL',
      `a map of ${opts.size} bytes in ${blocksize}-byte blocks needs ${n} entries, got ${opts.entries?.length}`,
      { details: { size: opts.size, blocksize, expected: n } },
    );
  }
  const entries: MapEntry[] = opts.entries.map((e, i) => {
    if (!e || typeof e.name !== 'string' || !isValidObjectName(e.name)) {
      throw archipError('EINVAL_NAME', `entry ${i} does not name a valid object`, {
        details: { index: i },
      });
    }
    if (e.name === ZERO_BLOCK) return zeroEntry();
    return { name: e.name, flags: e.readonly ? 0 : ObjFlag.WRITABLE };
  });
  const flags = opts.readonly ? MapFlag.READONLY : 0;
  const info = await writeNew(ctx, name, { size: opts.size, blocksize, flags, entries });
  ctx.log.info({ volume: name, size: opts.size, entries: n }, 'created map from entries');
  return info;
}

/**
 * Writes a new map under `name`, holding its lock: fails with EEXIST_VOLUME when a live (or
 * incomplete) map has the name; the map takes the epoch one past any deleted map of that name,
 * so object names are never reused. The lineage record (`lineage`: a new one, for a clone; none:
 * not recorded, a record left under the name goes), then map blocks, the header last: a crash before the header
 * leaves no map (the record and blocks are replaced by the next map of the name).
 */
async function writeNew(
  ctx: MapperContext,
  name: string,
  map: Omit<NewMap, 'epoch'>,
  lineage?: Pick<LineageRecord, 'parent'>,
): Promise<VolumeInfo> {
  const made = await ctx.locks.withName(name, async () => {
    const prevEpoch = await claimName(ctx, name, new Set([name]));
    if (prevEpoch >= UINT64_MAX - 2n) {
      throw archipError('EOVERFLOW', `volume name "${name}" has used up its epochs`);
    }
    if (lineage)
      await writeLineage(ctx.blockerm, name, { id: newLineageId(), created: Date.now(), ...lineage });
    else await dropLineage(ctx.blockerm, name); // one a former map, or a killed clone, left
    // New maps are SPARSE (unless the store is told otherwise): a thin map's zero blocks are not written.
    const next = newMap(name, { ...map, flags: ctx.store.newMapFlags(map.flags), epoch: prevEpoch + 1n });
    await ctx.store.writeMap(next);
    return next;
  });
  return describe(made, await ctx.locks.owner(name));
}
