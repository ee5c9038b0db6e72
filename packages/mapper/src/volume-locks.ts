/**
 * Volume locks: every lock check of the mapper happens here. A volume whose lock this mapper
 * holds is "open": its map is cached (write-through, through the map store) together with the
 * mutexes that order the work on it. Every other access reloads the map (reference §2.2).
 *
 * - the per-name mutex (`opening`) makes opening a volume happen once;
 * - the per-volume mutex (`OpenVolume.meta`) runs map changes (snapshot, resize, remove, rename,
 *   close) one at a time;
 * - the per-block mutex (`OpenVolume.entryLocks`) serializes copy-up and discard of one block;
 * - the barrier (`OpenVolume.barrier`) is up while a map change runs: new copy-ups and discards
 *   wait for it, and the change starts once the ones under way have finished.
 */
import type { Blocker } from '@archipelago/blocker';
import { ArchipelagoError, archipError } from '@archipelago/libxseg';
import { validateVolumeName } from '@archipelago/mapfile';
import type { LoadedMap } from './map.js';
import type { MapStore } from './map-store.js';
import { KeyedMutex } from './mutex.js';
import type { LoadOptions, Logger } from './types.js';

/** State of a volume this mapper holds the lock of. */
export interface OpenVolume {
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

export interface VolumeLocksOptions {
  /** How long a write waits for another owner's lock before failing with ELOCKED. */
  lockTimeoutMs: number;
  log: Logger;
}

export class VolumeLocks {
  /** Volumes whose lock this mapper holds (guarded by `opening` per name). */
  private readonly open = new Map<string, OpenVolume>();
  private readonly opening = new KeyedMutex<string>();

  constructor(
    private readonly blockerm: Blocker,
    private readonly store: MapStore,
    private readonly opts: VolumeLocksOptions,
  ) {}

  /** The lock owner identity of this mapper. */
  get identity(): string {
    return this.blockerm.identity;
  }

  /** Who holds the lock of `name`, or null. */
  owner(name: string): Promise<string | null> {
    return this.blockerm.lockOwner(name);
  }

  /** The open volume `name`, if this mapper holds it open. */
  cached(name: string): OpenVolume | undefined {
    return this.open.get(name);
  }

  /** The cached map of `name` when it is open, else the map loaded fresh (and not cached). */
  async current(name: string, opts: LoadOptions): Promise<LoadedMap> {
    const cached = this.open.get(name);
    return cached ? cached.map : await this.store.load(name, opts);
  }

  /** Names of the open volumes. */
  names(): string[] {
    return [...this.open.keys()];
  }

  /** Drops `name` from the open volumes (the lock stays as it is). */
  forget(name: string): void {
    this.open.delete(name);
  }

  /**
   * Opens (locks and caches) a volume; an open one is returned as it is. `wait` selects the
   * write path's blocking acquire (up to the lock timeout); otherwise ELOCKED at once.
   * A v0/v1 map, or one found under `archip_<name>`, is upgraded on the way.
   */
  openVolume(name: string, opts: LoadOptions, wait: boolean): Promise<OpenVolume> {
    return this.opening.run(name, async () => {
      const have = this.open.get(name);
      if (have) return have;
      validateVolumeName(name);
      const tookLock = wait ? await this.acquireWaiting(name) : await this.acquireNow(name);
      try {
        let map = await this.store.load(name, opts);
        if (map.version !== 2 || map.storedAs !== name) map = await this.store.upgrade(map);
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

  /**
   * Drops the cached map and releases the lock. Pending copy-ups finish first. A failed release
   * is logged and the close still succeeds (reference §2.2); ELOCKED when another owner holds
   * the lock of a volume this mapper did not have open.
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
    await this.acquireNow(name);
  }

  /** Releases the volume lock; `force` breaks another owner's lock: `vlmc unlock [-f]`. */
  async unlock(name: string, opts: { force?: boolean }): Promise<void> {
    this.open.delete(name);
    await this.blockerm.release(name, opts);
  }

  /**
   * Runs `fn` holding the lock of `name` (taken without waiting, ELOCKED names the owner), for
   * an operation that writes a map under a name nobody has open: create, the target of a
   * snapshot or rename. The lock is released afterwards if this call took it.
   */
  async withName<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const took = await this.acquireNow(name);
    try {
      return await fn();
    } finally {
      if (took) await this.releaseQuietly(name);
    }
  }

  /**
   * Runs a map-changing operation on open volume `name` (opened for the call if it is not):
   * behind the volume's mutex and its barrier, once the copy-ups and discards under way have
   * finished. The lock is taken without waiting (ELOCKED names the owner). What this call opened
   * is closed afterwards; `closeAfter` closes it whatever (the name is gone: remove, rename).
   */
  async withChange<T>(
    name: string,
    fn: (vol: OpenVolume) => Promise<T>,
    opts: LoadOptions = {},
    how: { closeAfter?: boolean } = {},
  ): Promise<T> {
    const wasOpen = this.open.has(name);
    const vol = await this.openVolume(name, opts, false);
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

  /**
   * Takes the lock without waiting. Resolves true when this call took it, false when this
   * identity already held it (then the caller must not release it).
   */
  private async acquireNow(name: string): Promise<boolean> {
    // `took` is also true when this identity's lock was held by a dead process and taken over.
    return (await this.blockerm.acquire(name, { wait: false })).took;
  }

  /** Takes the lock, waiting up to the lock timeout; same result as acquireNow. */
  private async acquireWaiting(name: string): Promise<boolean> {
    const timeoutMs = this.opts.lockTimeoutMs;
    try {
      return (await this.blockerm.acquire(name, { wait: true, timeoutMs })).took;
    } catch (e) {
      if (!ArchipelagoError.is(e, 'ETIMEDOUT')) throw e;
      const owner = await this.blockerm.lockOwner(name);
      throw archipError(
        'ELOCKED',
        `volume "${name}" is locked by ${owner ?? 'another owner'} (waited ${timeoutMs} ms)`,
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
        this.opts.log.warn({ volume: name, err: String(e) }, 'lock release failed');
    }
  }
}
