/**
 * The map store: every read and write of map objects in blockerm goes through here (headers,
 * map blocks, single entries, the v0/v1 → v2 upgrade). It caches nothing; which maps are cached
 * is the volume locks' business (`volume-locks.ts`).
 */
import { type Blocker, readIntoBuffer, type StorageSpace } from '@archipelago/blocker';
import { archipError } from '@archipelago/libxseg';
import {
  corruptMap,
  decodeEntriesV2,
  decodeHeaderV2,
  decodeIntent,
  decodeV0,
  decodeV1,
  detectVersion,
  ENTRY_V2_SIZE,
  encodeEntriesV2,
  encodeEntryV2,
  encodeHeaderV2,
  encodeIntent,
  entriesPerMapBlock,
  isValidObjectName,
  MAX_HEADER_SIZE,
  type MapEntry,
  MapFlag,
  type MapHeader,
  type MapIntent,
  mapBlockLocation,
  mapBlockName,
  objectCount,
  ZERO_ENTRY,
  zeroRecords,
} from '@archipelago/mapfile';
import { incompleteError, type LoadedMap } from './map.js';
import { pool } from './mutex.js';
import type { LoadOptions, Logger } from './types.js';

/** Map-block buffers a store keeps warm for loading maps (and map loads run this many reads at once). */
const MAP_BUFFERS = 2;

/** A v2 header as stored: its fields and the intent record after it (FORMAT.md). */
export interface HeaderState {
  header: MapHeader;
  intent: MapIntent | null;
}

/** What a header is written from: the map's name and geometry. */
export type HeaderOf = Pick<LoadedMap, 'name' | 'size' | 'blocksize' | 'epoch'>;

export interface MapStoreOptions {
  /** Map blocks written or deleted at once. */
  parallelism: number;
  log: Logger;
  /**
   * New maps (create, clone, snapshot, import) are written SPARSE: map blocks of nothing but zero
   * entries are not stored (FORMAT.md, "Sparse map blocks"). Default true; false writes plain v2
   * maps, which the original mapper can read.
   */
  sparse?: boolean;
}

/** What this store knows about the map blocks of a SPARSE map (keyed by its entries array). */
interface BlockState {
  name: string;
  /** Map blocks known absent (they read as zero entries). */
  absent: Set<number>;
  /** Map blocks known present. Blocks in neither set are looked up when first written. */
  present: Set<number>;
}

/** True when entries [from, to) are all the plain zero entry (what an absent map block reads as). */
function allZero(entries: readonly MapEntry[], from: number, to: number): boolean {
  for (let j = from; j < to; j++) if (entries[j] !== ZERO_ENTRY) return false;
  return true;
}

/** How many times a load re-reads a SPARSE map that changed under it before it gives up. */
const SPARSE_RELOADS = 3;

export class MapStore {
  /** Map-block read buffers kept warm between map loads (at most MAP_BUFFERS). */
  private readonly mapBuffers: Buffer[] = [];
  /** Block states of SPARSE maps this store loaded or wrote, by entries array (see writeEntry). */
  private readonly blockStates = new WeakMap<MapEntry[], BlockState>();
  /** Absent map blocks being written whole before their first entry write, by object name. */
  private readonly materializing = new Map<string, Promise<void>>();

  constructor(
    private readonly blockerm: Blocker,
    private readonly opts: MapStoreOptions,
  ) {}

  /** Whether new maps are written SPARSE (MapStoreOptions.sparse). */
  get sparse(): boolean {
    return this.opts.sparse ?? true;
  }

  /** The header flags of a new map with `flags`: SPARSE added when this store writes new maps so. */
  newMapFlags(flags: number): number {
    return this.sparse ? flags | MapFlag.SPARSE : flags;
  }

  /** Free space of blockerm's storage, or null when its blocker cannot tell (`Blocker.space`). */
  async space(): Promise<StorageSpace | null> {
    return this.blockerm.space ? this.blockerm.space() : null;
  }

  /** Reads the first 512 bytes of a map object; null when it does not exist. */
  async readHead(obj: string): Promise<{ bytes: Buffer; stored: number } | null> {
    const info = await this.blockerm.info(obj);
    if (!info) return null;
    const bytes = await this.blockerm.read(obj, 0, MAX_HEADER_SIZE, { missingOk: true });
    return { bytes, stored: Math.min(info.size, MAX_HEADER_SIZE) };
  }

  /**
   * The v2 header stored under `name` and its intent record, deleted or not; null when there is
   * no v2 header (no object, or a v0/v1 map). For settling interrupted operations (ops/repair.ts).
   */
  async state(name: string): Promise<HeaderState | null> {
    const head = await this.readHead(name);
    if (!head) return null;
    const bytes = head.bytes.subarray(0, head.stored);
    try {
      if (detectVersion(bytes, name) !== 2) return null;
    } catch {
      return null; // not a map we know: nothing to settle
    }
    return { header: decodeHeaderV2(bytes, name), intent: decodeIntent(bytes) };
  }

  /**
   * Loads a map from storage, whatever its version. ENOENT_VOLUME when absent or deleted; EBUSY
   * when INCOMPLETE, unless `opts.incomplete` (its builder).
   */
  async load(name: string, opts: LoadOptions, reload = 0): Promise<LoadedMap> {
    if (!isValidObjectName(name)) throw archipError('EINVAL_NAME', `"${name}" is not a valid map name`);
    let storedAs = name;
    let head = await this.readHead(name);
    if (!head && !name.startsWith('archip_')) {
      storedAs = `archip_${name}`;
      head = await this.readHead(storedAs);
    }
    if (!head) throw archipError('ENOENT_VOLUME', `no volume named "${name}"`, { details: { volume: name } });
    const version = detectVersion(head.bytes, name, { assumeV0: opts.assumeV0 });
    let h: MapHeader;
    let entries: MapEntry[];
    if (version === 2) {
      h = decodeHeaderV2(head.bytes.subarray(0, head.stored), name);
      if (h.flags & MapFlag.DELETED) {
        throw archipError('ENOENT_VOLUME', `no volume named "${name}" (it was removed)`, {
          details: { volume: name },
        });
      }
      if (h.flags & MapFlag.INCOMPLETE && !opts.incomplete) {
        throw incompleteError(name, decodeIntent(head.bytes.subarray(0, head.stored)));
      }
      const read = await this.readEntries(name, h);
      entries = read.entries;
      if (read.absent.size > 0) {
        // An absent block of a SPARSE map reads as zero entries, but it may also have been deleted
        // under this read: a remove, a trash purge or a rollback commits on the header first and
        // deletes blocks after. If the header changed, read the map as it is now.
        const again = await this.readHead(name);
        if (!again?.bytes.equals(head.bytes)) {
          if (reload < SPARSE_RELOADS) return this.load(name, opts, reload + 1);
          throw corruptMap(name, 'map-changed', 'the map changed while it was read (absent map blocks)', {});
        }
      }
    } else {
      // v0 and v1 maps are one object: read it whole.
      const info = await this.blockerm.info(storedAs);
      const whole = await this.blockerm.read(storedAs, 0, info?.size ?? 0);
      ({ header: h, entries } = version === 1 ? decodeV1(whole, name) : decodeV0(whole, name, opts.v0Size));
    }
    const { size, blocksize, flags, epoch } = h;
    return { name, storedAs, version, size, blocksize, flags, epoch, entries };
  }

  /**
   * The epoch of a deleted map stored under `name`, 0 when there is none; EEXIST_VOLUME when a
   * live or incomplete map (of any version) is there.
   */
  async deletedEpoch(name: string): Promise<bigint> {
    const head = await this.readHead(name);
    if (!head) return 0n;
    const version = detectVersion(head.bytes, name);
    if (version === 2) {
      const h = decodeHeaderV2(head.bytes.subarray(0, head.stored), name);
      if (h.flags & MapFlag.DELETED) return h.epoch;
      if (h.flags & MapFlag.INCOMPLETE) {
        throw archipError(
          'EEXIST_VOLUME',
          `volume "${name}" already exists, incomplete (an interrupted import or rename); remove it (vlmc remove ${name})`,
          { details: { volume: name, incomplete: true } },
        );
      }
    }
    throw archipError('EEXIST_VOLUME', `volume "${name}" already exists`, { details: { volume: name } });
  }

  /** Every object in blockerm: map headers, map blocks, anything else stored there. */
  objects(): AsyncIterable<string> {
    return this.blockerm.list();
  }

  /**
   * Rewrites a v0/v1 map (or one found under `archip_<name>`) as v2 under its own name (§1.8):
   * map blocks, then the header (which replaces a v0/v1 map stored under the name itself: the
   * commit), then `archip_<name>` is deleted. Killed before the header, the old map is intact
   * (the blocks are overwritten next time); killed after it, `archip_<name>` is a leftover that
   * nothing reads (`load` and `list` look at `<name>` first).
   */
  async upgrade(map: LoadedMap): Promise<LoadedMap> {
    const next: LoadedMap = { ...map, version: 2, storedAs: map.name };
    await this.writeMap(next);
    if (map.storedAs !== map.name) await this.blockerm.delete(map.storedAs);
    this.opts.log.info({ volume: map.name, from: map.version }, 'upgraded map to AMF v2');
    return next;
  }

  /**
   * The map-block contents of a map (entries encoded as v2 records, one buffer per block), from
   * map block `first` on.
   */
  encodeBlocks(map: LoadedMap, first = 0): Buffer[] {
    const per = entriesPerMapBlock(map.blocksize);
    const n = map.entries.length;
    const blocks = Math.ceil(n / per);
    return Array.from({ length: Math.max(0, blocks - first) }, (_, i) => {
      const b = first + i;
      const from = b * per;
      const to = Math.min(n, from + per);
      // A block of nothing but zero entries (most of a thin map) shares one encoded buffer.
      return allZero(map.entries, from, to)
        ? zeroRecords(to - from)
        : encodeEntriesV2(map.entries.slice(from, to));
    });
  }

  /** For each map block of `map`: true when it holds nothing but plain zero entries. */
  zeroBlocks(map: Pick<LoadedMap, 'blocksize' | 'entries'>): boolean[] {
    const per = entriesPerMapBlock(map.blocksize);
    const n = map.entries.length;
    return Array.from({ length: Math.ceil(n / per) }, (_, b) =>
      allZero(map.entries, b * per, Math.min(n, b * per + per)),
    );
  }

  /**
   * Writes a whole v2 map: every map block first, then the header (reference §1.7), which makes
   * it a map (a crash before it leaves blocks that the next write of the name overwrites).
   * `encoded` lets a caller that writes the same entries twice (snapshot) encode them once;
   * `head` writes the header with other flags than the map's, and an intent record, and
   * `head.unchanged[b]` says that map block b already stores what the map holds (it is skipped).
   *
   * A SPARSE map (by the flags its header is written with) stores no block of nothing but zero
   * entries: such a block is skipped when absent, and rewritten (as zero records) when present,
   * never deleted, so that a crash before the header leaves the old map as readable as a crash of
   * a plain rewrite does.
   */
  async writeMap(
    map: LoadedMap,
    encoded: Buffer[] = this.encodeBlocks(map),
    head: { flags?: number; intent?: MapIntent | null; unchanged?: readonly boolean[] } = {},
  ): Promise<void> {
    const flags = head.flags ?? map.flags;
    const unchanged = head.unchanged ?? [];
    if (flags & MapFlag.SPARSE) {
      const zero = this.zeroBlocks(map);
      const state: BlockState = { name: map.name, absent: new Set(), present: new Set() };
      await pool(encoded.length, this.opts.parallelism, async (b) => {
        if (unchanged[b]) return; // unknown until written
        const obj = mapBlockName(map.name, b);
        if (zero[b] && !(await this.blockerm.info(obj))) {
          state.absent.add(b);
          return;
        }
        await this.blockerm.writeFull(obj, encoded[b]!);
        state.present.add(b);
      });
      this.blockStates.set(map.entries, state);
    } else {
      await pool(encoded.length, this.opts.parallelism, async (b) => {
        if (!unchanged[b]) await this.blockerm.writeFull(mapBlockName(map.name, b), encoded[b]!);
      });
    }
    await this.writeHeader(map, flags, head.intent ?? null);
  }

  /** Writes map blocks `first`, `first + 1`, ... of map `name` from `encoded` (see encodeBlocks). */
  async writeBlocks(name: string, encoded: Buffer[], first = 0): Promise<void> {
    await pool(encoded.length, this.opts.parallelism, (i) =>
      this.blockerm.writeFull(mapBlockName(name, first + i), encoded[i]!),
    );
  }

  /**
   * Writes one 128-byte map entry in place, then sets it in the cached map `vol.map`
   * (write-through).
   */
  async writeEntry(vol: { map: LoadedMap }, index: number, entry: MapEntry): Promise<void> {
    const map = vol.map;
    const { blockId, offset } = mapBlockLocation(index, map.blocksize);
    if (map.flags & MapFlag.SPARSE) {
      let st = this.blockStates.get(map.entries);
      if (!st || st.name !== map.name) {
        st = { name: map.name, absent: new Set(), present: new Set() };
        this.blockStates.set(map.entries, st);
      }
      if (!st.present.has(blockId)) await this.materialize(map, st, blockId);
    }
    await this.blockerm.write(mapBlockName(map.name, blockId), offset, encodeEntryV2(entry));
    map.entries[index] = entry;
  }

  /**
   * Makes map block `b` of SPARSE map `map` present before an entry is written into it: a
   * 128-byte write into a missing object would create it zero-filled before the record, and zero
   * bytes are not zero records. The block is written whole from the cached entries (entries being
   * written meanwhile are set there only after their own write, which waits for this one).
   */
  private materialize(map: LoadedMap, st: BlockState, b: number): Promise<void> {
    const obj = mapBlockName(map.name, b);
    let p = this.materializing.get(obj);
    if (!p) {
      p = (async () => {
        if (st.absent.has(b) || !(await this.blockerm.info(obj))) {
          const per = entriesPerMapBlock(map.blocksize);
          const from = b * per;
          const to = Math.min(map.entries.length, from + per);
          const bytes = allZero(map.entries, from, to)
            ? zeroRecords(to - from)
            : encodeEntriesV2(map.entries.slice(from, to));
          await this.blockerm.writeFull(obj, bytes);
        }
        st.absent.delete(b);
        st.present.add(b);
      })().finally(() => this.materializing.delete(obj));
      this.materializing.set(obj, p);
    }
    return p;
  }

  /**
   * Marks `map` deleted: its header, rewritten with the DELETED flag (and without INCOMPLETE),
   * stays (so the name's epoch survives); its map blocks are left for `deleteMapBlocks`. A rename
   * passes the `renamed-to` intent that commits it.
   */
  markDeleted(map: HeaderOf & { flags: number }, intent: MapIntent | null = null): Promise<void> {
    return this.writeHeader(map, (map.flags & ~MapFlag.INCOMPLETE) | MapFlag.DELETED, intent);
  }

  /** Deletes the map blocks that held entries [fromEntry, toEntry) and no entry below fromEntry. */
  async deleteMapBlocks(name: string, blocksize: number, fromEntry: number, toEntry: number): Promise<void> {
    const per = entriesPerMapBlock(blocksize);
    const first = Math.ceil(fromEntry / per);
    const last = Math.ceil(toEntry / per);
    await pool(Math.max(0, last - first), this.opts.parallelism, (i) =>
      this.blockerm.delete(mapBlockName(name, first + i)),
    );
  }

  /** Makes every acknowledged map write durable (matters when blockerm runs write-back). */
  flush(): Promise<void> {
    return this.blockerm.flush();
  }

  /**
   * Writes the header of `map` with `flags`, followed by `intent` (or by nothing: a header
   * object is replaced whole, so an earlier intent goes).
   */
  async writeHeader(map: HeaderOf, flags: number, intent: MapIntent | null = null): Promise<void> {
    const header = encodeHeaderV2({ size: map.size, blocksize: map.blocksize, flags, epoch: map.epoch });
    await this.blockerm.writeFull(map.name, intent ? Buffer.concat([header, encodeIntent(intent)]) : header);
  }

  /**
   * The entries of v2 map `name` and the map blocks found absent (which read as zero entries
   * when the header says SPARSE, and are a corruption otherwise).
   */
  private async readEntries(
    name: string,
    h: MapHeader,
  ): Promise<{ entries: MapEntry[]; absent: Set<number> }> {
    const sparse = (h.flags & MapFlag.SPARSE) !== 0;
    const absent = new Set<number>();
    const n = objectCount(h.size, h.blocksize);
    const per = entriesPerMapBlock(h.blocksize);
    const blocks = Math.ceil(n / per);
    // The decoded entries of each present map block; an absent one stays undefined (zero entries).
    const parts = new Array<MapEntry[] | undefined>(blocks);
    // Each map block is read into a reused buffer and decoded before the next: a 1 TiB map is
    // 32 MiB of records, and faulting in that much fresh memory costs more than reading it.
    let next = 0;
    const worker = async () => {
      const buf = this.mapBuffers.pop() ?? Buffer.allocUnsafe(per * ENTRY_V2_SIZE);
      try {
        while (next < blocks) {
          const b = next++;
          const count = Math.min(per, n - b * per);
          const obj = mapBlockName(name, b);
          const info = await this.blockerm.info(obj);
          if (!info && sparse) {
            absent.add(b);
            continue;
          }
          const need = count * ENTRY_V2_SIZE;
          const stored = Math.min(info?.size ?? 0, need);
          const target = buf.length >= need ? buf.subarray(0, need) : Buffer.allocUnsafe(need);
          if (stored > 0) await readIntoBuffer(this.blockerm, obj, 0, target);
          parts[b] = decodeEntriesV2(target.subarray(0, stored), count, name, b * per);
        }
      } finally {
        if (this.mapBuffers.length < MAP_BUFFERS) this.mapBuffers.push(buf);
      }
    };
    await Promise.all(Array.from({ length: Math.min(MAP_BUFFERS, blocks) }, worker));
    // One array filled by the builtin, then the present blocks copied in: no array per absent
    // block (a thin 1 TiB map is 8 absent blocks of 32,768 entries, read once per `vlmc info`).
    let entries: MapEntry[];
    if (blocks === 1 && parts[0]) entries = parts[0];
    else {
      entries = new Array<MapEntry>(n).fill(ZERO_ENTRY);
      for (let b = 0; b < blocks; b++) {
        const part = parts[b];
        if (!part) continue;
        for (let i = 0, at = b * per; i < part.length; i++) entries[at + i] = part[i]!;
      }
    }
    if (sparse) {
      const present = new Set<number>();
      for (let b = 0; b < blocks; b++) if (!absent.has(b)) present.add(b);
      this.blockStates.set(entries, { name, absent, present });
    }
    return { entries, absent };
  }
}
