/**
 * The endpoint's direct data path in the daemon wiring (issue 18, "daemons without the extra
 * hop"). A `vlmc map` endpoint that composes I/O itself (`compose: 'local'`) and can reach the
 * store reads and writes data objects with its own blocker, built from the same `[blockerb]`
 * section as the blockerb peer (a FileBlocker on the same directory, same `sync`, same `direct`),
 * instead of sending every I/O across the segment to blockerb. Maps, locks and leases stay with
 * mapperd (the SegmentMapper) and the blocker peers; copy-ups, discards and every other object
 * call still go to blockerb.
 *
 * What keeps it correct:
 * - **Durability.** `flush()` flushes the endpoint's own blocker (its write-back writes and new
 *   directory entries) and blockerb (mapperd's); FUA writes are durable in the endpoint's
 *   blocker, and the composer then flushes mapperd as before. A recall (before a change by
 *   another client: a snapshot through vlmcd flushes only blockerb; a hand-over to another host)
 *   flushes the endpoint's blocker once the volume's I/O has drained.
 * - **Cached fds.** Object names are reused (`<volume>_<epoch>_<index>`: a block discarded and
 *   written again, a rollback), and blockerb deletes and replaces objects (discard, copy-up,
 *   gc), so an fd cached here could name an unlinked inode. Every mapping the composer uses comes
 *   from one lease of mapperd's (under which nothing it names is deleted or replaced: mapperd
 *   recalls the lease first, and the endpoint's own changes drop it), or was answered without a
 *   lease; the SegmentMapper's `mapEpoch` moves on every drop, every lease taken up afresh and
 *   every reply without a lease. Before each read or write the epoch is compared with the one the
 *   cached fds were opened under, and all of them are forgotten when it moved; a recall forgets
 *   them too, once the volume's I/O has drained. A lease cannot be taken up while a change runs,
 *   so an fd opened from a mapping of before a change is forgotten before a mapping of after it is
 *   used.
 * - **Fencing (files).** Data writes need a current mapping: the endpoint's map lease is used only
 *   until it runs out (1 s by default), and a fenced mapperd renews none and answers no lookup,
 *   so the endpoint stops writing within a map lease of mapperd's self-fencing, which comes a fifth
 *   of the volume lease before a breaker proceeds (docs/ARCHITECTURE.md, "Locks, leases and
 *   fencing").
 * - **Fencing (RADOS, `RadosDirectDataBlocker`).** The endpoint's own librados client of
 *   `[blockerb]` writes only while its address is registered in the lock record of every volume
 *   it has open (`clients`, through mapperd and blockerm), confirmed within the current map epoch;
 *   every break and take-over blocklists the registered clients, so the OSDs refuse its writes
 *   after a break even if it was stopped across it (no timing assumption). Until a registration
 *   is current, writes go across the segment to blockerb. A fenced client (a take-over by this
 *   host's own mapperd, as a daemons restart does) is replaced by a new one mapperd registers
 *   again, only while it holds the lock, and the refused I/O is retried once (`reconnect`); the
 *   client writes through, so no write the OSDs refused was ever acknowledged.
 *
 * `ARCHIPELAGO_DATA_PATH=direct|segment` forces a path (`auto`, the default: direct when the
 * store is a file blocker whose directory this process can read and write; a rados_blocker store
 * takes the direct path only when asked, `direct`, and its ceph.conf and keyring are readable).
 */
import { randomBytes } from 'node:crypto';
import { accessSync, constants } from 'node:fs';
import type * as B from '@archipelago/blocker';
import type { FileBlocker } from '@archipelago/blocker-file';
import type { RadosBlocker } from '@archipelago/blocker-rados';
import { ArchipelagoError } from '@archipelago/libxseg';
import type { LoadedConfig } from './config.js';
import { openBlocker } from './embedded.js';
import { blockerOptions, umaskOf } from './sections.js';

const randomHex = () => randomBytes(4).toString('hex');

/** True for the error of a RADOS client the cluster blocklisted (blocker-rados errors.ts: `details.fenced`). */
export function isFencedError(e: unknown): boolean {
  return ArchipelagoError.isInstance(e) && e.details.fenced === true;
}

/** The environment variable that picks the endpoint's data path: `auto`, `direct` or `segment`. */
export const DATA_PATH_ENV = 'ARCHIPELAGO_DATA_PATH';

export type DataPath = 'direct' | 'segment';

/** What `ARCHIPELAGO_DATA_PATH` asks for (`auto` when unset). */
export function requestedDataPath(env: NodeJS.ProcessEnv = process.env): DataPath | 'auto' {
  const v = env[DATA_PATH_ENV];
  if (v === undefined || v === '' || v === 'auto') return 'auto';
  if (v === 'direct' || v === 'segment') return v;
  throw new ArchipelagoError(
    'EINVAL',
    `${DATA_PATH_ENV}=${v}: expected "direct" (the endpoint reads and writes data objects itself), "segment" (through blockerb) or "auto"`,
  );
}

/** Where a SegmentMapper says whether its mappings may have gone stale (see its `mapEpoch`). */
export interface MapEpochSource {
  readonly mapEpoch: number;
}

/** What the RADOS direct path needs of the SegmentMapper: its epoch, its volumes, ADD_CLIENT. */
export interface ClientRegistrar extends MapEpochSource {
  openVolumes(): string[];
  addClient(name: string, addr: string): Promise<unknown>;
  /** Takes `addr` off the volume lock's record (REMOVE_CLIENT); absent: registrations stay. */
  removeClient?(name: string, addr: string): Promise<unknown>;
}

/**
 * Which data path an endpoint of `loaded` takes, and why: `direct` when asked (or `auto`) and the
 * `[blockerb]` section is a file blocker whose directory this process can read and write; a
 * rados_blocker only when asked (`direct`), and when this process can read its ceph.conf and
 * keyring (when named). `direct` asked but impossible is an error naming why.
 */
export function chooseDataPath(
  loaded: LoadedConfig,
  env: NodeJS.ProcessEnv = process.env,
): { path: DataPath; why: string } {
  const asked = requestedDataPath(env);
  if (asked === 'segment') return { path: 'segment', why: `${DATA_PATH_ENV}=segment` };
  const o = blockerOptions(loaded, 'blockerb');
  let refused: string | null = null;
  if (o.type !== 'file_blocker') {
    // RADOS (RadosDirectDataBlocker: a client per volume, registered in the volume lock), when this
    // process can read the cluster's ceph.conf and keyring (the daemons may run as another user).
    for (const [key, path] of [
      ['ceph_conf', o.cephConf],
      ['keyring', o.keyring],
    ] as const) {
      if (path === undefined || refused !== null) continue;
      try {
        accessSync(path, constants.R_OK);
      } catch (e) {
        refused = `cannot read [blockerb] ${key} ${path} (${(e as NodeJS.ErrnoException).code ?? String(e)})`;
      }
    }
    if (refused === null && asked === 'direct')
      return {
        path: 'direct',
        why: `${DATA_PATH_ENV}=direct: [blockerb] is a rados_blocker; the endpoint's own client writes once the volume lock names it (a fenced one is replaced by a new one mapperd registers again)`,
      };
    // Not by default: a take-over of the volume lock (`archipelago restart`, the peer-failure
    // procedure for blockerm) blocklists the registered endpoint client. The endpoint replaces it
    // (RadosDirectDataBlocker.reconnect) and retries the refused I/O, but with `[blockerb] sync =
    // flush` (the default) its writes are acknowledged before RADOS commits them: those the OSDs
    // refused after the blocklist are lost, and only the next flush reports it (EIO), so
    // test-e2e/restart/rados.test.ts still sees EIO. Until acknowledged writes can be replayed,
    // the direct path over RADOS stays opt-in.
    refused ??= `blockerb is a rados_blocker: the direct path there is taken only with ${DATA_PATH_ENV}=direct (its write-back writes a lock take-over, a daemons restart's too, fences are lost)`;
  } else {
    try {
      accessSync(o.dir, constants.R_OK | constants.W_OK | constants.X_OK);
    } catch (e) {
      refused = `cannot read and write ${o.dir} (${(e as NodeJS.ErrnoException).code ?? String(e)})`;
    }
  }
  if (refused === null) return { path: 'direct', why: `[blockerb] archip_dir is reachable` };
  if (asked === 'direct')
    throw new ArchipelagoError('EINVAL', `${DATA_PATH_ENV}=direct: ${refused}`, {
      details: { dataPath: 'direct' },
    });
  return { path: 'segment', why: refused };
}

/**
 * The endpoint's blockerb: reads and writes on `data` (its own blocker of the same store), the
 * rest on `peer` (the SegmentBlocker to blockerb); `flush` flushes both.
 */
export class DirectDataBlocker implements B.Blocker {
  readonly specificationVersion = 'v1' as const;
  readonly kind: string;
  readonly identity: string;
  private seen: number;
  /** Data calls sent to the endpoint's own blocker (tests, diagnostics). */
  readonly stats = { reads: 0, writes: 0, fdResets: 0, recallFlushes: 0 };

  constructor(
    /** The endpoint's own blocker (a RadosDirectDataBlocker replaces it when it was fenced). */
    public data: FileBlocker | RadosBlocker,
    readonly peer: B.Blocker,
    protected readonly maps: MapEpochSource,
  ) {
    this.kind = peer.kind;
    this.identity = peer.identity;
    this.seen = maps.mapEpoch;
  }

  /** Forgets the cached fds when mappings may have changed since they were opened (file comment). */
  private check(): void {
    const e = this.maps.mapEpoch;
    if (e !== this.seen) {
      this.seen = e;
      this.forgetFds();
    }
  }

  /** Forgets every cached fd of the endpoint's own blocker. */
  forgetFds(): void {
    this.stats.fdResets++;
    if ('forgetCachedFds' in this.data) this.data.forgetCachedFds();
  }

  /**
   * mapperd recalled a volume's lease and its I/O drained: forgets the cached fds, and makes the
   * endpoint's writes durable before the change runs (another client's snapshot flushes only
   * blockerb; a hand-over gives the volume to another host).
   */
  async recalled(): Promise<void> {
    this.forgetFds();
    this.stats.recallFlushes++;
    await this.data.flush();
  }

  read(name: string, offset: number, length: number, options?: B.ReadOptions): Promise<Buffer> {
    this.check();
    this.stats.reads++;
    return this.data.read(name, offset, length, options);
  }

  readInto(name: string, offset: number, target: Buffer): Promise<void> {
    this.check();
    this.stats.reads++;
    return this.data.readInto(name, offset, target);
  }

  write(name: string, offset: number, data: Uint8Array, options?: B.WriteOptions): Promise<void> {
    this.check();
    this.stats.writes++;
    return this.data.write(name, offset, data, options);
  }

  /** The endpoint's own writes and blockerb's (mapperd's copy-ups) are durable when it resolves. */
  async flush(): Promise<void> {
    await Promise.all([this.data.flush(), this.peer.flush()]);
  }

  writeFull(name: string, data: Uint8Array): Promise<void> {
    return this.peer.writeFull(name, data);
  }
  copy(src: string, dst: string, options?: B.ReadOptions): Promise<void> {
    return this.peer.copy(src, dst, options);
  }
  delete(name: string): Promise<boolean> {
    return this.peer.delete(name);
  }
  info(name: string): Promise<B.ObjectInfo | null> {
    return this.peer.info(name);
  }
  exists(name: string): Promise<boolean> {
    return this.peer.exists(name);
  }
  list(prefix?: string): AsyncIterable<string> {
    return this.peer.list(prefix);
  }
  acquire(name: string, options?: B.AcquireOptions): Promise<B.AcquireResult> {
    return this.peer.acquire(name, options);
  }
  lockInfo(name: string): Promise<B.LockRecord | null> {
    return this.peer.lockInfo(name);
  }
  renew(name: string, options?: B.RenewOptions): Promise<B.LockRecord> {
    return this.peer.renew(name, options);
  }
  breakLock(name: string, options?: B.BreakOptions): Promise<B.BreakReport> {
    return this.peer.breakLock(name, options);
  }
  requestRelease(name: string, options?: B.RequestReleaseOptions): Promise<B.LockRecord | null> {
    return this.peer.requestRelease(name, options);
  }
  release(name: string, options?: B.ReleaseOptions): Promise<void> {
    return this.peer.release(name, options);
  }
  lockOwner(name: string): Promise<string | null> {
    return this.peer.lockOwner(name);
  }
  hash(name: string, size: number): Promise<string> {
    if (!this.peer.hash) return Promise.reject(new ArchipelagoError('ENOTSUP', 'blockerb cannot hash'));
    return this.peer.hash(name, size);
  }
  space(): Promise<B.StorageSpace> {
    const d = this.data;
    if ('space' in d) return (d as FileBlocker).space();
    if (this.peer.space) return this.peer.space();
    return Promise.reject(new ArchipelagoError('ENOTSUP', 'blockerb cannot tell its space'));
  }

  /** Closes the endpoint's own blocker (the SegmentBlocker is the runtime's to disconnect). */
  close(): Promise<void> {
    return this.data.close();
  }
}

/**
 * Opens the endpoint's own blocker of the `[blockerb]` store (same options as the blockerb peer:
 * directory, sync, O_DIRECT, fd cache); files it creates get blockerb's umask, as the peer's do.
 */
export async function openDirectData(
  loaded: LoadedConfig,
  peer: B.Blocker,
  maps: ClientRegistrar,
  client: { connectionTag?: string } = {},
): Promise<DirectDataBlocker> {
  const o = blockerOptions(loaded, 'blockerb');
  if (o.type !== 'file_blocker') {
    // Write-through (`sync: 'always'`): a write is answered once RADOS committed it, so a write
    // the OSDs refused to a fenced client fails at the write (and is retried on a new client),
    // never acknowledged and lost (write-back would report it only at the next flush).
    const wt = { ...o, sync: 'always' as const };
    const data = (await openBlocker(
      wt,
      null,
      { role: 'blockerb', file: loaded.path },
      client,
    )) as RadosBlocker;
    // A fenced client is replaced by a new one (a new tag: a new librados client and address).
    const reopen = async () =>
      (await openBlocker(
        wt,
        null,
        { role: 'blockerb', file: loaded.path },
        { connectionTag: `${client.connectionTag ?? 'endpoint data'} r${randomHex()}` },
      )) as RadosBlocker;
    return new RadosDirectDataBlocker(data, peer, maps, reopen);
  }
  process.umask(umaskOf(loaded, 'blockerb'));
  const data = (await openBlocker(o, null, { role: 'blockerb', file: loaded.path })) as FileBlocker;
  return new DirectDataBlocker(data, peer, maps);
}

/**
 * The direct data path on RADOS: the endpoint's own RadosBlocker of `[blockerb]` writes data
 * objects only while its client address is registered in the lock record of every volume it has
 * open (`SegmentMapper.addClient` → mapperd → blockerm, the record's `clients`), so that every
 * break and take-over of those locks blocklists it as well as blockerb's and blockerm's clients:
 * the OSDs refuse its later writes, also when it was stopped across the break (no timing
 * assumption, as for the rest of RADOS).
 *
 * When: a registration counts for the SegmentMapper's `mapEpoch` it started and ended in. While
 * the epoch stays put, every mapping came from one lease of mapperd's, and mapperd releases a lock
 * (which drops the list with the record) only after recalling that lease (the epoch moves), so
 * the record that names the client is the one a breaker must rewrite. A write whose epoch has no
 * registration goes to blockerb across the segment (today's path) and starts one; reads need no
 * fencing and always go direct.
 */
export class RadosDirectDataBlocker extends DirectDataBlocker {
  /** The map epoch the last registration was confirmed in (-1: none yet). */
  private registeredAt = -1;
  private registering: Promise<void> | null = null;
  /** Writes sent to blockerb while no registration was current; the last registration error. */
  readonly fencing = {
    segmentWrites: 0,
    registrations: 0,
    lastError: null as Error | null,
    /** Clients replaced after the cluster fenced them (a new client registered: `reconnect`). */
    reconnects: 0,
    /** Reconnects mapperd refused (the volume's lock is not its own any more): the I/O failed fenced. */
    refused: 0,
  };
  /** The volumes this client's address was registered in (what `retire` takes it off). */
  private readonly registeredIn = new Set<string>();
  private retired: Promise<void> | null = null;
  /** The reconnect under way (one per volume at a time; the I/Os that fail meanwhile wait for it). */
  private reconnecting: Promise<void> | null = null;
  /** A new client opened by a reconnect mapperd refused: the next attempt registers it. */
  private spare: RadosBlocker | null = null;

  constructor(
    override data: RadosBlocker,
    peer: B.Blocker,
    private readonly registrar: ClientRegistrar,
    /** Opens a new librados client of the store (a new connectionTag); absent: no reconnect. */
    private readonly reopen?: () => Promise<RadosBlocker>,
  ) {
    super(data, peer, registrar);
  }

  /** True when a write now may go direct (the registration is of the current map epoch). */
  get registered(): boolean {
    return this.registeredAt !== -1 && this.registeredAt === this.registrar.mapEpoch;
  }

  override read(name: string, offset: number, length: number, options?: B.ReadOptions): Promise<Buffer> {
    if (this.reconnecting !== null) return this.waitReconnect(() => this.read(name, offset, length, options));
    const on = this.data;
    return super
      .read(name, offset, length, options)
      .catch((e: unknown) => this.afterFenced(on, e, () => super.read(name, offset, length, options)));
  }

  override readInto(name: string, offset: number, target: Buffer): Promise<void> {
    if (this.reconnecting !== null) return this.waitReconnect(() => this.readInto(name, offset, target));
    const on = this.data;
    return super
      .readInto(name, offset, target)
      .catch((e: unknown) => this.afterFenced(on, e, () => super.readInto(name, offset, target)));
  }

  override write(name: string, offset: number, data: Uint8Array, options?: B.WriteOptions): Promise<void> {
    // A fenced client's writes wait for its replacement (they never fall back to blockerb).
    if (this.reconnecting !== null) return this.waitReconnect(() => this.write(name, offset, data, options));
    if (this.registered) {
      const on = this.data;
      // A write the OSDs refused because the cluster blocklisted this client did not apply (the
      // blocklist is checked before the op runs, and a refused op changes nothing), so it is sent
      // once more, on the new client, once mapperd registered that client in the volume lock
      // (which it does only while it holds the lock: another holder's writes cannot be undone by it).
      return super
        .write(name, offset, data, options)
        .catch((e: unknown) => this.afterFenced(on, e, () => this.retryWrite(name, offset, data, options)));
    }
    this.register();
    this.fencing.segmentWrites++;
    return this.peer.write(name, offset, data, options);
  }

  /**
   * With `sync = flush` (write-back) the writes a fenced client acknowledged are lost, and the
   * flush reports it (EIO, fenced): it still does, with the client replaced for the I/O after it.
   */
  override flush(): Promise<void> {
    const on = this.data;
    return super.flush().catch((e: unknown) => {
      if (!isFencedError(e) || this.reopen === undefined || this.retired !== null) throw e;
      return this.reconnect(on).then(
        () => {
          throw e;
        },
        () => {
          throw e;
        },
      );
    });
  }

  /** The one retry of a write refused to a fenced client: direct when the new registration is current. */
  private retryWrite(
    name: string,
    offset: number,
    data: Uint8Array,
    options?: B.WriteOptions,
  ): Promise<void> {
    if (this.registered) return super.write(name, offset, data, options);
    this.register();
    this.fencing.segmentWrites++;
    return this.peer.write(name, offset, data, options);
  }

  /** An I/O that came during a reconnect: runs once it is done, or fails fenced when it was refused. */
  private waitReconnect<T>(run: () => Promise<T>): Promise<T> {
    return (this.reconnecting as Promise<void>).then(run, (refusal: unknown) => {
      throw new ArchipelagoError(
        'EIO',
        `the endpoint's RADOS client was fenced (blocklisted) and a new client was not let in: ${String((refusal as Error)?.message ?? refusal)}`,
        { cause: refusal, details: { fenced: true } },
      );
    });
  }

  /**
   * An I/O on client `on` failed with `e`: when the cluster fenced `on`, replaces it (`reconnect`)
   * and runs `retry` once on the new client; otherwise, or when the reconnect was refused, rejects
   * with `e` (a fenced I/O fails with the fenced error).
   */
  private afterFenced<T>(on: RadosBlocker, e: unknown, retry: () => Promise<T>): Promise<T> {
    if (!isFencedError(e) || this.reopen === undefined || this.retired !== null) return Promise.reject(e);
    return this.reconnect(on).then(retry, (refusal: unknown) => {
      const err = e as ArchipelagoError;
      throw new ArchipelagoError(
        err.code,
        `${err.message}; a new client was not let in: ${String((refusal as Error)?.message ?? refusal)}`,
        {
          cause: e,
          details: { ...err.details, fenced: true },
        },
      );
    });
  }

  /**
   * Replaces client `failed`, which the cluster fenced: opens a new librados client (a new
   * connectionTag, so a new address), registers it through mapperd in the lock of every open
   * volume (ADD_CLIENT: mapperd takes it only while it holds the volume's lock, blockerm only
   * while the record is mapperd's: when another host broke or took the lock, it is refused and
   * the volume stays fenced), then writes on it. One at a time: I/Os that fail meanwhile, and new
   * ones, wait for it. Resolves at once when `failed` was already replaced.
   */
  reconnect(failed: RadosBlocker = this.data): Promise<void> {
    if (this.reconnecting !== null) return this.reconnecting;
    if (failed !== this.data) return Promise.resolve();
    const reopen = this.reopen;
    if (reopen === undefined || this.retired !== null)
      return Promise.reject(new ArchipelagoError('EIO', 'the endpoint RADOS client cannot reconnect'));
    const run = async () => {
      await this.registering;
      const epoch = this.registrar.mapEpoch;
      const next = this.spare ?? (await reopen());
      this.spare = next;
      const addr = next.clientAddr;
      if (addr === null || addr === '')
        throw new ArchipelagoError('EIO', 'the new endpoint RADOS client has no address');
      const volumes = this.registrar.openVolumes();
      try {
        for (const v of volumes) await this.registrar.addClient(v, addr);
      } catch (e) {
        this.fencing.refused++;
        this.fencing.lastError = e instanceof Error ? e : new Error(String(e));
        throw e;
      }
      this.spare = null;
      const old = this.data;
      const oldAddr = old.clientAddr;
      this.data = next;
      this.registeredIn.clear();
      for (const v of volumes) this.registeredIn.add(v);
      this.registeredAt = volumes.length > 0 && this.registrar.mapEpoch === epoch ? epoch : -1;
      this.fencing.reconnects++;
      // The fenced client: closed (its held writes, if any, were refused and their flush
      // reported it), and its address taken off the records it may still be in.
      void old.close().catch(() => {});
      const remove = this.registrar.removeClient?.bind(this.registrar);
      if (remove && oldAddr !== null && oldAddr !== '')
        for (const v of volumes) void remove(v, oldAddr).catch(() => {});
    };
    const p = run().finally(() => {
      this.reconnecting = null;
    });
    this.reconnecting = p;
    return p;
  }

  /** Registers this client in the lock of every open volume (not awaited by the data path). */
  register(): Promise<void> {
    if (this.registering !== null) return this.registering;
    if (this.retired !== null) return Promise.resolve(); // retiring: it registers nowhere again
    const epoch = this.registrar.mapEpoch;
    const addr = this.data.clientAddr;
    const run = async () => {
      if (addr === null || addr === '')
        throw new ArchipelagoError('EIO', 'the endpoint RADOS client has no address');
      const volumes = this.registrar.openVolumes();
      for (const v of volumes) {
        await this.registrar.addClient(v, addr);
        this.registeredIn.add(v);
      }
      this.fencing.registrations++;
      if (volumes.length > 0 && this.registrar.mapEpoch === epoch) this.registeredAt = epoch;
    };
    const p = run()
      .catch((e: unknown) => {
        this.fencing.lastError = e instanceof Error ? e : new Error(String(e));
      })
      .finally(() => {
        this.registering = null;
      });
    this.registering = p;
    return p;
  }

  /**
   * The end of this client (an unmap): makes its writes durable, shuts the client down (nothing
   * it sent can land later), then takes its address off the lock record of every volume it was
   * registered in, where the record stays held (another client of mapperd has the volume open, or
   * a host hold is restored): the list does not grow with every map, and a later break does not
   * blocklist an address that is no longer ours. Every write after this goes to blockerb (the
   * client has no address left to register). Idempotent.
   */
  retire(): Promise<void> {
    this.retired ??= (async () => {
      await this.registering;
      await this.reconnecting?.catch(() => {});
      const spare = this.spare;
      this.spare = null;
      await spare?.close().catch(() => {});
      const addr = this.data.clientAddr;
      this.registeredAt = -1;
      try {
        await this.data.flush();
      } finally {
        await this.data.close();
      }
      const remove = this.registrar.removeClient?.bind(this.registrar);
      if (addr === null || addr === '' || remove === undefined) return;
      for (const v of this.registeredIn) await remove(v, addr);
      this.registeredIn.clear();
    })();
    return this.retired;
  }

  /** Closes the endpoint's own client (and a new one a refused reconnect left). */
  override async close(): Promise<void> {
    await this.reconnecting?.catch(() => {});
    const spare = this.spare;
    this.spare = null;
    await Promise.all([super.close(), spare?.close().catch(() => {})]);
  }
}
