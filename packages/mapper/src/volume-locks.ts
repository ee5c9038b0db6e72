/**
 * Volume locks: every lock check of the mapper happens here. A volume this mapper holds is
 * "open": its map is cached (write-through, through the map store) together with the mutexes that
 * order the work on it. Every other access reloads the map (reference §2.2).
 *
 * Holding a volume takes two locks (docs/ARCHITECTURE.md, "Locks, leases and fencing"):
 * - the **host lock** (injected `HostLocks`, a flock on this host): one process of the host at a
 *   time opens a volume or changes its map; the others wait (bounded) or read uncached;
 * - the **volume lock** (the blocker lock `<vol>_lock`), held by this process under a **lease**
 *   that a timer renews every lease/3. The lease is valid until the last successful renewal plus
 *   the lease minus a margin (lease/5); once it is not, or a renewal finds the lock lost, the volume
 *   is **fenced**: every later I/O on it fails with EIO (`details.fenced`) and nothing more is
 *   written under the lock. A lock this host held without a process (`vlmc open`) is adopted while
 *   the volume is open and handed back to the host when this process is done with it.
 *
 * Within the process:
 * - the per-name mutex (`opening`) makes opening a volume happen once;
 * - the per-volume mutex (`OpenVolume.meta`) runs map changes (snapshot, resize, remove, rename,
 *   close) one at a time;
 * - the per-block mutex (`OpenVolume.entryLocks`) serializes copy-up and discard of one block;
 * - the barrier (`OpenVolume.barrier`) is up while a map change runs: new copy-ups and discards
 *   wait for it, and the change starts once the ones under way have finished.
 */
import { type Blocker, currentProcess, deadHolder, type LockRecord } from '@archipelago/blocker';
import { ArchipelagoError, archipError } from '@archipelago/libxseg';
import { validateVolumeName } from '@archipelago/mapfile';
import type { HostLockHandle, HostLocks } from './host-locks.js';
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
  /** The lock was the host's (`vlmc open`) before this process adopted it: handed back at close. */
  readonly hostHeld: boolean;
  /** This process's host lock of the volume (null without same-host serialization). */
  readonly hostLock: HostLockHandle | null;
  /** performance.now() until which the lease is valid (Infinity without a lease). */
  validUntil: number;
  /** Why the volume was fenced (every I/O fails with it), or null. */
  fenced: ArchipelagoError | null;
  /** Stops watching for release requests (null: not watching). */
  unwatch: (() => void) | null;
  /** A release was requested and the release handler is handing the volume over. */
  releasing: boolean;
}

/**
 * What the owner of the mapper does when another owner asks for a volume this process holds
 * (cooperative hand-over): drain the volume's I/O, flush, and `yieldVolume` it.
 */
export type ReleaseHandler = (name: string, by: string) => Promise<void>;

export interface VolumeLocksOptions {
  /** How long a write (or, on this host, a map change) waits for a lock before failing. */
  lockTimeoutMs: number;
  log: Logger;
  /** Lease of the volume locks this mapper holds, ms; 0: no lease, no renewal (tests). */
  leaseMs?: number;
  /** Same-host serialization; absent: none (one process, tests). */
  hostLocks?: HostLocks;
}

const LAPSED =
  'its lease ran out before it could be renewed (the lock store was unreachable, or this process was paused)';

/** The error every I/O of a fenced volume fails with. */
function fencedError(name: string, why: string): ArchipelagoError {
  return archipError(
    'EIO',
    `volume "${name}" is fenced: ${why}; this process no longer writes it (unmap and map it again once the other holder is done)`,
    { details: { volume: name, fenced: true, why } },
  );
}

export class VolumeLocks {
  /** Volumes whose lock this mapper holds (guarded by `opening` per name). */
  private readonly open = new Map<string, OpenVolume>();
  private readonly opening = new KeyedMutex<string>();
  private readonly leaseMs: number;
  /** The margin the lease ends early by, on this side (clocks and pauses; see holder.ts). */
  private readonly marginMs: number;
  private renewer: NodeJS.Timeout | null = null;
  /** The host locks this process holds, with how many of its callers hold each. */
  private readonly hostHeld = new Map<string, { handle: HostLockHandle; count: number }>();
  private renewing = false;
  /** The last wait for a lock that ran out in vain, per name (see openVolume). */
  private readonly waitFailed = new Map<string, { at: number; error: ArchipelagoError }>();
  /** Volumes handed over on request: read uncached without trying the lock, until a write. */
  private readonly yielded = new Set<string>();
  /** The owner's answer to a release request (none: requests are logged and left to time out). */
  releaseHandler: ReleaseHandler | null = null;

  constructor(
    private readonly blockerm: Blocker,
    private readonly store: MapStore,
    private readonly opts: VolumeLocksOptions,
  ) {
    this.leaseMs = opts.leaseMs ?? 0;
    this.marginMs = Math.floor(this.leaseMs / 5);
  }

  /** The lock owner identity of this mapper. */
  get identity(): string {
    return this.blockerm.identity;
  }

  /** Who holds the lock of `name`, or null. */
  owner(name: string): Promise<string | null> {
    return this.blockerm.lockOwner(name);
  }

  /**
   * The open volume `name`, if this mapper holds it open; throws the fence error once it is
   * fenced, and for a `write` (anything that changes the volume) also once its lease has lapsed.
   * The hot path: a map lookup, and for writes a clock read (reads skip it: a read cannot harm
   * the volume, and a fenced holder's reads fail once a renewal or a write found it fenced).
   */
  cached(name: string, write = false): OpenVolume | undefined {
    const vol = this.open.get(name);
    if (vol === undefined) return undefined;
    if (vol.fenced === null && (!write || performance.now() <= vol.validUntil)) return vol;
    throw this.fence(name, vol, LAPSED);
  }

  /** The cached map of `name` when it is open, else the map loaded fresh (and not cached). */
  async current(name: string, opts: LoadOptions): Promise<LoadedMap> {
    const cached = this.cached(name);
    return cached ? cached.map : await this.store.load(name, opts);
  }

  /** Names of the open volumes. */
  names(): string[] {
    return [...this.open.keys()];
  }

  /** Drops `name` from the open volumes (the locks stay as they are). */
  forget(name: string): void {
    const vol = this.open.get(name);
    this.drop(name);
    void vol?.hostLock?.release();
  }

  /**
   * Opens (locks and caches) a volume; an open one is returned as it is. `wait` selects the
   * write path: it waits for another host's lock (up to the lock timeout); otherwise ELOCKED at
   * once. On this host, it waits for the host lock with `wait`, and fails at once (EBUSY, naming
   * the holder's pid) without. A v0/v1 map, or one found under `archip_<name>`, is upgraded on the
   * way. A dead holder's lock is taken over (logged).
   */
  openVolume(name: string, opts: LoadOptions, wait: boolean | 'ask'): Promise<OpenVolume> {
    const queued = performance.now();
    return this.opening.run(name, async () => {
      const have = this.cached(name);
      if (have) return have;
      validateVolumeName(name);
      // Writes queued behind one that waited out the lock timeout in vain fail with its error
      // rather than each wait the whole timeout again, one after the other.
      const failed = this.waitFailed.get(name);
      if (wait !== false && failed !== undefined && failed.at >= queued) throw failed.error;
      const hostLock = await this.hostLock(name, wait === true);
      try {
        let got: Acquired;
        try {
          got = wait
            ? await this.acquireWaiting(name, { hostHoldFails: wait === 'ask' })
            : await this.acquireNow(name);
        } catch (e) {
          if (wait !== false && ArchipelagoError.is(e, 'ELOCKED'))
            this.waitFailed.set(name, { at: performance.now(), error: e as ArchipelagoError });
          throw e;
        }
        this.waitFailed.delete(name);
        return await this.cacheOpened(name, opts, got, hostLock);
      } catch (e) {
        await hostLock?.release();
        throw e;
      }
    });
  }

  /**
   * Drops the cached map and releases the lock (`vlmc close`, unmap). Pending copy-ups finish
   * first. A failed release is logged and the close still succeeds (reference §2.2); ELOCKED when
   * another owner holds the lock of a volume this mapper did not have open.
   */
  async closeVolume(name: string, opts: { restoreHostHold?: boolean } = {}): Promise<void> {
    const vol = this.open.get(name);
    // Handed over (or never had): nothing of this process to close; the lock is the other's.
    if (!vol && this.yielded.delete(name)) return;
    // A mapped volume that was `vlmc open`ed before: unmapping gives it back to the host.
    if (vol?.hostHeld && opts.restoreHostHold) return this.handOver(name);
    if (vol) {
      await vol.meta.run('meta', () => vol.entryLocks.idle());
      this.drop(name);
    }
    try {
      const owner = await this.blockerm.lockOwner(name);
      if (owner === this.blockerm.identity) await this.releaseQuietly(name);
      else if (!vol && owner !== null) {
        throw archipError('ELOCKED', `volume "${name}" is locked by ${owner}, not by this host`, {
          details: { volume: name, owner },
        });
      }
    } finally {
      await vol?.hostLock?.release();
    }
  }

  /**
   * Ends this process's use of open volume `name` but keeps its volume lock for the host (a host
   * hold: `vlmc open` outlives the command that opened it). Pending copy-ups finish first.
   */
  async handOver(name: string): Promise<void> {
    const vol = this.open.get(name);
    if (!vol) return;
    await vol.meta.run('meta', () => vol.entryLocks.idle());
    this.drop(name);
    try {
      if (vol.fenced === null) await this.blockerm.acquire(name, { hold: 'host' });
    } finally {
      await vol.hostLock?.release();
    }
  }

  /** Takes the volume lock (non-blocking) for the host, independent of caching: `vlmc lock`. */
  async lock(name: string): Promise<void> {
    const r = await this.blockerm.acquire(name, { hold: 'host' });
    this.logTakeover(name, r.tookOver, r.previous);
  }

  /**
   * Releases the volume lock; `force` removes another owner's lock as it is, without fencing it
   * (`Blocker.breakLock` fences first: what `vlmc unlock -f` uses).
   */
  async unlock(name: string, opts: { force?: boolean }): Promise<void> {
    const vol = this.open.get(name);
    this.drop(name);
    try {
      await this.blockerm.release(name, opts);
    } finally {
      await vol?.hostLock?.release();
    }
  }

  /**
   * Runs `fn` holding the lock of `name` (taken without waiting, ELOCKED names the owner; on this
   * host the host lock is waited for), for an operation that writes a map under a name nobody has
   * open: create, the target of a snapshot or rename. The locks are released afterwards if this
   * call took them.
   */
  async withName<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const hostLock = this.open.has(name) ? null : await this.hostLock(name, true);
    try {
      const got = await this.acquireNow(name);
      try {
        return await fn();
      } finally {
        await this.letGo(name, { tookLock: got.took, hostHeld: !got.took && got.previous?.process === null });
      }
    } finally {
      await hostLock?.release();
    }
  }

  /**
   * Runs a map-changing operation on open volume `name` (opened for the call if it is not):
   * behind the volume's mutex and its barrier, once the copy-ups and discards under way have
   * finished. Another host's lock fails it at once (ELOCKED names the owner); another process of
   * this host is waited for (bounded). What this call opened is closed afterwards; `closeAfter`
   * closes it whatever (the name is gone: remove, rename).
   */
  async withChange<T>(
    name: string,
    fn: (vol: OpenVolume) => Promise<T>,
    opts: LoadOptions = {},
    how: { closeAfter?: boolean } = {},
  ): Promise<T> {
    const wasOpen = this.open.has(name);
    const vol = wasOpen ? (this.cached(name, true) as OpenVolume) : await this.openForChange(name, opts);
    let result: T;
    try {
      result = await vol.meta.run('meta', async () => {
        let lift!: () => void;
        vol.barrier = new Promise<void>((r) => {
          lift = r;
        });
        try {
          await vol.entryLocks.idle();
          this.assertValid(name, vol);
          return await fn(vol);
        } finally {
          vol.barrier = null;
          lift();
        }
      });
    } finally {
      // Drop what this call opened. The lock goes only if this call took it (a lock this host
      // held before, e.g. from `vlmc lock`, goes back to the host) or the name itself is gone.
      if (!wasOpen || how.closeAfter) {
        this.drop(name);
        try {
          if (how.closeAfter) await this.releaseQuietly(name);
          else await this.letGo(name, vol);
        } finally {
          await vol.hostLock?.release();
        }
      }
    }
    return result;
  }

  /**
   * Re-checks, before a map entry is written or a FLUSH/FUA is acknowledged, that open volume
   * `name` is still this process's: its lease is valid and its lock still names this process.
   * A lock found lost fences the volume.
   */
  async verify(name: string): Promise<void> {
    const vol = this.cached(name, true);
    if (!vol || this.leaseMs === 0) return;
    const r = await this.blockerm.lockInfo(name);
    const mine =
      r !== null && r.owner === this.blockerm.identity && r.process !== null && r.process.pid === process.pid;
    if (!mine) throw this.fence(name, vol, `its lock is held by ${describeRecord(r)} now`);
    this.assertValid(name, vol);
  }

  /**
   * Hands open volume `name` over to another owner that asked for it (the release handler calls
   * this once the volume's I/O has drained): closes it (lock released, also a lock this host held
   * before) and marks it yielded: reads of it are served uncached without trying the lock, and
   * the next write asks for the lock back.
   */
  async yieldVolume(name: string, opts: { awaitTakerMs?: number } = {}): Promise<void> {
    this.yielded.add(name);
    await this.closeVolume(name);
    // Give the asker the lock: this process's writes queued behind the hand-over would otherwise
    // find it free and take it straight back (the caller still holds them back).
    const until = performance.now() + (opts.awaitTakerMs ?? 1000);
    while (performance.now() < until) {
      const owner = await this.blockerm.lockOwner(name).catch(() => null);
      if (owner !== null && owner !== this.blockerm.identity) return;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** True when `name` was handed over (or found held elsewhere) and no write asked for it since. */
  isYielded(name: string): boolean {
    return this.yielded.has(name);
  }

  /**
   * Marks `name` as held elsewhere: reads go uncached without trying the lock until a write
   * takes it (the NBD endpoint of a migration's destination).
   */
  markYielded(name: string): void {
    if (!this.open.has(name)) this.yielded.add(name);
  }

  /** Stops renewing leases (the locks stay as they are: shutdown, crash tests). */
  stop(): void {
    if (this.renewer) clearInterval(this.renewer);
    this.renewer = null;
  }

  // ---------------------------------------------------------------------------------------------

  /** openVolume for a map change: on this host the host lock is waited for, another host's lock is not. */
  private openForChange(name: string, opts: LoadOptions): Promise<OpenVolume> {
    return this.opening.run(name, async () => {
      const have = this.cached(name);
      if (have) return have;
      validateVolumeName(name);
      const hostLock = await this.hostLock(name, true);
      try {
        const got = await this.acquireNow(name);
        return await this.cacheOpened(name, opts, got, hostLock);
      } catch (e) {
        await hostLock?.release();
        throw e;
      }
    });
  }

  /**
   * This process's host lock of `name`, re-entrant within the process: an operation on two names
   * takes both up front in name order (`withHostLocks`, so two processes never wait for each
   * other in a cycle), and what it then opens or changes under them takes them again without
   * waiting. In one process the mapper's own mutexes order the work; the host lock keeps the
   * other processes of the host out. The flock goes when the last holder in the process lets go.
   */
  private async hostLock(name: string, wait: boolean): Promise<HostLockHandle | null> {
    const locks = this.opts.hostLocks;
    if (!locks) return null;
    let held = this.hostHeld.get(name);
    if (!held) {
      const handle = await locks.acquire(name, { wait, timeoutMs: this.opts.lockTimeoutMs });
      // (another caller of this process may have taken it meanwhile: keep one flock per name)
      const raced = this.hostHeld.get(name);
      if (raced) await handle.release();
      held = raced ?? { handle, count: 0 };
      this.hostHeld.set(name, held);
    }
    held.count++;
    const entry = held;
    let released = false;
    return {
      name,
      release: async () => {
        if (released) return;
        released = true;
        if (--entry.count > 0) return;
        if (this.hostHeld.get(name) === entry) this.hostHeld.delete(name);
        await entry.handle.release();
      },
    };
  }

  /**
   * Runs `fn` holding the host locks of every name in `names`, taken in name order (waiting,
   * bounded): for an operation on two names (snapshot, rename, clone), so that two processes
   * doing the opposite never deadlock.
   */
  async withHostLocks<T>(
    names: readonly string[],
    fn: () => Promise<T>,
    opts: { orHeldOpen?: readonly string[] } = {},
  ): Promise<T> {
    const held: HostLockHandle[] = [];
    try {
      for (const n of [...new Set(names)].sort()) {
        const h = opts.orHeldOpen?.includes(n)
          ? await this.hostLockOrHeldOpen(n)
          : await this.hostLock(n, true);
        if (h) held.push(h);
      }
      return await fn();
    } finally {
      for (const h of held.reverse()) await h.release();
    }
  }

  /**
   * Loads (and upgrades) the map of `name`, whose lock this call just got, and records it open;
   * on a failure lets the lock go again as it was.
   */
  private async cacheOpened(
    name: string,
    opts: LoadOptions,
    got: Acquired,
    hostLock: HostLockHandle | null,
  ): Promise<OpenVolume> {
    const hostHeld = !got.took && got.previous !== null && got.previous.process === null;
    try {
      let map = await this.store.load(name, opts);
      if (map.version !== 2 || map.storedAs !== name) map = await this.store.upgrade(map);
      const vol: OpenVolume = {
        map,
        meta: new KeyedMutex(),
        entryLocks: new KeyedMutex(),
        barrier: null,
        tookLock: got.took,
        hostHeld,
        hostLock,
        validUntil: got.validUntil,
        fenced: null,
        unwatch: null,
        releasing: false,
      };
      this.add(name, vol);
      return vol;
    } catch (e) {
      await this.letGo(name, { tookLock: got.took, hostHeld });
      throw e;
    }
  }

  /** Records `vol` as open, watches for release requests, and keeps its lease renewed. */
  private add(name: string, vol: OpenVolume): void {
    this.open.set(name, vol);
    this.yielded.delete(name);
    if (this.leaseMs > 0 && this.blockerm.watchRelease)
      vol.unwatch = this.blockerm.watchRelease(name, () => void this.renewOne(name, vol));
    this.scheduleRenewals();
  }

  /** Forgets open volume `name` (the locks stay as they are) and stops watching it. */
  private drop(name: string): void {
    const vol = this.open.get(name);
    this.open.delete(name);
    vol?.unwatch?.();
    if (vol) vol.unwatch = null;
    this.scheduleRenewals();
  }

  /**
   * Another owner asked for open volume `name` (seen at a renewal): the release handler hands it
   * over, once; without a handler the request is logged and the asker's wait runs out.
   */
  private requested(name: string, vol: OpenVolume, by: string): void {
    if (this.open.get(name) !== vol || vol.fenced !== null || vol.releasing) return;
    vol.releasing = true;
    const handler = this.releaseHandler;
    if (handler === null) {
      this.opts.log.warn(
        { volume: name, by },
        `${by} asks for volume ${name}; this process keeps it until it is done with it`,
      );
      return;
    }
    this.opts.log.info({ volume: name, by }, `handing volume ${name} over to ${by} (it asked for it)`);
    const t0 = performance.now();
    handler(name, by).then(
      () =>
        this.opts.log.info(
          { volume: name, by, ms: Math.round(performance.now() - t0) },
          `handed volume ${name} over to ${by}`,
        ),
      (e) => {
        vol.releasing = false;
        this.opts.log.warn({ volume: name, by, err: String(e) }, `could not hand volume ${name} over`);
      },
    );
  }

  /**
   * The host lock of `name`, or null without waiting when another live process of this host holds
   * `name` open (its volume lock is that process's: e.g. the endpoint of a mapped snapshot). That
   * process keeps the host lock while it has the volume open, so nobody of this host removes or
   * renames it meanwhile either: enough for a reader of its map (a clone of a mapped snapshot).
   */
  private async hostLockOrHeldOpen(name: string): Promise<HostLockHandle | null> {
    try {
      return await this.hostLock(name, false);
    } catch (e) {
      if (!ArchipelagoError.is(e, 'EBUSY')) throw e;
      const r = await this.blockerm.lockInfo(name);
      const openElsewhereHere =
        r !== null &&
        r.owner === this.blockerm.identity &&
        r.process !== null &&
        r.process.pid !== process.pid &&
        deadHolder(r, currentProcess()) === null;
      if (openElsewhereHere) return null;
      return await this.hostLock(name, true);
    }
  }

  /** Throws the fence error when `vol` is fenced or its lease lapsed. */
  private assertValid(name: string, vol: OpenVolume): void {
    if (vol.fenced) throw vol.fenced;
    if (performance.now() > vol.validUntil) throw this.fence(name, vol, LAPSED);
  }

  /** Fences `vol` (once: logged) and returns the error its I/O fails with. */
  private fence(name: string, vol: OpenVolume, why: string): ArchipelagoError {
    if (vol.fenced) return vol.fenced;
    vol.fenced = fencedError(name, why);
    this.opts.log.error(
      { volume: name, why },
      `fenced: volume ${name}: ${why}; no more writes from this process`,
    );
    return vol.fenced;
  }

  /**
   * Lets go of the volume lock after use: released if this process took it, handed back to the
   * host if the host held it before, left alone otherwise (another live process of this identity).
   */
  private async letGo(name: string, how: { tookLock: boolean; hostHeld: boolean }): Promise<void> {
    if (how.tookLock) await this.releaseQuietly(name);
    else if (how.hostHeld) {
      try {
        await this.blockerm.acquire(name, { hold: 'host' });
      } catch (e) {
        this.opts.log.warn({ volume: name, err: String(e) }, 'could not hand the lock back to the host');
      }
    }
  }

  /** Takes the lock without waiting, as a process hold under this mapper's lease. */
  private async acquireNow(name: string): Promise<Acquired> {
    const before = performance.now();
    const r = await this.blockerm.acquire(name, { wait: false, leaseMs: this.leaseMs });
    this.logTakeover(name, r.tookOver, r.previous);
    return { ...r, validUntil: this.validFrom(before) };
  }

  /**
   * Takes the lock for a write, waiting up to the lock timeout. A live holder elsewhere is asked
   * to hand the volume over (`requestRelease`), again every lease/3 while this waits (a request
   * is dropped when the lock changes hands); a dead one is taken over (fenced first). Same result
   * as acquireNow; ELOCKED naming the holder when the wait runs out.
   */
  private async acquireWaiting(name: string, how: { hostHoldFails?: boolean } = {}): Promise<Acquired> {
    const timeoutMs = this.opts.lockTimeoutMs;
    const deadline = performance.now() + timeoutMs;
    const askEvery = Math.max(250, Math.floor((this.leaseMs || 3000) / 3));
    let asked: LockRecord | null = null;
    for (;;) {
      const before = performance.now();
      const left = Math.ceil(deadline - before);
      try {
        const wait = asked !== null && left > 0;
        const r = await this.blockerm.acquire(name, {
          wait,
          ...(wait ? { timeoutMs: Math.min(left, askEvery) } : {}),
          leaseMs: this.leaseMs,
        });
        this.logTakeover(name, r.tookOver, r.previous);
        if (asked !== null)
          this.opts.log.info(
            { volume: name, from: asked.owner, ms: Math.round(performance.now() - before) },
            `took volume ${name} over from ${describeRecord(asked)}`,
          );
        return { ...r, validUntil: this.validFrom(before) };
      } catch (e) {
        if (!ArchipelagoError.is(e, 'ELOCKED') && !ArchipelagoError.is(e, 'ETIMEDOUT')) throw e;
        if (deadline - performance.now() <= 0) throw await this.heldError(name, asked, timeoutMs, e);
        const holder = await this.ask(name);
        // `vlmc open`: a host hold has nobody to answer, so say so now rather than wait.
        if (holder?.process === null && holder.owner !== this.blockerm.identity && how.hostHoldFails)
          throw await this.heldError(name, holder, 0, e);
        if (holder !== null) asked = holder;
        else asked ??= { owner: 'nobody', process: null, expires: null };
      }
    }
  }

  /** Asks the holder of `name` to hand it over; its record (null: free now). */
  private async ask(name: string): Promise<LockRecord | null> {
    try {
      return await this.blockerm.requestRelease(name, { by: this.blockerm.identity });
    } catch (e) {
      if (!ArchipelagoError.is(e, 'ENOTSUP')) throw e;
      return await this.blockerm.lockInfo(name); // a blocker that cannot ask: wait as before
    }
  }

  /** ELOCKED for a write that waited `ms` for the lock of `name` in vain. */
  private async heldError(name: string, asked: LockRecord | null, ms: number, cause: unknown) {
    const now = await this.blockerm.lockInfo(name).catch(() => asked);
    const who = describeRecord(now);
    const why =
      now?.process === null
        ? `it is held by the host (vlmc open or vlmc lock there): "vlmc close ${name}" there, or "vlmc unlock -f ${name}"`
        : asked !== null
          ? `it was asked to hand the volume over and did not within ${ms} ms`
          : `waited ${ms} ms`;
    return archipError('ELOCKED', `volume "${name}" is locked by ${who}; ${why}`, {
      cause,
      details: { volume: name, owner: now?.owner ?? null, holder: now },
    });
  }

  /** Until when a lease taken (or renewed) by a call that started at `before` is valid here. */
  private validFrom(before: number): number {
    return this.leaseMs === 0 ? Number.POSITIVE_INFINITY : before + this.leaseMs - this.marginMs;
  }

  private logTakeover(name: string, why: string | null, previous: LockRecord | null): void {
    if (why === null) return;
    this.opts.log.warn(
      { volume: name, previous, why },
      `took over the lock of volume ${name} from ${describeRecord(previous)}: ${why}`,
    );
  }

  /** Runs the renewal timer while some volume is open under a lease. */
  private scheduleRenewals(): void {
    const want = this.leaseMs > 0 && this.open.size > 0;
    if (want && !this.renewer) {
      this.renewer = setInterval(() => void this.renewAll(), Math.max(50, Math.floor(this.leaseMs / 3)));
      this.renewer.unref();
    } else if (!want && this.renewer) this.stop();
  }

  /** Renews every open volume's lease; a lock found lost fences its volume. */
  private async renewAll(): Promise<void> {
    if (this.renewing) return;
    this.renewing = true;
    try {
      await Promise.all([...this.open].map(([name, vol]) => this.renewOne(name, vol)));
    } finally {
      this.renewing = false;
    }
  }

  /**
   * Renews the lease of open volume `name`: a lock found lost fences it; a release request the
   * renewal reports goes to the release handler. Also what a `watchRelease` hint runs.
   */
  private async renewOne(name: string, vol: OpenVolume): Promise<void> {
    if (vol.fenced || this.open.get(name) !== vol) return;
    const before = performance.now();
    try {
      const r = await this.blockerm.renew(name, { leaseMs: this.leaseMs });
      if (this.open.get(name) === vol && performance.now() <= vol.validUntil)
        vol.validUntil = this.validFrom(before);
      if (r.releaseRequested) this.requested(name, vol, r.releaseRequested.by);
    } catch (e) {
      if (this.open.get(name) !== vol) return; // closed meanwhile (a hint racing the hand-over)
      if (ArchipelagoError.is(e, 'ELOCKED') || ArchipelagoError.is(e, 'ENOTLOCKED'))
        this.fence(name, vol, `its lock was lost (${(e as Error).message})`);
      else if (ArchipelagoError.isInstance(e) && e.details.fenced === true) this.fence(name, vol, e.message);
      else this.opts.log.warn({ volume: name, err: String(e) }, 'lease renewal failed; retrying');
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

type Acquired = { took: boolean; previous: LockRecord | null; validUntil: number };

function describeRecord(r: LockRecord | null): string {
  if (r === null) return 'nobody';
  const p = r.process;
  return p === null ? `${r.owner} (held by the host)` : `${r.owner} (pid ${p.pid} on ${p.host})`;
}
