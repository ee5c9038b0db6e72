/**
 * SegmentMapper: a MapperApi whose calls go through the segment to a mapperd peer
 * (protocol/mapper-wire.ts). Idempotent calls (map for read/write, info, open, close, discard, flush, …) are
 * retried when mapperd died or stopped (client.ts); map changes that are not idempotent (create,
 * clone, snapshot, rename, resize, remove) are not: their failure is reported.
 *
 * `openVolumes()` lists the volumes this client opened: explicitly (`openVolume`), or implicitly
 * — with `trackOpens`, the first operation on a volume notes whether mapperd had it open before
 * and has it open after, as the embedded Mapper's `openVolumes()` would (vlmc closes those again).
 *
 * With `cache` (vlmcd), map lookups are answered from what earlier map replies said, under
 * mapperd's lease on the volume (protocol/mapper-wire.ts, "Map cache"): a lookup whose blocks are all
 * cached (for a write: cached as writable, i.e. copied up already) costs no round trip. The rules
 * that keep it correct:
 * - a reply is cached only if mapperd granted the lease with it, and only if no invalidation of
 *   the volume happened between sending the request and receiving the reply (a generation per
 *   volume, bumped by every drop);
 * - within one generation an entry only ever goes from shared or zero to writable (copy-up), so a
 *   late reply that says "shared" never replaces a cached "writable";
 * - the cache is used only until the lease runs out, counted from the request's send time; it is
 *   renewed in the background while in use;
 * - this client's own map changes (snapshot, remove, rename, resize, close, unlock, discard) drop
 *   the volume's cache before and after, and tell mapperd so (MapperFlag.CACHE);
 * - when mapperd recalls the lease (INVALIDATE, sent to this client's port before someone else
 *   changes the map), the cache is dropped, `onRecall` runs (vlmcd drains the volume's I/O) and
 *   the answer tells mapperd to go ahead.
 */
import { ArchipelagoError, encodeTargetPayload, XF, XS } from '@archipelago/libxseg';
import type { XsegRequest } from '@archipelago/libxseg/segment';
import type * as mapper from '@archipelago/mapper';
import type { LoadOptions, MapperApi, ObjectSegment, VolumeInfo } from '@archipelago/mapper';
import {
  decodeLease,
  decodeSegmentsCached,
  MapperFlag,
  MapperOp,
  mapReplyRoom,
} from '../protocol/mapper-wire.js';
import { fromJson, toJson } from '../protocol/wire.js';
import { PeerClient, type PeerClientOptions, type Send } from './client.js';

export interface SegmentMapperOptions extends PeerClientOptions {
  /** Note which volumes this client's operations opened (see the class comment). */
  trackOpens?: boolean;
  /** Cache map lookups under mapperd's leases (see the file comment). Set by vlmcd. */
  cache?: boolean;
}

interface CachedEntry {
  target: string;
  zero: boolean;
  writable: boolean;
}

interface VolumeCache {
  size: number;
  blocksize: number;
  readonly: boolean;
  /** The lease runs out (performance.now() ms). */
  expires: number;
  leaseMs: number;
  renewing: boolean;
  entries: Map<number, CachedEntry>;
}

/** Map cache counters (tests, logs). */
export interface MapCacheStats {
  hits: number;
  misses: number;
  /** Leases mapperd took back. */
  recalls: number;
}

/** What mapperd says about itself. */
export interface MapperHello {
  /** The identity its volume locks carry. */
  identity: string;
  /** Volumes it holds open. */
  open: string[];
}

export class SegmentMapper extends PeerClient implements MapperApi {
  private readonly opened = new Set<string>();
  private readonly trackOpens: boolean;
  /** Per volume: whether mapperd had it open before this client's first operation on it. */
  private readonly before = new Map<string, Promise<boolean>>();
  private readonly checked = new Set<string>();
  private readonly caching: boolean;
  private readonly caches = new Map<string, VolumeCache>();
  private readonly gens = new Map<string, number>();
  /**
   * Runs when mapperd takes a volume's lease back, after the cache was dropped and before the
   * answer (vlmcd drains the volume's I/O here, so no I/O still uses a mapping mapperd is about to
   * change).
   */
  onRecall: ((name: string) => Promise<void>) | undefined;
  readonly cacheStats: MapCacheStats = { hits: 0, misses: 0, recalls: 0 };
  private epoch = 0;

  /**
   * A counter that moves whenever a mapping this client handed out may have stopped being
   * current: a cache dropped (recall, this client's own map change), a lease taken up afresh
   * (a new cache: mapperd grants none while a change runs, so changes since the last drop are
   * done), or a map reply answered without a lease. While it stays put, every lookup came from one
   * lease, under which no object the mappings name is deleted or replaced. A client that keeps
   * per-object state (the endpoint's direct data path caches object fds) drops it when it moves.
   */
  get mapEpoch(): number {
    return this.epoch;
  }

  constructor(opts: SegmentMapperOptions) {
    super(opts, 'mapperd');
    this.trackOpens = opts.trackOpens === true;
    this.caching = opts.cache === true;
    if (this.caching) this.port.onRequest((req) => this.serveRecall(req));
  }

  private flags(opts?: LoadOptions): number {
    return opts?.assumeV0 ? XF.ASSUMEV0 : 0;
  }

  /** Flags of a map change: this client drops its own cache around it. */
  private changeFlags(opts?: LoadOptions): number {
    return this.flags(opts) | (this.caching ? MapperFlag.CACHE : 0);
  }

  private gen(name: string): number {
    return this.gens.get(name) ?? 0;
  }

  /** Forgets what is cached of `name`; replies to requests sent before are not cached. */
  dropCache(name: string): void {
    this.epoch++;
    if (!this.caching) return;
    this.gens.set(name, this.gen(name) + 1);
    this.caches.delete(name);
  }

  /** Runs one of this client's own map changes on `name`: the cache is dropped before and after. */
  private own<T>(name: string, fn: () => Promise<T>): Promise<T> {
    this.dropCache(name);
    return fn().finally(() => this.dropCache(name));
  }

  private serveRecall(req: XsegRequest): void {
    if (req.op !== MapperOp.INVALIDATE) {
      this.port.respond(req, { state: XS.FAILED, serviced: 0 });
      return;
    }
    const name = req.target;
    this.cacheStats.recalls++;
    this.dropCache(name);
    void (async () => {
      try {
        await this.onRecall?.(name);
      } catch {
        // answered anyway: the cache is gone, which is all mapperd asks
      } finally {
        this.dropCache(name);
        try {
          this.port.respond(req, { serviced: 0 });
        } catch {
          // the port was closed: mapperd sees the holder gone
        }
      }
    })();
  }

  /** Segments for a range from the cache, or null when any block is not cached (or not writable, for `write`). */
  private lookup(name: string, offset: number, length: number, write: boolean): ObjectSegment[] | null {
    const c = this.caches.get(name);
    if (!c) return null;
    const t = performance.now();
    if (t >= c.expires) {
      this.caches.delete(name);
      return null;
    }
    // Out of range, bad numbers: mapperd says what is wrong.
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0)
      return null;
    if (offset + length > c.size || (write && c.readonly)) return null;
    const bs = c.blocksize;
    const out: ObjectSegment[] = [];
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const index = Math.floor(pos / bs);
      const within = pos - index * bs;
      const size = Math.min(bs - within, end - pos);
      const e = c.entries.get(index);
      if (!e || (write && !e.writable)) return null;
      out.push({ index, target: e.target, zero: e.zero, offset: within, size, blocksize: bs });
      pos += size;
    }
    if (c.expires - t < c.leaseMs / 2 && !c.renewing) this.renew(name, c);
    return out;
  }

  /** Renews the lease of a cache in use, in the background. */
  private renew(name: string, c: VolumeCache): void {
    c.renewing = true;
    const gen0 = this.gen(name);
    const t0 = performance.now();
    this.request(
      `lease ${name}`,
      { op: MapperOp.LEASE, target: name, flags: MapperFlag.CACHE, reserve: 64 },
      true,
    )
      .then((r) => {
        try {
          const l = decodeLease(r.data.subarray(0, r.serviced));
          if (this.caches.get(name) !== c) return;
          if (l.leaseMs === 0 || this.gen(name) !== gen0) this.caches.delete(name);
          else c.expires = Math.max(c.expires, t0 + l.leaseMs);
        } finally {
          r.release();
        }
      })
      .catch(() => {
        if (this.caches.get(name) === c) this.caches.delete(name);
      })
      .finally(() => {
        c.renewing = false;
      });
  }

  /** Caches what a map reply says, if mapperd leased the map with it and nothing was dropped since `gen0`. */
  private insert(name: string, gen0: number, t0: number, d: ReturnType<typeof decodeSegmentsCached>): void {
    const l = d.lease;
    if (!l || l.leaseMs === 0 || this.gen(name) !== gen0 || d.segs.length === 0) {
      this.epoch++; // answered without a lease (see mapEpoch)
      return;
    }
    let c = this.caches.get(name);
    if (!c || c.blocksize !== d.blocksize) {
      this.epoch++; // a lease taken up afresh (see mapEpoch)
      c = {
        size: l.size,
        blocksize: d.blocksize,
        readonly: l.readonly,
        expires: 0,
        leaseMs: l.leaseMs,
        renewing: false,
        entries: new Map(),
      };
      this.caches.set(name, c);
    }
    c.size = l.size;
    c.readonly = l.readonly;
    c.leaseMs = l.leaseMs;
    c.expires = Math.max(c.expires, t0 + l.leaseMs);
    for (let i = 0; i < d.segs.length; i++) {
      const s = d.segs[i]!;
      const writable = d.writable[i] === true;
      // Within a generation an entry only becomes writable (copy-up), never the reverse.
      if (!writable && c.entries.get(s.index)?.writable) continue;
      c.entries.set(s.index, { target: s.target, zero: s.zero, writable });
    }
  }

  private async json<T>(what: string, o: Send, retry: boolean): Promise<T> {
    const r = await this.request(what, { reserve: 4096, ...o }, retry);
    try {
      return fromJson<T>(r.data.subarray(0, r.serviced), what);
    } finally {
      r.release();
    }
  }

  private args(v: unknown): { data: Buffer; size: number } {
    const data = toJson(v);
    return { data, size: data.length };
  }

  /** Runs `fn`, an operation on volume `name`, noting whether it opened the volume. */
  async track<T>(name: string, fn: () => Promise<T>): Promise<T> {
    if (!this.trackOpens || this.checked.has(name)) return fn();
    let was = this.before.get(name);
    if (!was) {
      was = this.hello().then((h) => h.open.includes(name));
      this.before.set(name, was);
    }
    const wasOpen = await was;
    const out = await fn();
    if (!this.checked.has(name)) {
      this.checked.add(name);
      if (!wasOpen && (await this.hello()).open.includes(name)) this.opened.add(name);
    }
    return out;
  }

  /** Drops `name` from `openVolumes()` (it was closed or removed another way). */
  forget(name: string): void {
    this.opened.delete(name);
  }

  /** mapperd's identity and the volumes it holds open. */
  hello(): Promise<MapperHello> {
    return this.json<MapperHello>('hello', { op: MapperOp.HELLO }, true);
  }

  create(name: string, opts: mapper.CreateOptions): Promise<VolumeInfo> {
    return this.json(`create ${name}`, { op: MapperOp.CLONE, target: name, ...this.args(opts) }, false);
  }

  /** Makes a volume created with `{ incomplete: true }` (an import) usable: mapperd completes it. */
  complete(name: string): Promise<VolumeInfo> {
    return this.json(`complete ${name}`, { op: MapperOp.COMPLETE, target: name }, false);
  }

  clone(source: string, name: string, opts: mapper.CloneOptions = {}): Promise<VolumeInfo> {
    if (typeof source !== 'string' || source === '')
      throw new ArchipelagoError('EINVAL_NAME', 'clone: the source snapshot name is missing');
    return this.json(
      `clone ${source} ${name}`,
      { op: MapperOp.CLONE, target: name, ...this.args({ ...opts, source }) },
      false,
    );
  }

  createFromEntries(name: string, opts: mapper.CreateFromEntriesOptions): Promise<VolumeInfo> {
    return this.json(`create ${name}`, { op: MapperOp.CREATE, target: name, ...this.args(opts) }, false);
  }

  /** Hashes in mapperd; `onProgress` is not called over the segment. */
  hash(name: string, _opts: mapper.HashOptions = {}): Promise<mapper.HashResult> {
    return this.json(`hash ${name}`, { op: MapperOp.HASH, target: name, reserve: 1 << 20 }, true);
  }

  snapshot(name: string, snap: string): Promise<VolumeInfo> {
    const data = encodeTargetPayload(snap);
    const flags = this.changeFlags();
    return this.track(name, () =>
      this.own(name, () =>
        this.json(
          `snapshot ${name}`,
          { op: MapperOp.SNAPSHOT, target: name, data, size: data.length, flags },
          false,
        ),
      ),
    );
  }

  async remove(name: string, opts: LoadOptions = {}): Promise<void> {
    await this.own(name, () =>
      this.simple(`remove ${name}`, { op: MapperOp.DELETE, target: name, flags: this.changeFlags(opts) }),
    );
    this.opened.delete(name);
  }

  async rename(name: string, newName: string): Promise<VolumeInfo> {
    const data = encodeTargetPayload(newName);
    const info = await this.own(name, () =>
      this.json<VolumeInfo>(
        `rename ${name}`,
        { op: MapperOp.RENAME, target: name, data, size: data.length, flags: this.changeFlags() },
        false,
      ),
    );
    this.opened.delete(name);
    return info;
  }

  // The trash (MapperOp.TRASH): listing is idempotent and retried, the changes are not.

  listTrash(opts: mapper.TrashOptions = {}): Promise<mapper.TrashEntry[]> {
    return this.json(
      'trash ls',
      { op: MapperOp.TRASH, ...this.args({ action: 'list', ...opts }), reserve: 64 * 1024 },
      true,
    );
  }

  restoreTrash(name: string, opts: mapper.RestoreOptions = {}): Promise<VolumeInfo> {
    const o = { op: MapperOp.TRASH, target: name, ...this.args({ action: 'restore', ...opts }) };
    return this.json(`trash restore ${name}`, o, false);
  }

  purgeTrash(entry: string): Promise<mapper.TrashEntry> {
    return this.json(
      `trash purge ${entry}`,
      { op: MapperOp.TRASH, target: entry, ...this.args({ action: 'purge' }) },
      false,
    );
  }

  purgeExpiredTrash(nowMs: number, ttlMs?: number): Promise<mapper.TrashEntry[]> {
    const a = { action: 'purge-expired', nowMs, ...(ttlMs === undefined ? {} : { ttlMs }) };
    return this.json(
      'trash purge-expired',
      { op: MapperOp.TRASH, ...this.args(a), reserve: 64 * 1024 },
      false,
    );
  }

  /**
   * Rolls `name` back to snapshot `snap` in mapperd (MapperOp.ROLLBACK; not retried: a map
   * change). EBUSY when mapperd holds it open for another client.
   */
  rollback(name: string, snap: string): Promise<VolumeInfo> {
    const data = encodeTargetPayload(snap);
    const flags = this.changeFlags();
    return this.own(name, () =>
      this.json(
        `rollback ${name}`,
        { op: MapperOp.ROLLBACK, target: name, data, size: data.length, flags },
        false,
      ),
    );
  }

  /**
   * Flattens clone `name` in mapperd (MapperOp.FLATTEN), online when it is mapped: its clients'
   * I/O goes on meanwhile. Retried when mapperd restarts (a flatten run again finishes the
   * work); `onProgress` is not called over the segment.
   */
  flatten(name: string, _opts: mapper.FlattenOptions = {}): Promise<mapper.FlattenResult> {
    const flags = this.changeFlags();
    return this.own(name, () =>
      this.json(`flatten ${name}`, { op: MapperOp.FLATTEN, target: name, flags }, true),
    );
  }

  resize(name: string, size: number): Promise<VolumeInfo> {
    if (!Number.isSafeInteger(size) || size < 0)
      throw new ArchipelagoError('EINVAL_SIZE', `resize: size must be an integer >= 0, got ${size}`);
    const flags = this.changeFlags();
    return this.track(name, () =>
      this.own(name, () =>
        this.json(`resize ${name}`, { op: MapperOp.TRUNCATE, target: name, offset: size, flags }, false),
      ),
    );
  }

  async openVolume(name: string, opts: LoadOptions = {}): Promise<VolumeInfo> {
    const info = await this.json<VolumeInfo>(
      `open ${name}`,
      { op: MapperOp.OPEN, target: name, flags: this.flags(opts) },
      true,
    );
    this.opened.add(name);
    return info;
  }

  /**
   * CLOSE. With `restoreHostHold` (an unmapping endpoint), a volume the host holds in mapperd
   * (handed over to it: `vlmc open`) stays open there (MapperFlag.HOST_HOLD) instead of closing.
   */
  async closeVolume(name: string, opts: { restoreHostHold?: boolean } = {}): Promise<void> {
    const flags = this.changeFlags() | (opts.restoreHostHold ? MapperFlag.HOST_HOLD : 0);
    await this.own(name, () =>
      this.simple(`close ${name}`, { op: MapperOp.CLOSE, target: name, flags }, true),
    );
    this.opened.delete(name);
  }

  lock(name: string): Promise<void> {
    return this.simple(`lock ${name}`, { op: MapperOp.LOCK, target: name }, true);
  }

  unlock(name: string, opts: { force?: boolean } = {}): Promise<void> {
    return this.own(name, () =>
      this.simple(`unlock ${name}`, {
        op: MapperOp.UNLOCK,
        target: name,
        flags: (opts.force ? XF.FORCE : 0) | this.changeFlags(),
      }),
    );
  }

  info(name: string, opts: LoadOptions = {}): Promise<VolumeInfo> {
    return this.json(`info ${name}`, { op: MapperOp.INFO, target: name, flags: this.flags(opts) }, true);
  }

  list(): Promise<mapper.VolumeSummary[]> {
    return this.json('list', { op: MapperOp.LIST, reserve: 64 * 1024 }, true);
  }

  entries(name: string, opts: LoadOptions = {}): Promise<readonly mapper.MapEntry[]> {
    return this.json(
      `entries ${name}`,
      { op: MapperOp.ENTRIES, target: name, flags: this.flags(opts), reserve: 64 * 1024 },
      true,
    );
  }

  private async segments(op: number, name: string, offset: number, length: number, opts?: LoadOptions) {
    const what = `${op === MapperOp.MAPW ? 'mapWrite' : 'mapRead'} ${name}`;
    const cache = this.caching && !opts?.assumeV0;
    const gen0 = this.gen(name);
    const t0 = performance.now();
    const r = await this.request(
      what,
      {
        op,
        target: name,
        offset,
        size: length,
        flags: this.flags(opts) | (cache ? MapperFlag.CACHE : 0),
        reserve: mapReplyRoom(length),
      },
      true,
    );
    try {
      const d = decodeSegmentsCached(r.data.subarray(0, r.serviced), offset, cache);
      if (cache) this.insert(name, gen0, t0, d);
      else this.epoch++; // answered without a lease (see mapEpoch)
      return d.segs;
    } catch (e) {
      throw new ArchipelagoError('EIO', `${what}: malformed map reply (${(e as Error).message})`, {
        cause: e,
      });
    } finally {
      r.release();
    }
  }

  mapRead(name: string, offset: number, length: number, opts?: LoadOptions): Promise<ObjectSegment[]> {
    return this.map(MapperOp.MAPR, name, offset, length, opts);
  }

  mapWrite(name: string, offset: number, length: number, opts?: LoadOptions): Promise<ObjectSegment[]> {
    return this.map(MapperOp.MAPW, name, offset, length, opts);
  }

  /** A map lookup: from the cache when every block is there (for a write: writable), else from mapperd. */
  private map(op: number, name: string, offset: number, length: number, opts?: LoadOptions) {
    if (this.caching && !opts?.assumeV0) {
      const hit = this.lookup(name, offset, length, op === MapperOp.MAPW);
      if (hit) {
        this.cacheStats.hits++;
        return Promise.resolve(hit);
      }
      this.cacheStats.misses++;
    }
    return this.track(name, () => this.segments(op, name, offset, length, opts));
  }

  /**
   * ADD_CLIENT: registers `addr`, the address of a librados client of this process that writes
   * volume `name`'s data objects itself (the endpoint's direct data path on RADOS), in the volume
   * lock's record, so that every later break of the lock blocklists it too. mapperd holds the
   * volume first (as for a write). Resolves with the record; `ENOTSUP` on a file store.
   */
  addClient(name: string, addr: string): Promise<import('@archipelago/blocker').LockRecord> {
    return this.track(name, () =>
      this.json(`addClient ${name}`, { op: MapperOp.ADD_CLIENT, target: name, ...this.args({ addr }) }, true),
    );
  }

  /**
   * REMOVE_CLIENT: takes `addr` (registered with `addClient`, its client shut down) off volume
   * `name`'s lock record while mapperd holds the volume; the endpoint's unmap sends it, so that
   * a record that stays held (another client has the volume open, a host hold) does not keep
   * listing it. Resolves with the record, or null when there was nothing to take off.
   */
  removeClient(name: string, addr: string): Promise<import('@archipelago/blocker').LockRecord | null> {
    const o = { op: MapperOp.REMOVE_CLIENT, target: name, ...this.args({ addr }) };
    return this.json(`removeClient ${name}`, o, true);
  }

  assertWritable(name: string, opts: LoadOptions = {}): Promise<void> {
    if (this.caching && !opts.assumeV0) {
      const c = this.caches.get(name);
      if (c && !c.readonly && performance.now() < c.expires) return Promise.resolve();
    }
    return this.track(name, () =>
      this.simple(
        `assertWritable ${name}`,
        { op: MapperOp.ASSERTWRITABLE, target: name, flags: this.flags(opts) },
        true,
      ),
    );
  }

  discard(name: string, index: number, opts: LoadOptions = {}): Promise<void> {
    if (!Number.isSafeInteger(index) || index < 0)
      throw new ArchipelagoError('EINVAL', `discard: block index must be an integer >= 0, got ${index}`);
    return this.track(name, () =>
      this.own(name, () =>
        this.simple(
          `discard ${name}`,
          { op: MapperOp.DISCARD, target: name, offset: index, flags: this.changeFlags(opts) },
          true,
        ),
      ),
    );
  }

  /** FLUSH; with a volume name mapperd also re-checks that the volume is still its own (fencing). */
  flush(name?: string): Promise<void> {
    return this.simple(
      name === undefined ? 'flush' : `flush ${name}`,
      { op: MapperOp.FLUSH, ...(name !== undefined ? { target: name } : {}) },
      true,
    );
  }

  /**
   * This client is done with `name`; mapperd keeps it open (and its lock) for the host, and knows
   * it holds it so (OPEN with MapperFlag.HOST_HOLD): an endpoint's unmap leaves it open then.
   */
  async handOver(name: string): Promise<void> {
    await this.simple(`hold ${name}`, { op: MapperOp.OPEN, target: name, flags: MapperFlag.HOST_HOLD }, true);
    this.opened.delete(name);
  }

  openVolumes(): string[] {
    return [...this.opened];
  }

  /** Leaves the port; volumes stay open in mapperd (close them first if that is wanted). */
  close(): Promise<void> {
    return this.disconnect();
  }
}
