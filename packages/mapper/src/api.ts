/**
 * `MapperApi`: what a mapper offers to the composer and the tools, as an interface. `Mapper`
 * implements it in process; `SegmentMapper` (`@archipelago/peer`) implements it over the segment,
 * talking to a mapperd peer. Callers that accept a `MapperApi` work with either.
 */
import type { MapEntry } from '@archipelago/mapfile';
import type { FlattenOptions, FlattenResult } from './ops/flatten.js';
import type { RestoreOptions, TrashEntry, TrashOptions } from './ops/trash.js';
import type {
  CloneOptions,
  CreateFromEntriesOptions,
  CreateOptions,
  HashOptions,
  HashResult,
  LoadOptions,
  ObjectSegment,
  VolumeInfo,
  VolumeSummary,
} from './types.js';

export interface MapperApi {
  /** Creates an empty volume of `size` bytes. */
  create(name: string, opts: CreateOptions): Promise<VolumeInfo>;
  /**
   * Makes a volume created with `{ incomplete: true }` (and open in this mapper) a volume. Optional:
   * a mapper that cannot build incomplete volumes leaves it out (and creates complete ones).
   */
  complete?(name: string): Promise<VolumeInfo>;
  /** Creates volume `name` from snapshot `source` (copy-on-write). */
  clone(source: string, name: string, opts?: CloneOptions): Promise<VolumeInfo>;
  /** Creates a map from explicit entries (X_CREATE: Pithos hashmaps). */
  createFromEntries(name: string, opts: CreateFromEntriesOptions): Promise<VolumeInfo>;
  /** Hashes a snapshot into a content-addressed map (progress is reported in process only). */
  hash(name: string, opts?: HashOptions): Promise<HashResult>;
  snapshot(name: string, snap: string): Promise<VolumeInfo>;
  remove(name: string, opts?: LoadOptions): Promise<void>;
  rename(name: string, newName: string): Promise<VolumeInfo>;
  /** The trash (README, "Trash"): what `remove` moved there, oldest first. */
  listTrash(opts?: TrashOptions): Promise<TrashEntry[]>;
  /** Brings a removed volume or snapshot back under its name; EEXIST_VOLUME when the name was reused. */
  restoreTrash(name: string, opts?: RestoreOptions): Promise<VolumeInfo>;
  /** Drops one trash entry for good. */
  purgeTrash(entry: string): Promise<TrashEntry>;
  /** Purges every trash entry removed at least `ttlMs` before `nowMs`; returns them. */
  purgeExpiredTrash(nowMs: number, ttlMs?: number): Promise<TrashEntry[]>;
  resize(name: string, size: number): Promise<VolumeInfo>;
  /**
   * Rolls a volume back to a snapshot of its lineage (a crash-atomic map change). Optional: a
   * client of mapperd leaves it out (the tools run it on a mapper of their own).
   */
  rollback?(name: string, snap: string): Promise<VolumeInfo>;
  /** Copies up every block a clone shares with its parent (optional, like `rollback`). */
  flatten?(name: string, opts?: FlattenOptions): Promise<FlattenResult>;
  /** Takes the volume lock without waiting and caches the map. */
  openVolume(name: string, opts?: LoadOptions, how?: { ask?: boolean }): Promise<VolumeInfo>;
  /**
   * Reads of `name` go uncached without trying its lock (another owner holds it) until a write
   * asks for it. Optional: a mapper that keeps no such state (a client of mapperd) omits it.
   */
  markYielded?(name: string): void;
  /** Drops the cached map and releases the lock. */
  closeVolume(
    name: string,
    /** restoreHostHold: a volume the host held (`vlmc open`) before this client opened it goes back to the host. */
    opts?: { restoreHostHold?: boolean },
  ): Promise<void>;
  /**
   * This client is done with open volume `name` but the volume stays locked by the host (what a
   * `vlmc open` leaves behind): a local mapper turns its lock into a host hold; a remote one only
   * stops tracking it (the daemon keeps it open).
   */
  handOver(name: string): Promise<void>;
  lock(name: string): Promise<void>;
  unlock(name: string, opts?: { force?: boolean }): Promise<void>;
  info(name: string, opts?: LoadOptions): Promise<VolumeInfo>;
  list(): Promise<VolumeSummary[]>;
  entries(name: string, opts?: LoadOptions): Promise<readonly MapEntry[]>;
  /** Object segments for reading a byte range. */
  mapRead(name: string, offset: number, length: number, opts?: LoadOptions): Promise<ObjectSegment[]>;
  /** Object segments for writing a byte range, copied up where shared. */
  mapWrite(name: string, offset: number, length: number, opts?: LoadOptions): Promise<ObjectSegment[]>;
  /** Opens for writing; EREADONLY for a snapshot. */
  assertWritable(name: string, opts?: LoadOptions): Promise<void>;
  /** Turns block `index` back into the zero block. */
  discard(name: string, index: number, opts?: LoadOptions): Promise<void>;
  /**
   * Makes map changes durable; with a volume name, also re-checks that the volume is still this
   * client's (before a FLUSH or FUA is acknowledged): EIO fenced when its lock was lost.
   */
  flush(name?: string): Promise<void>;
  /** Volumes this mapper (or, for a remote one, this client) opened and has not closed. */
  openVolumes(): string[];
  /** Closes the mapper (a local one releases the locks of its open volumes, or hands them to the host). */
  close(opts?: { keepLocks?: boolean }): Promise<void>;
}
