import type { Blocker } from '@archipelago/blocker';
import { archipError } from '@archipelago/libxseg';
import { type MapEntry, MapFlag, ObjFlag } from '@archipelago/mapfile';
import type { MapperApi } from './api.js';
import type { MapperContext } from './context.js';
import { withGcHold } from './gc.js';
import type { HostLocks } from './host-locks.js';
import { describe } from './map.js';
import { MapStore } from './map-store.js';
import { clone, complete, create, createFromEntries } from './ops/create.js';
import { discard } from './ops/discard.js';
import { type FlattenOptions, type FlattenResult, flatten } from './ops/flatten.js';
import { createHashedMap, hash } from './ops/hash.js';
import { entries, info, list } from './ops/info.js';
import { assertWritable, mapRead, mapWrite, openVolume } from './ops/map-io.js';
import { remove } from './ops/remove.js';
import { rename } from './ops/rename.js';
import { resize } from './ops/resize.js';
import { rollback } from './ops/rollback.js';
import { snapshot } from './ops/snapshot.js';
import {
  isTrashName,
  listTrash,
  purgeExpiredTrash,
  purgeTrash,
  type RestoreOptions,
  restoreTrash,
  type TrashEntry,
  type TrashOptions,
} from './ops/trash.js';
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
import { type ReleaseHandler, VolumeLocks } from './volume-locks.js';

export { MAX_VOLUME_SIZE } from './map.js';

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
  /**
   * Lease of the volume locks this mapper holds, ms (default 0: no lease, never renewed; the
   * runtime gives `[mapperd] lease_timeout`). See volume-locks.ts.
   */
  leaseMs?: number;
  /** Same-host serialization (the runtime's flock host locks); absent: none. */
  hostLocks?: HostLocks;
  /**
   * Write new maps SPARSE (default true): a thin map's all-zero map blocks are not stored, which
   * the original mapper cannot read; false writes plain v2 maps (map-store.ts, MapStoreOptions).
   */
  sparseMaps?: boolean;
}

/** What `Mapper.openMap` shows of an open volume's cached map, at the moment it is called. */
export interface OpenMapView {
  readonly size: number;
  readonly blocksize: number;
  readonly readonly: boolean;
  /** Entry `index` of the map as it is now (its object name, and whether this volume may write it in place). */
  entryAt(index: number): { name: string; writable: boolean } | undefined;
}

/**
 * The mapper keeps volume maps: it creates, clones, snapshots, renames, resizes and removes them,
 * and translates volume byte ranges into object segments, copying shared objects up on the first
 * write (copy-on-write).
 *
 * The class only assembles the parts and delegates: the map store (`map-store.ts`) reads and
 * writes maps, the volume locks (`volume-locks.ts`) take locks and cache open volumes, and each
 * operation is a function in `ops/` that works with both through a `MapperContext`.
 *
 * Locking (reference §2.2, without the known bugs of §6.4):
 * - reads try the lock without blocking; on failure they are served from a fresh, uncached load;
 * - writes wait for the lock up to `lockTimeoutMs`, then fail with ELOCKED naming the owner;
 * - map changes fail at once with ELOCKED naming the owner;
 * - a map is cached only while this mapper holds its lock, and every change is written through.
 *
 * Crash safety: a copy-up's data object is durable before the map entry naming it is written;
 * a snapshot writes the origin (shared objects made read-only, epoch bumped) before the snapshot
 * map; remove moves the map to the trash like a rename (ops/trash.ts), and dropping a map (a purge
 * of the trash, an incomplete map) marks the header deleted before deleting any object.
 */
export class Mapper implements MapperApi {
  private readonly ctx: MapperContext;
  private readonly locks: VolumeLocks;
  private readonly store: MapStore;
  private readonly log: Logger;
  private readonly blockerm: Blocker;
  private closed = false;

  constructor(opts: MapperOptions) {
    const parallelism = opts.parallelism ?? 64;
    this.log = opts.logger ?? silentLogger;
    this.blockerm = opts.blockerm;
    this.store = new MapStore(opts.blockerm, {
      parallelism,
      log: this.log,
      ...(opts.sparseMaps !== undefined ? { sparse: opts.sparseMaps } : {}),
    });
    this.locks = new VolumeLocks(opts.blockerm, this.store, {
      lockTimeoutMs: opts.lockTimeoutMs ?? 30_000,
      log: this.log,
      ...(opts.leaseMs !== undefined ? { leaseMs: opts.leaseMs } : {}),
      ...(opts.hostLocks !== undefined ? { hostLocks: opts.hostLocks } : {}),
    });
    this.ctx = {
      store: this.store,
      locks: this.locks,
      blockerb: opts.blockerb,
      blockerm: opts.blockerm,
      parallelism,
      log: this.log,
      checkOpen: () => {
        if (this.closed) throw archipError('ECLOSED', 'the mapper was closed');
      },
    };
  }

  // Making maps (ops/create.ts, ops/hash.ts)

  /** Creates an empty volume of `size` bytes: every block is the zero block. */
  create(name: string, opts: CreateOptions): Promise<VolumeInfo> {
    return create(this.ctx, name, opts);
  }

  /** Makes volume `name`, created `incomplete` by this mapper, a volume (ops/create.ts). */
  complete(name: string): Promise<VolumeInfo> {
    return complete(this.ctx, name);
  }

  /** Creates volume `name` as a thin clone of snapshot `source`; no data is copied. */
  clone(source: string, name: string, opts?: CloneOptions): Promise<VolumeInfo> {
    return clone(this.ctx, source, name, opts);
  }

  /** Creates map `name` from explicit entries (reference §2.5, X_CREATE). */
  createFromEntries(name: string, opts: CreateFromEntriesOptions): Promise<VolumeInfo> {
    // It names objects that exist already (gc.ts: a dedup hold keeps gc off them meanwhile).
    return withGcHold(this.blockerm, { what: `create ${name}`, kind: 'dedup' }, () =>
      createFromEntries(this.ctx, name, opts),
    );
  }

  /** Hashes snapshot `name` into a read-only content-addressed map (reference §2.7). */
  hash(name: string, opts?: HashOptions): Promise<HashResult> {
    // Content objects are written (or found) long before the hashed map names them (gc.ts).
    return withGcHold(this.blockerm, { what: `hash ${name}`, kind: 'dedup' }, () =>
      hash(this.ctx, name, opts),
    );
  }

  /** Writes (or finds) the read-only content map of `hashes`, named by their Merkle root. */
  createHashedMap(
    hashes: readonly string[],
    size: number,
    blocksize: number,
  ): Promise<{ name: string; root: string; existed: boolean }> {
    return withGcHold(this.blockerm, { what: 'hashed map', kind: 'dedup' }, () =>
      createHashedMap(this.ctx, hashes, size, blocksize),
    );
  }

  // Map changes (ops/snapshot.ts, remove.ts, rename.ts, resize.ts)

  /** Freezes volume `name` into the read-only snapshot `snap`; the volume's epoch advances. */
  snapshot(name: string, snap: string): Promise<VolumeInfo> {
    return snapshot(this.ctx, name, snap);
  }

  /** Removes a volume or snapshot: it is gone for its users, and its map moves to the trash. */
  remove(name: string, opts?: LoadOptions): Promise<void> {
    return remove(this.ctx, name, opts);
  }

  // The trash (ops/trash.ts)

  /** Every volume and snapshot in the trash, oldest removal first. */
  listTrash(opts?: TrashOptions): Promise<TrashEntry[]> {
    return listTrash(this.ctx, opts);
  }

  /** Brings `name` back from the trash (its latest entry, or `opts.entry`); EEXIST_VOLUME when the name was reused. */
  restoreTrash(name: string, opts?: RestoreOptions): Promise<VolumeInfo> {
    return restoreTrash(this.ctx, name, opts);
  }

  /** Drops one trash entry for good (its owned objects and map blocks go). */
  purgeTrash(entry: string): Promise<TrashEntry> {
    return purgeTrash(this.ctx, entry);
  }

  /** Purges every trash entry removed at least `ttlMs` (default 0) before `nowMs`. */
  purgeExpiredTrash(nowMs: number, ttlMs?: number): Promise<TrashEntry[]> {
    return purgeExpiredTrash(this.ctx, nowMs, ttlMs);
  }

  /** Renames a volume or snapshot. Its objects keep their names; the old name's epoch is kept. */
  rename(name: string, newName: string): Promise<VolumeInfo> {
    return rename(this.ctx, name, newName);
  }

  /** Grows or shrinks a volume. Bytes beyond the old end read as zeros after growing. */
  resize(name: string, size: number): Promise<VolumeInfo> {
    return resize(this.ctx, name, size);
  }

  /**
   * Rolls volume `name` back to snapshot `snap` of its lineage: a crash-atomic map change
   * (ops/rollback.ts). EBUSY naming the holder when another owner has the volume open.
   */
  rollback(name: string, snap: string): Promise<VolumeInfo> {
    return rollback(this.ctx, name, snap);
  }

  /**
   * Copies up every block clone `name` shares with its parent, through the copy-up path (safe
   * while this mapper serves its writes), then records it flattened (ops/flatten.ts).
   */
  flatten(name: string, opts?: FlattenOptions): Promise<FlattenResult> {
    return flatten(this.ctx, name, opts);
  }

  // Open, close, locks (volume-locks.ts)

  /**
   * Takes the volume lock without waiting and caches the map. Idempotent for this owner. With
   * `ask` (`vlmc open`), a live holder elsewhere is asked to hand the volume over and waited for
   * (bounded); a host hold elsewhere fails at once (ELOCKED saying how to free it).
   */
  async openVolume(name: string, opts: LoadOptions = {}, how: { ask?: boolean } = {}): Promise<VolumeInfo> {
    this.ctx.checkOpen();
    const vol = await openVolume(this.ctx, name, opts, how.ask ? 'ask' : false);
    return describe(vol.map, this.locks.identity);
  }

  /**
   * Drops the cached map and releases the lock. Pending copy-ups finish first. A failed release
   * is logged and the close still succeeds (reference §2.2).
   */
  closeVolume(name: string, opts: { restoreHostHold?: boolean } = {}): Promise<void> {
    return this.locks.closeVolume(name, opts);
  }

  /**
   * Hands open volume `name` over to another owner that asked for it (call it once the volume's
   * I/O has drained, and hold new I/O back until it resolves): its lock is released, and then
   * waited for the asker to take (up to `awaitTakerMs`, default 1 s: writes queued here would
   * otherwise take the free lock straight back); its reads are served uncached, without trying
   * the lock, until the next write asks for the lock back.
   */
  yieldVolume(name: string, opts: { awaitTakerMs?: number } = {}): Promise<void> {
    return this.locks.yieldVolume(name, opts);
  }

  /** Reads of `name` go uncached without trying its lock (another owner holds it) until a write. */
  markYielded(name: string): void {
    this.locks.markYielded(name);
  }

  /**
   * What this mapper's owner does when another owner asks for a volume it holds open
   * (cooperative hand-over): typically drain the volume's I/O, flush, `yieldVolume`. Without a
   * handler, requests are logged and the asker's wait runs out.
   */
  set onReleaseRequest(handler: ReleaseHandler | null) {
    this.locks.releaseHandler = handler;
  }

  /**
   * Ends this process's use of open volume `name` and keeps its lock for the host (a host hold):
   * what `vlmc open` leaves behind when its command ends.
   */
  async handOver(name: string): Promise<void> {
    await this.locks.handOver(name);
  }

  /** Takes the volume lock for the host (non-blocking), independent of caching: `vlmc lock`. */
  async lock(name: string): Promise<void> {
    this.ctx.checkOpen();
    await this.locks.lock(name);
  }

  /** Releases the volume lock; `force` breaks another owner's lock: `vlmc unlock [-f]`. */
  async unlock(name: string, opts: { force?: boolean } = {}): Promise<void> {
    this.ctx.checkOpen();
    await this.locks.unlock(name, opts);
  }

  // Reading about maps (ops/info.ts)

  info(name: string, opts?: LoadOptions): Promise<VolumeInfo> {
    return info(this.ctx, name, opts);
  }

  /** Every live map in blockerm, sorted by name, from their headers (trash entries hidden). */
  async list(): Promise<VolumeSummary[]> {
    return (await list(this.ctx)).filter((v) => !isTrashName(v.name));
  }

  /** The map entries of a volume (for export, du and hashing). */
  entries(name: string, opts?: LoadOptions): Promise<readonly MapEntry[]> {
    return entries(this.ctx, name, opts);
  }

  // I/O mapping (ops/map-io.ts, ops/discard.ts)

  /** Object segments for reading a byte range; served uncached when another owner holds the lock. */
  mapRead(name: string, offset: number, length: number, opts?: LoadOptions): Promise<ObjectSegment[]> {
    return mapRead(this.ctx, name, offset, length, opts);
  }

  /** Object segments for writing a byte range, copied up where shared; waits for the lock. */
  mapWrite(name: string, offset: number, length: number, opts?: LoadOptions): Promise<ObjectSegment[]> {
    return mapWrite(this.ctx, name, offset, length, opts);
  }

  /** Opens for writing (waiting for the lock like a write); EREADONLY for a snapshot. */
  assertWritable(name: string, opts?: LoadOptions): Promise<void> {
    return assertWritable(this.ctx, name, opts);
  }

  /** Turns block `index` back into the zero block. */
  discard(name: string, index: number, opts?: LoadOptions): Promise<void> {
    return discard(this.ctx, name, index, opts);
  }

  // The mapper itself

  /**
   * Makes every acknowledged map write durable (matters when blockerm runs write-back). With a
   * volume name, also re-checks that the volume is still this process's (lease valid, lock still
   * naming it) before the caller acknowledges a FLUSH or FUA: a lost lock fails with EIO fenced.
   */
  async flush(name?: string): Promise<void> {
    await this.store.flush();
    if (name !== undefined) await this.locks.verify(name);
  }

  /**
   * Closes every open volume (shutdown): releases its lock, or with `keepLocks` hands it to the
   * host (a host hold: the volume stays this host's, e.g. across a restart of mapperd).
   */
  async close(opts: { keepLocks?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    for (const name of this.locks.names()) {
      try {
        if (opts.keepLocks) await this.locks.handOver(name);
        else await this.locks.closeVolume(name);
      } catch (e) {
        this.log.warn({ volume: name, err: String(e) }, 'close at shutdown failed');
      }
    }
    this.locks.stop();
    this.closed = true;
  }

  /** Names of the volumes this mapper holds open. */
  openVolumes(): string[] {
    return this.locks.names();
  }

  /**
   * The cached map of a volume this mapper holds open (its lock is held, every change goes
   * through this mapper), read synchronously; undefined when it is not open. mapperd uses it to
   * tell a caching client which entries are writable, and to grant map leases only while the map
   * cannot change behind it. Do not modify what it returns.
   */
  openMap(name: string): OpenMapView | undefined {
    const vol = this.locks.cached(name);
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
}
