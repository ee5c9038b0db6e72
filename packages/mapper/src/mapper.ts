import { type Blocker, readIntoBuffer } from '@archipelago/blocker';
import { ArchipelagoError, archipError } from '@archipelago/libxseg';
import {
  DEFAULT_BLOCKSIZE,
  dataObjectName,
  decodeEntriesV2,
  decodeHeaderV2,
  decodeV0,
  decodeV1,
  detectVersion,
  ENTRY_V2_SIZE,
  encodeEntriesV2,
  encodeEntryV2,
  encodeHeaderV2,
  entriesPerMapBlock,
  isValidObjectName,
  MAX_HEADER_SIZE,
  type MapEntry,
  MapFlag,
  type MapHeader,
  MIN_BLOCKSIZE,
  mapBlockLocation,
  mapBlockName,
  merkleRoot,
  ObjFlag,
  objectCount,
  UINT64_MAX,
  validateVolumeName,
  ZERO_BLOCK,
  ZERO_ENTRY,
  zeroRecords,
} from '@archipelago/mapfile';
import type { MapperApi } from './api.js';
import { KeyedMutex } from './mutex.js';
import {
  type CloneOptions,
  type CreateFromEntriesOptions,
  type CreateOptions,
  type HashOptions,
  type HashResult,
  type LoadOptions,
  type Logger,
  type ObjectSegment,
  silentLogger,
  type VolumeInfo,
  type VolumeSummary,
} from './types.js';

export interface MapperOptions {
  /** Blocker holding maps and locks (blockerm). */
  blockerm: Blocker;
  /** Blocker holding data objects (blockerb). */
  blockerb: Blocker;
  /** How long a write waits for another owner's lock before failing with ELOCKED (default 30 s). */
  lockTimeoutMs?: number;
  /** Deletes and copies issued at once by remove/resize (default 64). */
  parallelism?: number;
  logger?: Logger;
}

/** What `Mapper.openMap` shows of an open volume's cached map, at the moment it is called. */
export interface OpenMapView {
  readonly size: number;
  readonly blocksize: number;
  readonly readonly: boolean;
  /** Entry `index` of the map as it is now (its object name, and whether this volume may write it in place). */
  entryAt(index: number): { name: string; writable: boolean } | undefined;
}

/** A map as the mapper holds it in memory. */
interface LoadedMap {
  name: string;
  /** Object the header was read from (`archip_<name>` for v1 maps of 0.3.x). */
  storedAs: string;
  version: 0 | 1 | 2;
  size: number;
  blocksize: number;
  flags: number;
  epoch: bigint;
  entries: MapEntry[];
}

/**
 * State of a volume this mapper holds the lock of. Only such maps are cached (write-through);
 * every other access reloads the map from storage (reference §2.2).
 */
interface OpenVolume {
  map: LoadedMap;
  /** Guards map-changing operations (snapshot, resize, remove, rename, close): one at a time. */
  readonly meta: KeyedMutex<'meta'>;
  /** Serializes copy-up and discard per block index. */
  readonly entryLocks: KeyedMutex<number>;
  /** Set while a map change runs: new copy-ups and discards wait for it. */
  barrier: Promise<void> | null;
  /** This mapper took the lock when opening (false: the identity held it already). */
  readonly tookLock: boolean;
}

/** The zero entry; entries are values, so every zero block shares the one frozen object. */
const zeroEntry = (): MapEntry => ZERO_ENTRY;
const isZero = (e: MapEntry) => (e.flags & ObjFlag.ZERO) !== 0;
const isOwned = (e: MapEntry) =>
  (e.flags & (ObjFlag.WRITABLE | ObjFlag.ARCHIP)) === (ObjFlag.WRITABLE | ObjFlag.ARCHIP);

/**
 * The mapper keeps volume maps: it creates, clones, snapshots, renames, resizes and removes them,
 * and translates volume byte ranges into object segments, copying shared objects up on the first
 * write (copy-on-write).
 *
 * Locking (reference §2.2, without the known bugs of §6.4):
 * - reads try the lock without blocking; on failure they are served from a fresh, uncached load;
 * - writes wait for the lock up to `lockTimeoutMs`, then fail with ELOCKED naming the owner;
 * - map changes fail at once with ELOCKED naming the owner;
 * - a map is cached only while this mapper holds its lock, and every change is written through.
 *
 * Crash safety: a copy-up's data object is durable before the map entry naming it is written;
 * a snapshot writes the origin (shared objects made read-only, epoch bumped) before the snapshot
 * map; remove marks the header deleted before deleting any object.
 */
export class Mapper implements MapperApi {
  private readonly blockerm: Blocker;
  private readonly blockerb: Blocker;
  private readonly lockTimeoutMs: number;
  private readonly parallelism: number;
  /** Map-block read buffers kept warm between map loads (at most MAP_BUFFERS). */
  private readonly mapBuffers: Buffer[] = [];
  private readonly log: Logger;
  /** Volumes whose lock this mapper holds (guarded by `opening` per name). */
  private readonly open = new Map<string, OpenVolume>();
  private readonly opening = new KeyedMutex<string>();
  private closed = false;

  constructor(opts: MapperOptions) {
    this.blockerm = opts.blockerm;
    this.blockerb = opts.blockerb;
    this.lockTimeoutMs = opts.lockTimeoutMs ?? 30_000;
    this.parallelism = opts.parallelism ?? 64;
    this.log = opts.logger ?? silentLogger;
  }

  // ---------------------------------------------------------------------------------------------
  // Map creation

  /** Creates an empty volume of `size` bytes: every block is the zero block. */
  async create(name: string, opts: CreateOptions): Promise<VolumeInfo> {
    this.checkOpen();
    validateVolumeName(name);
    const blocksize = opts.blocksize ?? DEFAULT_BLOCKSIZE;
    checkBlocksize(blocksize);
    checkSize(opts.size);
    return this.withNewName(name, async (epoch) => {
      const map: LoadedMap = {
        name,
        storedAs: name,
        version: 2,
        size: opts.size,
        blocksize,
        flags: 0,
        epoch,
        entries: Array.from({ length: objectCount(opts.size, blocksize) }, zeroEntry),
      };
      await this.writeMap(map);
      this.log.info({ volume: name, size: opts.size, epoch: String(epoch) }, 'created volume');
      return map;
    });
  }

  /** Creates volume `name` as a thin clone of snapshot `source`; no data is copied. */
  async clone(source: string, name: string, opts: CloneOptions = {}): Promise<VolumeInfo> {
    this.checkOpen();
    validateVolumeName(name);
    const src = await this.load(source, opts);
    if ((src.flags & MapFlag.READONLY) === 0) {
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
    return this.withNewName(name, async (epoch) => {
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
      const map: LoadedMap = {
        name,
        storedAs: name,
        version: 2,
        size,
        blocksize: src.blocksize,
        flags: 0,
        epoch,
        entries,
      };
      await this.writeMap(map);
      this.log.info({ volume: name, source, size }, 'cloned volume');
      return map;
    });
  }

  /**
   * Creates map `name` from explicit entries (reference §2.5, X_CREATE; how Pithos stores a file's
   * hashmap as a map). The entry count must equal ceil(size / blocksize). Zero-hash entries become
   * zero entries; ARCHIP is never set (the objects are content-addressed, not owned); an entry is
   * WRITABLE unless it is `readonly`. Fails with EEXIST_VOLUME when a live map has the name.
   */
  async createFromEntries(name: string, opts: CreateFromEntriesOptions): Promise<VolumeInfo> {
    this.checkOpen();
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
    return this.withNewName(name, async (epoch) => {
      const map: LoadedMap = {
        name,
        storedAs: name,
        version: 2,
        size: opts.size,
        blocksize,
        flags: opts.readonly ? MapFlag.READONLY : 0,
        epoch,
        entries,
      };
      await this.writeMap(map);
      this.log.info({ volume: name, size: opts.size, entries: n }, 'created map from entries');
      return map;
    });
  }

  /**
   * Hashes snapshot `name` (reference §2.7, the mapper X_HASH the original disabled): every block
   * that is not the zero block nor already content-addressed is content-addressed in blockerb
   * (`blockerb.hash`: stored once under its SHA-256, trailing zeros stripped); then a read-only map
   * of the content names is written, named by the Pithos Merkle root of the block hashes, and can
   * be cloned like any snapshot. Hashing again, or hashing another snapshot with the same content,
   * finds the same map and writes nothing. A map of another size that already has the root's name
   * (the same blocks up to trailing zeros) makes the name `<root>.<size>`.
   */
  async hash(name: string, opts: HashOptions = {}): Promise<HashResult> {
    this.checkOpen();
    const blockerb = this.blockerb;
    const hashObject = blockerb.hash?.bind(blockerb);
    if (!hashObject) {
      throw archipError(
        'ENOTSUP',
        `the ${blockerb.kind} blocker cannot hash objects; use a blocker that can`,
      );
    }
    const cached = this.open.get(name);
    const src = cached ? cached.map : await this.load(name, {});
    if ((src.flags & MapFlag.READONLY) === 0) {
      throw archipError('ENOTSNAPSHOT', `cannot hash "${name}": it is a writable volume; snapshot it first`, {
        details: { volume: name },
      });
    }
    const bs = src.blocksize;
    const n = src.entries.length;
    const hashes: string[] = new Array(n);
    let done = 0;
    let bytes = 0;
    const limit = Math.max(1, Math.min(opts.parallelism ?? Math.min(this.parallelism, 16), n || 1));
    let next = 0;
    const worker = async () => {
      while (next < n) {
        const i = next++;
        const e = src.entries[i]!;
        const len = Math.min(bs, src.size - i * bs);
        if (isZero(e)) hashes[i] = ZERO_BLOCK;
        else if ((e.flags & ObjFlag.ARCHIP) === 0 && /^[0-9a-f]{64}$/.test(e.name)) hashes[i] = e.name;
        else hashes[i] = await hashObject(e.name, len);
        done++;
        bytes += len;
        opts.onProgress?.(done, n, bytes);
      }
    };
    await Promise.all(Array.from({ length: limit }, worker));
    const made = await this.createHashedMap(hashes, src.size, bs);
    if (!made.existed) this.log.info({ snapshot: name, hashed: made.name }, 'hashed snapshot');
    return { ...made, hashes, size: src.size, blocksize: bs };
  }

  /**
   * Writes (or finds) the read-only content map of `hashes`: named by their Merkle root, or
   * `<root>.<size>` when a map of another size already has the root's name. Every non-zero hash
   * must name a content object in blockerb (the caller checks). Idempotent: an identical map is
   * reused (`existed`).
   */
  async createHashedMap(
    hashes: readonly string[],
    size: number,
    blocksize: number,
  ): Promise<{ name: string; root: string; existed: boolean }> {
    this.checkOpen();
    const root = merkleRoot(hashes);
    const entries = hashes.map((h) => ({ name: h, readonly: true }));
    const want = { size, blocksize, entries, readonly: true };
    for (const candidate of [root, `${root}.${size}`]) {
      const existing = await this.load(candidate, {}).catch((e: unknown) => {
        if (ArchipelagoError.is(e, 'ENOENT_VOLUME')) return null;
        throw e;
      });
      if (existing) {
        if (sameHashedMap(existing, size, blocksize, hashes)) return { name: candidate, root, existed: true };
        continue;
      }
      try {
        await this.createFromEntries(candidate, want);
      } catch (e) {
        // Created concurrently (another process, same content): use theirs when it matches.
        if (!ArchipelagoError.is(e, 'EEXIST_VOLUME') && !ArchipelagoError.is(e, 'ELOCKED')) throw e;
        const theirs = await this.load(candidate, {}).catch(() => null);
        if (theirs && sameHashedMap(theirs, size, blocksize, hashes))
          return { name: candidate, root, existed: true };
        continue;
      }
      return { name: candidate, root, existed: false };
    }
    throw archipError('EEXIST_VOLUME', `maps named ${root} and ${root}.${size} exist with other contents`, {
      details: { root },
    });
  }

  /**
   * Locks `name`, checks that no live map has it, and runs `make` with the epoch the new map must
   * take (one past any deleted map of that name, so object names are never reused).
   */
  private async withNewName(name: string, make: (epoch: bigint) => Promise<LoadedMap>): Promise<VolumeInfo> {
    const took = await this.acquireNow(name);
    let map: LoadedMap;
    try {
      const prevEpoch = await this.deletedEpoch(name);
      if (prevEpoch >= UINT64_MAX - 2n) {
        throw archipError('EOVERFLOW', `volume name "${name}" has used up its epochs`);
      }
      map = await make(prevEpoch + 1n);
    } finally {
      if (took) await this.releaseQuietly(name);
    }
    return this.describe(map, await this.blockerm.lockOwner(name));
  }

  /**
   * The epoch of a deleted map stored under `name`, 0 when there is none; EEXIST_VOLUME when a
   * live map (of any version) is there.
   */
  private async deletedEpoch(name: string): Promise<bigint> {
    const head = await this.readHead(name);
    if (!head) return 0n;
    const version = detectVersion(head.bytes, name);
    if (version === 2) {
      const h = decodeHeaderV2(head.bytes.subarray(0, head.stored), name);
      if (h.flags & MapFlag.DELETED) return h.epoch;
    }
    throw archipError('EEXIST_VOLUME', `volume "${name}" already exists`, { details: { volume: name } });
  }

  // ---------------------------------------------------------------------------------------------
  // Map changes

  /**
   * Freezes volume `name` into the read-only snapshot `snap`. The volume's objects become shared
   * (copy-up on next write) and its epoch advances.
   */
  async snapshot(name: string, snap: string): Promise<VolumeInfo> {
    this.checkOpen();
    validateVolumeName(snap);
    return this.withChange(name, async (vol) => {
      const origin = vol.map;
      if (origin.flags & MapFlag.READONLY) {
        throw archipError('EREADONLY', `"${name}" is a snapshot already; clone it to get a writable volume`);
      }
      if (origin.epoch >= UINT64_MAX)
        throw archipError('EOVERFLOW', `volume "${name}" has used up its epochs`);
      const tookSnap = await this.acquireNow(snap);
      try {
        const snapEpoch = await this.deletedEpoch(snap);
        // Entries are values: one that is not writable (a zero block, an object already shared)
        // is kept as it is instead of copied, which keeps a thin map's snapshot allocation-free.
        const shared = origin.entries.map((e) =>
          e.flags & ObjFlag.WRITABLE ? { name: e.name, flags: e.flags & ~ObjFlag.WRITABLE } : e,
        );
        // Origin first: once it no longer claims the objects, the snapshot can never see them change.
        const nextOrigin: LoadedMap = { ...origin, entries: shared, epoch: origin.epoch + 1n };
        const encoded = this.encodeBlocks(nextOrigin);
        await this.writeMap(nextOrigin, encoded);
        vol.map = nextOrigin;
        const snapMap: LoadedMap = {
          name: snap,
          storedAs: snap,
          version: 2,
          size: origin.size,
          blocksize: origin.blocksize,
          flags: MapFlag.READONLY,
          // The reference gives snapshots epoch 0. We keep a deleted predecessor's epoch instead, so
          // that removing the snapshot and re-creating the name as a volume never reuses object names.
          epoch: snapEpoch,
          entries: shared.slice(),
        };
        await this.writeMap(snapMap, encoded);
        this.log.info({ volume: name, snapshot: snap }, 'snapshot taken');
        return this.describe(snapMap, null);
      } finally {
        if (tookSnap) await this.releaseQuietly(snap);
      }
    });
  }

  /** Removes a volume: marks its map deleted (keeping the header), then deletes the objects it owns. */
  async remove(name: string, opts: LoadOptions = {}): Promise<void> {
    this.checkOpen();
    await this.withChange(
      name,
      async (vol) => {
        const map = vol.map;
        // Header first: from here on the volume is gone, whatever happens to the objects below.
        await this.blockerm.writeFull(
          name,
          encodeHeaderV2({
            size: map.size,
            blocksize: map.blocksize,
            flags: map.flags | MapFlag.DELETED,
            epoch: map.epoch,
          }),
        );
        const owned = map.entries.filter((e) => isOwned(e) && !isZero(e)).map((e) => e.name);
        await this.forEachLimited(owned, (o) => this.blockerb.delete(o));
        await this.deleteMapBlocks(name, map.blocksize, 0, map.entries.length);
        this.open.delete(name);
        this.log.info({ volume: name, deleted: owned.length }, 'removed volume');
      },
      opts,
      { closeAfter: true },
    );
  }

  /** Renames a volume or snapshot. Its objects keep their names; the old name's epoch is kept. */
  async rename(name: string, newName: string): Promise<VolumeInfo> {
    this.checkOpen();
    validateVolumeName(newName);
    return this.withChange(
      name,
      async (vol) => {
        if (newName === name) throw archipError('EEXIST_VOLUME', `volume "${name}" already has that name`);
        const tookNew = await this.acquireNow(newName);
        try {
          const epoch = (await this.deletedEpoch(newName)) + 1n;
          const old = vol.map;
          const renamed: LoadedMap = { ...old, name: newName, storedAs: newName, version: 2, epoch };
          await this.writeMap(renamed);
          await this.blockerm.writeFull(
            name,
            encodeHeaderV2({
              size: old.size,
              blocksize: old.blocksize,
              flags: old.flags | MapFlag.DELETED,
              epoch: old.epoch,
            }),
          );
          await this.deleteMapBlocks(name, old.blocksize, 0, old.entries.length);
          this.open.delete(name);
          this.log.info({ volume: name, to: newName }, 'renamed volume');
          return this.describe(renamed, null);
        } finally {
          if (tookNew) await this.releaseQuietly(newName);
        }
      },
      {},
      { closeAfter: true },
    );
  }

  /** Grows or shrinks a volume. Bytes beyond the old end read as zeros after growing. */
  async resize(name: string, size: number): Promise<VolumeInfo> {
    this.checkOpen();
    checkSize(size);
    const resized = await this.withChange(name, async (vol) => {
      const map = vol.map;
      if (map.flags & MapFlag.READONLY)
        throw archipError('EREADONLY', `"${name}" is a snapshot; it cannot be resized`);
      const bs = map.blocksize;
      const oldN = map.entries.length;
      const newN = objectCount(size, bs);
      if (size > map.size && map.size % bs !== 0) {
        // The old last block may hold bytes past the old end (left by an earlier shrink, or by a
        // snapshot's larger view). Zero them so growth exposes only zeros.
        const idx = oldN - 1;
        const from = map.size % bs;
        const e = map.entries[idx]!;
        if (!isZero(e)) {
          if ((e.flags & ObjFlag.WRITABLE) === 0) await this.copyUp(vol, idx);
          await this.blockerb.write(vol.map.entries[idx]!.name, from, Buffer.alloc(bs - from));
        }
      }
      let entries = map.entries;
      let dropped: string[] = [];
      if (newN > oldN) {
        entries = entries.concat(Array.from({ length: newN - oldN }, zeroEntry));
      } else if (newN < oldN) {
        dropped = entries
          .slice(newN)
          .filter((e) => isOwned(e) && !isZero(e))
          .map((e) => e.name);
        entries = entries.slice(0, newN);
      }
      const next: LoadedMap = { ...vol.map, size, entries };
      await this.writeMap(next);
      vol.map = next;
      if (newN < oldN) {
        await this.deleteMapBlocks(name, bs, newN, oldN);
        await this.forEachLimited(dropped, (o) => this.blockerb.delete(o));
      }
      this.log.info({ volume: name, from: map.size, to: size }, 'resized volume');
      return next;
    });
    return this.describe(resized, await this.blockerm.lockOwner(name));
  }

  /**
   * Runs a map-changing operation with the volume lock held. The lock is taken without waiting
   * (ELOCKED names the owner); if this call took it, it is released afterwards.
   */
  private async withChange<T>(
    name: string,
    fn: (vol: OpenVolume) => Promise<T>,
    opts: LoadOptions = {},
    how: { closeAfter?: boolean } = {},
  ): Promise<T> {
    const wasOpen = this.open.has(name);
    const vol = await this.openLocked(name, opts, false);
    let result: T;
    try {
      result = await vol.meta.run('meta', async () => {
        let lift!: () => void;
        vol.barrier = new Promise<void>((r) => {
          lift = r;
        });
        try {
          await vol.entryLocks.idle();
          return await fn(vol);
        } finally {
          vol.barrier = null;
          lift();
        }
      });
    } finally {
      // Drop what this call opened. The lock goes only if this call took it (a lock this host
      // held before, e.g. from `vlmc lock`, stays) or the name itself is gone (remove, rename).
      if (!wasOpen || how.closeAfter) this.open.delete(name);
      if (how.closeAfter || (!wasOpen && vol.tookLock)) await this.releaseQuietly(name);
    }
    return result;
  }

  // ---------------------------------------------------------------------------------------------
  // Open, close, locks, info

  /** Takes the volume lock without waiting and caches the map. Idempotent for this owner. */
  async openVolume(name: string, opts: LoadOptions = {}): Promise<VolumeInfo> {
    this.checkOpen();
    const vol = await this.openLocked(name, opts, false);
    return this.describe(vol.map, this.blockerm.identity);
  }

  /**
   * Drops the cached map and releases the lock. Pending copy-ups finish first. A failed release
   * is logged and the close still succeeds (reference §2.2).
   */
  async closeVolume(name: string): Promise<void> {
    const vol = this.open.get(name);
    if (vol) {
      await vol.meta.run('meta', () => vol.entryLocks.idle());
      this.open.delete(name);
    }
    const owner = await this.blockerm.lockOwner(name);
    if (owner === this.blockerm.identity) await this.releaseQuietly(name);
    else if (!vol && owner !== null) {
      throw archipError('ELOCKED', `volume "${name}" is locked by ${owner}, not by this host`, {
        details: { volume: name, owner },
      });
    }
  }

  /** Takes the volume lock (non-blocking), independent of caching: `vlmc lock`. */
  async lock(name: string): Promise<void> {
    this.checkOpen();
    await this.acquireNow(name);
  }

  /** Releases the volume lock; `force` breaks another owner's lock: `vlmc unlock [-f]`. */
  async unlock(name: string, opts: { force?: boolean } = {}): Promise<void> {
    this.checkOpen();
    this.open.delete(name);
    await this.blockerm.release(name, opts);
  }

  async info(name: string, opts: LoadOptions = {}): Promise<VolumeInfo> {
    this.checkOpen();
    const cached = this.open.get(name);
    const map = cached ? cached.map : await this.load(name, opts);
    return this.describe(map, await this.blockerm.lockOwner(name));
  }

  /**
   * Every live map in blockerm, sorted by name. Reads only headers (a v1 map is decoded whole),
   * so listing costs one small read per map whatever the volume sizes.
   */
  async list(): Promise<VolumeSummary[]> {
    this.checkOpen();
    const out: VolumeSummary[] = [];
    for await (const obj of this.blockerm.list()) {
      if (/_[0-9a-f]{16}$/.test(obj)) continue; // map blocks
      const head = await this.readHead(obj).catch(() => null);
      if (!head) continue;
      const name = obj.startsWith('archip_') ? obj.slice('archip_'.length) : obj;
      try {
        const version = detectVersion(head.bytes, obj);
        if (version === 2) {
          const h = decodeHeaderV2(head.bytes.subarray(0, head.stored), obj);
          if (h.flags & MapFlag.DELETED) continue;
          out.push({
            name,
            size: h.size,
            blocksize: h.blocksize,
            epoch: h.epoch,
            readonly: (h.flags & MapFlag.READONLY) !== 0,
            version: 2,
            objects: objectCount(h.size, h.blocksize),
          });
        } else {
          const { allocated: _a, writable: _w, lockOwner: _l, ...summary } = await this.info(name);
          out.push(summary);
        }
      } catch {
        // Not a map (data objects can share blockerm with maps; v0 maps need a hint), or damaged:
        // `vlmc info <name>` reports the fault.
      }
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** The map entries of a volume (for export, du and hashing). */
  async entries(name: string, opts: LoadOptions = {}): Promise<readonly MapEntry[]> {
    this.checkOpen();
    const cached = this.open.get(name);
    return (cached ? cached.map : await this.load(name, opts)).entries;
  }

  /** Makes every acknowledged map write durable (matters when blockerm runs write-back). */
  async flush(): Promise<void> {
    await this.blockerm.flush();
  }

  /** Releases every lock this mapper holds (shutdown). */
  async close(): Promise<void> {
    if (this.closed) return;
    for (const name of [...this.open.keys()]) {
      try {
        await this.closeVolume(name);
      } catch (e) {
        this.log.warn({ volume: name, err: String(e) }, 'close at shutdown failed');
      }
    }
    this.closed = true;
  }

  /** Names of the volumes this mapper holds open. */
  openVolumes(): string[] {
    return [...this.open.keys()];
  }

  /**
   * The cached map of a volume this mapper holds open (its lock is held, every change goes
   * through this mapper), read synchronously; undefined when it is not open. mapperd uses it to
   * tell a caching client which entries are writable, and to grant map leases only while the map
   * cannot change behind it. Do not modify what it returns.
   */
  openMap(name: string): OpenMapView | undefined {
    const vol = this.open.get(name);
    if (!vol) return undefined;
    const m = vol.map;
    return {
      size: m.size,
      blocksize: m.blocksize,
      readonly: (m.flags & MapFlag.READONLY) !== 0,
      entryAt: (index) => {
        const e = m.entries[index];
        return e ? { name: e.name, writable: (e.flags & ObjFlag.WRITABLE) !== 0 } : undefined;
      },
    };
  }

  // ---------------------------------------------------------------------------------------------
  // I/O mapping

  /**
   * Object segments for reading `[offset, offset+length)`. Tries the lock without waiting; when
   * another owner holds it, the map is loaded fresh and not cached.
   */
  async mapRead(
    name: string,
    offset: number,
    length: number,
    opts: LoadOptions = {},
  ): Promise<ObjectSegment[]> {
    this.checkOpen();
    let map: LoadedMap;
    const cached = this.open.get(name);
    if (cached) map = cached.map;
    else {
      try {
        map = (await this.openLocked(name, opts, false)).map;
      } catch (e) {
        if (!ArchipelagoError.is(e, 'ELOCKED')) throw e;
        map = await this.load(name, opts);
      }
    }
    return segmentsOf(map, offset, length);
  }

  /**
   * Object segments for writing `[offset, offset+length)`, every one writable by this volume:
   * shared blocks are copied up first (whole object; zero blocks need no copy). Waits for the
   * lock up to the lock timeout.
   */
  async mapWrite(
    name: string,
    offset: number,
    length: number,
    opts: LoadOptions = {},
  ): Promise<ObjectSegment[]> {
    this.checkOpen();
    const vol = this.open.get(name) ?? (await this.openLocked(name, opts, true));
    return this.mapWriteLocked(vol, offset, length);
  }

  private async mapWriteLocked(vol: OpenVolume, offset: number, length: number): Promise<ObjectSegment[]> {
    while (vol.barrier) await vol.barrier;
    const map = vol.map;
    if (map.flags & MapFlag.READONLY) {
      throw archipError('EREADONLY', `"${map.name}" is a snapshot; writes are refused`, {
        details: { volume: map.name },
      });
    }
    const segs = segmentsOf(map, offset, length);
    const pending: Promise<void>[] = [];
    for (const s of segs) {
      const e = vol.map.entries[s.index]!;
      if ((e.flags & ObjFlag.WRITABLE) === 0) pending.push(this.copyUp(vol, s.index));
    }
    if (pending.length > 0) {
      await Promise.all(pending);
      return segmentsOf(vol.map, offset, length);
    }
    return segs;
  }

  /**
   * Makes block `index` writable: copies its object to `<volume>_<epoch>_<index>` (durably), then
   * writes the one map entry that names the copy. A crash between the two leaves the old entry,
   * so the volume still reads its old data.
   */
  private copyUp(vol: OpenVolume, index: number): Promise<void> {
    return vol.entryLocks.run(index, async () => {
      const map = vol.map;
      const e = map.entries[index]!;
      if (e.flags & ObjFlag.WRITABLE) return; // done by an earlier waiter
      const target = dataObjectName(map.name, map.epoch, index);
      if (isZero(e)) {
        // No data to copy. An object of that name can only be a leftover of an interrupted
        // discard; clear it so the unwritten parts of the block read as zeros.
        await this.blockerb.delete(target);
      } else {
        await this.blockerb.copy(e.name, target, { missingOk: true });
      }
      await this.writeEntry(vol, index, { name: target, flags: ObjFlag.WRITABLE | ObjFlag.ARCHIP });
    });
  }

  /**
   * Opens the volume for writing (waiting for the lock like a write) and fails with EREADONLY
   * when it is a snapshot.
   */
  async assertWritable(name: string, opts: LoadOptions = {}): Promise<void> {
    this.checkOpen();
    const vol = this.open.get(name) ?? (await this.openLocked(name, opts, true));
    if (vol.map.flags & MapFlag.READONLY) {
      throw archipError('EREADONLY', `"${name}" is a snapshot; writes are refused`, {
        details: { volume: name },
      });
    }
  }

  /**
   * Turns block `index` back into the zero block (trim / write-zeroes of a whole block). The map
   * entry is written first; an object this volume owned is deleted afterwards.
   */
  async discard(name: string, index: number, opts: LoadOptions = {}): Promise<void> {
    this.checkOpen();
    const vol = this.open.get(name) ?? (await this.openLocked(name, opts, true));
    if (vol.map.flags & MapFlag.READONLY)
      throw archipError('EREADONLY', `"${name}" is a snapshot; writes are refused`);
    if (index < 0 || index >= vol.map.entries.length)
      throw archipError('ERANGE', `block ${index} is past the end of "${name}"`);
    while (vol.barrier) await vol.barrier;
    await vol.entryLocks.run(index, async () => {
      const e = vol.map.entries[index]!;
      if (isZero(e)) return;
      await this.writeEntry(vol, index, zeroEntry());
      if (isOwned(e)) await this.blockerb.delete(e.name);
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Storage of maps

  /** Opens (locks and caches) a volume. `wait` selects the write-path blocking acquire. */
  private openLocked(name: string, opts: LoadOptions, wait: boolean): Promise<OpenVolume> {
    return this.opening.run(name, async () => {
      const have = this.open.get(name);
      if (have) return have;
      validateVolumeName(name);
      const tookLock = wait ? await this.acquireWaiting(name) : await this.acquireNow(name);
      try {
        let map = await this.load(name, opts);
        if (map.version !== 2 || map.storedAs !== name) map = await this.upgrade(map);
        const vol: OpenVolume = {
          map,
          meta: new KeyedMutex(),
          entryLocks: new KeyedMutex(),
          barrier: null,
          tookLock,
        };
        this.open.set(name, vol);
        return vol;
      } catch (e) {
        if (tookLock) await this.releaseQuietly(name);
        throw e;
      }
    });
  }

  /** Rewrites a v0/v1 map (or one found under `archip_<name>`) as v2 under its own name (§1.8). */
  private async upgrade(map: LoadedMap): Promise<LoadedMap> {
    const next: LoadedMap = { ...map, version: 2, storedAs: map.name };
    await this.writeMap(next);
    if (map.storedAs !== map.name) await this.blockerm.delete(map.storedAs);
    this.log.info({ volume: map.name, from: map.version }, 'upgraded map to AMF v2');
    return next;
  }

  /** Reads the first 512 bytes of a map object; null when it does not exist. */
  private async readHead(obj: string): Promise<{ bytes: Buffer; stored: number } | null> {
    const info = await this.blockerm.info(obj);
    if (!info) return null;
    const bytes = await this.blockerm.read(obj, 0, MAX_HEADER_SIZE, { missingOk: true });
    return { bytes, stored: Math.min(info.size, MAX_HEADER_SIZE) };
  }

  /** Loads a map from storage, whatever its version. ENOENT_VOLUME when absent or deleted. */
  private async load(name: string, opts: LoadOptions): Promise<LoadedMap> {
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
      entries = await this.readEntries(name, h);
    } else {
      // v0 and v1 maps are one object: read it whole.
      const info = await this.blockerm.info(storedAs);
      const whole = await this.blockerm.read(storedAs, 0, info?.size ?? 0);
      ({ header: h, entries } = version === 1 ? decodeV1(whole, name) : decodeV0(whole, name, opts.v0Size));
    }
    const { size, blocksize, flags, epoch } = h;
    return { name, storedAs, version, size, blocksize, flags, epoch, entries };
  }

  private async readEntries(name: string, h: MapHeader): Promise<MapEntry[]> {
    const n = objectCount(h.size, h.blocksize);
    const per = entriesPerMapBlock(h.blocksize);
    const blocks = Math.ceil(n / per);
    const parts = new Array<MapEntry[]>(blocks);
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
    if (parts.length === 1) return parts[0]!;
    const entries = new Array<MapEntry>(n);
    for (let b = 0; b < blocks; b++) {
      const part = parts[b]!;
      for (let i = 0, at = b * per; i < part.length; i++) entries[at + i] = part[i]!;
    }
    return entries;
  }

  /** The map-block contents of a map (entries encoded as v2 records, one buffer per block). */
  private encodeBlocks(map: LoadedMap): Buffer[] {
    const per = entriesPerMapBlock(map.blocksize);
    const n = map.entries.length;
    const blocks = Math.ceil(n / per);
    return Array.from({ length: blocks }, (_, b) => {
      const from = b * per;
      const to = Math.min(n, from + per);
      // A block of nothing but zero entries (most of a thin map) shares one encoded buffer.
      let zero = true;
      for (let i = from; i < to && zero; i++) zero = map.entries[i] === ZERO_ENTRY;
      return zero ? zeroRecords(to - from) : encodeEntriesV2(map.entries.slice(from, to));
    });
  }

  /**
   * Writes a whole v2 map: every map block first, then the header (reference §1.7). `encoded`
   * lets a caller that writes the same entries twice (snapshot) encode them once.
   */
  private async writeMap(map: LoadedMap, encoded: Buffer[] = this.encodeBlocks(map)): Promise<void> {
    const jobs = encoded.map((_, b) => b);
    await this.forEachLimited(jobs, (b) => this.blockerm.writeFull(mapBlockName(map.name, b), encoded[b]!));
    await this.blockerm.writeFull(
      map.name,
      encodeHeaderV2({ size: map.size, blocksize: map.blocksize, flags: map.flags, epoch: map.epoch }),
    );
  }

  /** Writes one 128-byte map entry in place and updates the cache (write-through). */
  private async writeEntry(vol: OpenVolume, index: number, entry: MapEntry): Promise<void> {
    const { blockId, offset } = mapBlockLocation(index, vol.map.blocksize);
    await this.blockerm.write(mapBlockName(vol.map.name, blockId), offset, encodeEntryV2(entry));
    vol.map.entries[index] = entry;
  }

  /** Deletes the map blocks that held entries [fromEntry, toEntry) and no entry below fromEntry. */
  private async deleteMapBlocks(
    name: string,
    blocksize: number,
    fromEntry: number,
    toEntry: number,
  ): Promise<void> {
    const per = entriesPerMapBlock(blocksize);
    const first = Math.ceil(fromEntry / per);
    const last = Math.ceil(toEntry / per);
    const doomed = Array.from({ length: Math.max(0, last - first) }, (_, i) => mapBlockName(name, first + i));
    await this.forEachLimited(doomed, (o) => this.blockerm.delete(o));
  }

  // ---------------------------------------------------------------------------------------------
  // Locks

  /**
   * Takes the lock without waiting. Resolves true when this call took it, false when this
   * identity already held it (then the caller must not release it).
   */
  private async acquireNow(name: string): Promise<boolean> {
    const held = (await this.blockerm.lockOwner(name)) === this.blockerm.identity;
    await this.blockerm.acquire(name, { wait: false });
    return !held;
  }

  /** Takes the lock, waiting up to the lock timeout; same result as acquireNow. */
  private async acquireWaiting(name: string): Promise<boolean> {
    const held = (await this.blockerm.lockOwner(name)) === this.blockerm.identity;
    try {
      await this.blockerm.acquire(name, { wait: true, timeoutMs: this.lockTimeoutMs });
      return !held;
    } catch (e) {
      if (!ArchipelagoError.is(e, 'ETIMEDOUT')) throw e;
      const owner = await this.blockerm.lockOwner(name);
      throw archipError(
        'ELOCKED',
        `volume "${name}" is locked by ${owner ?? 'another owner'} (waited ${this.lockTimeoutMs} ms)`,
        {
          cause: e,
          details: { volume: name, owner },
        },
      );
    }
  }

  private async releaseQuietly(name: string): Promise<void> {
    try {
      await this.blockerm.release(name);
    } catch (e) {
      if (!ArchipelagoError.is(e, 'ENOTLOCKED'))
        this.log.warn({ volume: name, err: String(e) }, 'lock release failed');
    }
  }

  // ---------------------------------------------------------------------------------------------

  private describe(map: LoadedMap, lockOwner: string | null): VolumeInfo {
    let allocated = 0;
    let writable = 0;
    for (const e of map.entries) {
      if (!isZero(e)) allocated++;
      if (e.flags & ObjFlag.WRITABLE) writable++;
    }
    return {
      name: map.name,
      size: map.size,
      blocksize: map.blocksize,
      epoch: map.epoch,
      readonly: (map.flags & MapFlag.READONLY) !== 0,
      version: map.version,
      objects: map.entries.length,
      allocated,
      writable,
      lockOwner,
    };
  }

  private async forEachLimited<T>(items: readonly T[], fn: (item: T) => Promise<unknown>): Promise<void> {
    let next = 0;
    const worker = async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.parallelism, items.length) }, worker));
  }

  private checkOpen(): void {
    if (this.closed) throw archipError('ECLOSED', 'the mapper was closed');
  }
}

/** True when `map` is the read-only content map of `hashes` at that size and block size. */
function sameHashedMap(map: LoadedMap, size: number, blocksize: number, hashes: readonly string[]): boolean {
  if ((map.flags & MapFlag.READONLY) === 0 || map.size !== size || map.blocksize !== blocksize) return false;
  if (map.entries.length !== hashes.length) return false;
  return map.entries.every(
    (e, i) => e.name === hashes[i] && (e.flags & (ObjFlag.WRITABLE | ObjFlag.ARCHIP)) === 0,
  );
}

/** Splits `[offset, offset+length)` of a map into per-object segments. */
function segmentsOf(map: LoadedMap, offset: number, length: number): ObjectSegment[] {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw archipError('EINVAL', `bad I/O range offset=${offset} length=${length}`);
  }
  if (offset + length > map.size) {
    throw archipError(
      'ERANGE',
      `I/O [${offset}, ${offset + length}) reaches past the end of "${map.name}" (${map.size} bytes)`,
      {
        details: { volume: map.name, offset, length, size: map.size },
      },
    );
  }
  const bs = map.blocksize;
  const out: ObjectSegment[] = [];
  let pos = offset;
  const end = offset + length;
  while (pos < end) {
    const index = Math.floor(pos / bs);
    const within = pos - index * bs;
    const size = Math.min(bs - within, end - pos);
    const e = map.entries[index]!;
    out.push({ index, target: e.name, zero: isZero(e), offset: within, size, blocksize: bs });
    pos += size;
  }
  return out;
}

function checkBlocksize(bs: number): void {
  if (!Number.isInteger(bs) || bs <= MIN_BLOCKSIZE || (bs & (bs - 1)) !== 0 || bs > 2 ** 30) {
    throw archipError('EINVAL_SIZE', `block size ${bs} must be a power of two above ${MIN_BLOCKSIZE} bytes`);
  }
}

/** Largest volume we accept: 1 PiB (8 GiB of map data at 4 MiB blocks). */
/** Map-block buffers a mapper keeps warm for loading maps (and map loads run this many reads at once). */
const MAP_BUFFERS = 2;

export const MAX_VOLUME_SIZE = 2 ** 50;

function checkSize(size: number): void {
  if (!Number.isSafeInteger(size) || size <= 0)
    throw archipError('EINVAL_SIZE', `volume size must be a positive number of bytes, got ${size}`);
  if (size > MAX_VOLUME_SIZE) throw archipError('EINVAL_SIZE', `volume size ${size} exceeds the 1 PiB limit`);
}
