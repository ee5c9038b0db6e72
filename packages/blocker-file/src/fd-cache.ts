/**
 * An LRU cache of open file descriptors with reference counts (the original's xcache).
 *
 * Invariants:
 * - An fd is closed only when it has left the cache (evicted or invalidated) AND no operation holds
 *   it (`refs === 0`). Eviction never closes an fd in use; the cache may briefly hold more than
 *   `capacity` entries while all of them are in use.
 * - `invalidate(path)` (after unlink or rename) guarantees that no later `get(path)` returns an fd
 *   opened before it: the entry leaves the map, and opens still in flight for that path are
 *   marked stale, so their fd serves only the callers already waiting for it and is then closed.
 */
import * as fsio from './fsio.js';

export interface FdEntry {
  readonly fd: number;
  readonly path: string;
  /** Opened with O_DIRECT. */
  readonly direct: boolean;
  /** Operations currently using the fd. */
  refs: number;
  /** No longer in the cache: closed when `refs` drops to 0. */
  detached: boolean;
}

/** Opens `path` (never creating it). Rejects with the system error (ENOENT for a missing file). */
export type Opener = (path: string) => Promise<{ fd: number; direct: boolean }>;

interface InFlight {
  stale: boolean;
}

interface SharedOpen extends InFlight {
  waiters: number;
  promise: Promise<FdEntry>;
}

export class FdCache {
  // guarded by the event loop (every method runs to its first await without interleaving)
  private readonly entries = new Map<string, FdEntry>();
  /** Opens of existing files in flight, shared by every caller asking for the same path. */
  private readonly opening = new Map<string, SharedOpen>();
  /** Every open in flight (shared or private), so `invalidate` can mark them stale. */
  private readonly inFlight = new Map<string, Set<InFlight>>();
  /** close(2) calls in flight, awaited by close(). */
  private readonly closing = new Set<Promise<void>>();
  private closed = false;

  constructor(
    readonly capacity: number,
    private readonly opener: Opener,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /**
   * The cached fd of `path` with one reference taken, synchronously, or undefined when it is not
   * cached (then `get` opens it). The hot path's way to skip a promise per I/O.
   */
  getCached(path: string): FdEntry | undefined {
    const hit = this.entries.get(path);
    if (hit === undefined) return undefined;
    // LRU: move to the most recent end.
    this.entries.delete(path);
    this.entries.set(path, hit);
    hit.refs++;
    return hit;
  }

  /**
   * An fd for an existing file, with one reference taken. Concurrent callers for the same path
   * share one open(2). Rejects with the opener's error (ENOENT when the file is missing).
   */
  async get(path: string): Promise<FdEntry> {
    const hit = this.entries.get(path);
    if (hit) {
      // LRU: move to the most recent end.
      this.entries.delete(path);
      this.entries.set(path, hit);
      hit.refs++;
      return hit;
    }
    let shared = this.opening.get(path);
    if (!shared) {
      const rec: SharedOpen = { stale: false, waiters: 0, promise: Promise.resolve(undefined as never) };
      rec.promise = this.runOpen(
        path,
        rec,
        () => this.opener(path),
        () => rec.waiters,
      );
      // runOpen does not settle synchronously, so the record is registered before it completes.
      this.opening.set(path, rec);
      shared = rec;
    }
    // Counted before awaiting, so the entry is born with every waiter's reference and cannot be
    // evicted and closed between its insertion and a waiter resuming.
    shared.waiters++;
    return shared.promise;
  }

  /**
   * Caches an fd the caller opened itself (e.g. after creating the file), with one reference
   * taken. `open` runs under the same staleness tracking as `get`.
   */
  adopt(path: string, open: () => Promise<{ fd: number; direct: boolean }>): Promise<FdEntry> {
    return this.runOpen(path, { stale: false }, open, () => 1);
  }

  private async runOpen(
    path: string,
    rec: InFlight,
    open: () => Promise<{ fd: number; direct: boolean }>,
    refs: () => number,
  ): Promise<FdEntry> {
    let set = this.inFlight.get(path);
    if (!set) {
      set = new Set();
      this.inFlight.set(path, set);
    }
    set.add(rec);
    try {
      const { fd, direct } = await open();
      const entry: FdEntry = { fd, path, direct, refs: refs(), detached: false };
      if (rec.stale || this.closed || this.entries.has(path)) {
        // Serve the callers already waiting, then close: never cache a possibly outdated fd,
        // and never replace a live entry (both fds name the same file in that case).
        entry.detached = true;
      } else {
        this.entries.set(path, entry);
        this.trim();
      }
      return entry;
    } finally {
      set.delete(rec);
      if (set.size === 0 && this.inFlight.get(path) === set) this.inFlight.delete(path);
      if (this.opening.get(path) === rec) this.opening.delete(path);
    }
  }

  /** Drops one reference; closes the fd if it left the cache and nobody else uses it. */
  release(entry: FdEntry): void {
    entry.refs--;
    if (entry.refs > 0) return;
    if (entry.detached) {
      this.closeFd(entry.fd);
    } else if (this.entries.size > this.capacity) {
      this.trim();
    }
  }

  /** Forgets `path` (after unlink or rename): the cached fd closes once idle, opens in flight go stale. */
  invalidate(path: string): void {
    const entry = this.entries.get(path);
    if (entry) this.detach(entry);
    const set = this.inFlight.get(path);
    if (set) for (const rec of set) rec.stale = true;
    // A later get() must open afresh, not join an open that may predate the invalidation.
    this.opening.delete(path);
  }

  /** Forgets every entry (e.g. when switching off O_DIRECT); fds close once idle. */
  invalidateAll(): void {
    for (const entry of [...this.entries.values()]) this.detach(entry);
    for (const set of this.inFlight.values()) for (const rec of set) rec.stale = true;
    this.opening.clear();
  }

  /**
   * Detaches everything and refuses to cache new fds; resolves when every idle fd is closed
   * (fds still in use close when released).
   */
  async close(): Promise<void> {
    this.closed = true;
    this.invalidateAll();
    while (this.closing.size > 0) await Promise.all([...this.closing]);
  }

  private detach(entry: FdEntry): void {
    this.entries.delete(entry.path);
    entry.detached = true;
    if (entry.refs === 0) this.closeFd(entry.fd);
  }

  private closeFd(fd: number): void {
    const p = fsio.close(fd).then(
      () => {},
      () => {},
    );
    this.closing.add(p);
    p.finally(() => this.closing.delete(p));
  }

  /** Evicts least recently used idle entries while over capacity. */
  private trim(): void {
    if (this.entries.size <= this.capacity) return;
    for (const entry of this.entries.values()) {
      if (this.entries.size <= this.capacity) break;
      if (entry.refs === 0) this.detach(entry);
    }
  }
}
