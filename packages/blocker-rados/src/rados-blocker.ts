/**
 * The RADOS blocker (reference §4.4): objects and locks in one Ceph pool, through our own
 * librados binding. Object I/O uses rados_aio_* (settled on librados' threads, delivered to the
 * event loop); lock calls, watch/notify and listing run on libuv worker threads. Nothing blocks
 * the event loop.
 *
 * Locks: `<name>_lock` carries the exclusive cls_lock lock "RadosLock" and the lock's record
 * (holder.ts) in its xattr `archipelago.holder`, changed together by compound ops guarded by a
 * compare of the record (rados-locks.ts). A process hold has a lease the OSD enforces (the cls
 * lock's duration; `renew` extends it with LOCK_FLAG_MUST_RENEW, which fails once it ran out); a
 * host hold has none. The cookie is `<identity>#<random>`, unique per blocker instance, and the
 * description names the identity, host and pid, so `rados -p <pool> lock info <name>_lock
 * RadosLock` shows who holds it. Fencing blocklists the holder's client address
 * (rados_blocklist_add, as `rbd` does before breaking an exclusive lock); a blocklisted client's
 * calls fail with EIO and `details.fenced`. Waiting acquires watch the lock object and retry when
 * a release notifies them; a bounded re-check timer is the safety net for a lost notify (e.g. a
 * releaser that crashed). A release request (the cooperative hand-over) is the lock object's xattr
 * `archipelago.release`, set by an op guarded by the holder's record and dropped by the op that
 * takes or frees the lock; the requester then notifies the lock object, and `watchRelease` (the
 * holder's watch on it) calls its listener; the holder's renewal reports it in any case.
 *
 * Durability: by default (`sync: 'always'`) a write resolves once RADOS has committed it. With
 * `sync: 'flush'` (write-back, as librbd's default cache policy "writearound") a write resolves
 * once librados has it (librados copies the bytes at submission, so the caller may reuse its
 * buffer), at most `maxDirtyBytes` uncommitted at a time; `flush()` waits for them and reports a
 * failed one; a `durable` write (NBD FUA) still resolves on commit. Every other call on an object
 * first waits for its acknowledged writes, so it sees them (see write-back.ts).
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants, hostname } from 'node:os';
import {
  AbstractBlocker,
  type AcquireOptions,
  type AcquireResult,
  checkName,
  closedError,
  deadHolder,
  describeHolder,
  LOCK_SUFFIX,
  type LockProcess,
  type LockRecord,
  type LockSession,
  lockLostError,
  missingObjectError,
  missingSourceError,
  notLockedError,
  type ObjectInfo,
  type ReleaseRequest,
  resolveIdentity,
  sameHost,
  sameProcess,
} from '@archipelago/blocker';
import { ArchipelagoError } from '@archipelago/libxseg';
import type { ClsLocker } from './cls-lock.js';
import { acquireConnection, type Connection, isOwnAddress } from './connection.js';
import { EBLOCKLISTED, errnoOf, fromRadosError } from './errors.js';
import { loadBinding, type NativePool } from './native.js';
import {
  askRelease,
  breakLocker,
  encodeRecord,
  type Hold,
  isReleaseRequest,
  type LockState,
  NOTIFY_RELEASE_REQUEST,
  NOTIFY_RELEASED,
  readLock,
  remove,
  renew,
  rewrite,
  type StoredRecord,
  type Swap,
  statusOf,
  take,
} from './rados-locks.js';
import { WriteBack } from './write-back.js';

const LIST_BATCH = 1000;
/** How long a notify waits for the watchers' acks (a dead watcher's until its watch times out). */
const NOTIFY_TIMEOUT_MS = 2000;
const E = constants.errno;
const MiB = 1024 * 1024;
/** Default `maxDirtyBytes`: librbd's rbd_cache_max_dirty. */
export const DEFAULT_MAX_DIRTY_BYTES = 24 * MiB;
/**
 * Largest `maxDirtyBytes`: well below the bytes librados itself lets a client have in flight
 * (objecter_inflight_op_bytes, 100 MiB), beyond which rados_aio_write blocks the calling thread,
 * here the event loop.
 */
export const MAX_DIRTY_BYTES_LIMIT = 64 * MiB;
/**
 * Write-back writes in flight per blocker: a quarter of librados' limit of ops in flight per
 * client (objecter_inflight_ops, 1024; beyond it rados_aio_write blocks the event loop), which the
 * blockers of a process share with each other and with their reads.
 */
export const MAX_DIRTY_WRITES = 256;
/** Longest single write librados takes (rados_aio_write refuses more than UINT_MAX / 2 with E2BIG). */
const MAX_WRITE = 2 ** 31 - 1;

export interface RadosBlockerOptions {
  /** The pool holding the objects (must exist). */
  pool: string;
  /** RADOS namespace inside the pool (default: none). Objects and locks live in it. */
  namespace?: string;
  /** Path of ceph.conf; default: librados' search (CEPH_CONF, /etc/ceph/ceph.conf, ~/.ceph/...). */
  cephConf?: string;
  /** cephx client id, without "client.". Default "admin". */
  cephxId?: string;
  /** Keyring path, when ceph.conf does not name one. */
  keyring?: string;
  /** Lock owner identity, `<hostname>_<instance>`. Default `${os.hostname()}_embedded`. */
  identity?: string;
  /** Connecting gives up after this long with ETIMEDOUT. Default 10000. */
  connectTimeoutMs?: number;
  /** OSD operations give up after this long with ETIMEDOUT; 0 (default) = wait for the cluster. */
  opTimeoutMs?: number;
  /** Default timeout of a waiting acquire, in ms. Default 30000. */
  lockTimeoutMs?: number;
  /** A waiting acquire re-checks the lock this often even without a notify, in ms. Default 2000. */
  lockRecheckMs?: number;
  /**
   * Lease of a process hold when the caller names none, ms (default 15000; 0: none). The OSD drops
   * a lock whose holder did not renew it within its lease.
   */
  leaseMs?: number;
  /**
   * Blockers of a process with the same connection options share one librados client (one
   * `rados_t`); a `connectionTag` gives this blocker the client of that tag instead, shared only
   * with blockers of the same options and tag. Ceph fences a client, not a volume: a process
   * serving several volumes (the shared `vlmc map` endpoint) tags each volume's blockers with a
   * tag of their own, so that a break of one volume's lock blocklists only that volume's client.
   * Default: none.
   */
  connectionTag?: string;
  /** The process this blocker holds locks for (tests: a process "of another host"). Default: this one. */
  process?: LockProcess;
  /**
   * How long a client this blocker fences stays blocklisted, seconds; 0 (default): the cluster's
   * `mon_osd_blocklist_default_expire` (an hour).
   */
  blocklistExpireSeconds?: number;
  /**
   * `always` (default): a write resolves once RADOS has committed it. `flush`: write-back (as
   * librbd's default cache, writearound): a write resolves once librados has it, and is durable
   * once the next flush() resolves, or at once with `{ durable: true }` (NBD FUA). flush() rejects
   * when such a write failed. writeFull, copy and hash are always durable.
   */
  sync?: 'always' | 'flush';
  /**
   * `sync: 'flush'`: at most this many bytes of acknowledged writes not yet committed; a write
   * beyond it waits (and resolves only then). Default 24 MiB (librbd's rbd_cache_max_dirty),
   * 1 byte .. 64 MiB.
   */
  maxDirtyBytes?: number;
}

/** The native pool handle and connection, kept out of sight of users and JSON. */
const NATIVE = Symbol('archipelago.rados.native');

interface NativeState {
  conn: Connection;
  pool: NativePool;
  /** This client's entity name, `client.<global id>`. */
  client: string;
  /** This client's address (rados_getaddrs): what another blocker blocklists to fence it. */
  addr: string;
}

/**
 * The lock object's state a record was read from, kept on the record (not enumerable: records
 * compare and serialize as the contract's) for the compare-and-swap of `_replace` / `_unlock`.
 */
const STATE = Symbol('archipelago.rados.lockState');

/** One acquire's note of a stale holder it fenced and took the lock from (see `acquire`). */
interface TakeOver {
  previous: LockRecord | null;
  why: string | null;
}

/**
 * The RADOS blocker. Arguments, close() and the lock logic are AbstractBlocker's; this class is
 * the store (its `_read`, `_write`, ...), the cls_lock lock calls and the watch/notify wake-ups
 * of waiting acquires.
 */
export class RadosBlocker extends AbstractBlocker {
  readonly pool: string;
  readonly namespace: string;
  readonly cephConf: string | undefined;
  readonly cephxId: string;
  /** A waiting acquire re-checks the lock this often without a notify (the base's lockPollMs). */
  readonly lockRecheckMs: number;
  /** This instance's lock cookie: `<identity>#<random hex>`. */
  readonly cookie: string;
  /** Seconds a client this blocker fences stays blocklisted (0: the cluster's default). */
  readonly blocklistExpireSeconds: number;
  readonly sync: 'always' | 'flush';
  /** `sync: 'flush'`: the most bytes acknowledged and not yet committed. */
  readonly maxDirtyBytes: number;
  /** The tag of this blocker's librados client (`connectionTag`), or null: the shared one. */
  readonly connectionTag: string | null;

  private [NATIVE]: NativeState | null = null;
  private readonly ready: Promise<NativeState>;
  private readonly notifies = new Set<Promise<unknown>>();
  /** Write-back state (`sync: 'flush'`), shared with withIdentity views; null for `always`. */
  private readonly writeBack: WriteBack | null;
  /** Client addresses this blocker blocklisted, and when (one blocklist per holder, not per lock). */
  private readonly fencedAt = new Map<string, number>();
  /** Set by `acquire` for the `_lockSession` it starts (synchronously) in the base. */
  private takeOver: TakeOver | null = null;
  /**
   * `<cookie> <lock>` → the release request the lock object showed when a renewal of ours
   * succeeded (see `_releaseRequest`); shared with withIdentity views (their cookies differ).
   */
  private readonly renewedAsks = new Map<string, ReleaseRequest | null>();
  /** The stop functions of the live `watchRelease` watches (close() stops them). */
  private readonly releaseWatches = new Set<() => Promise<void>>();

  /**
   * Starts connecting at once; calls wait for the connection. Prefer `RadosBlocker.open()`, which
   * resolves only when connected (so a bad cluster fails there, within `connectTimeoutMs`).
   */
  constructor(opts: RadosBlockerOptions) {
    loadBinding(); // throws "RADOS support was not built: install librados-dev and rebuild"
    if (typeof opts?.pool !== 'string' || opts.pool === '')
      throw new TypeError('RadosBlocker: "pool" must be a pool name');
    if (
      opts.namespace !== undefined &&
      (typeof opts.namespace !== 'string' || !/^[A-Za-z0-9._-]{0,64}$/.test(opts.namespace))
    ) {
      throw new TypeError('RadosBlocker: "namespace" must be 0..64 characters from [A-Za-z0-9._-]');
    }
    if (opts.cephConf !== undefined && (typeof opts.cephConf !== 'string' || opts.cephConf === '')) {
      throw new TypeError('RadosBlocker: "cephConf" must be a path');
    }
    const cephxId = opts.cephxId ?? 'admin';
    if (typeof cephxId !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(cephxId)) {
      throw new TypeError('RadosBlocker: "cephxId" must be a client id like "admin" (without "client.")');
    }
    if (opts.keyring !== undefined && (typeof opts.keyring !== 'string' || opts.keyring === '')) {
      throw new TypeError('RadosBlocker: "keyring" must be a path');
    }
    if (
      opts.connectionTag !== undefined &&
      (typeof opts.connectionTag !== 'string' || opts.connectionTag === '')
    ) {
      throw new TypeError('RadosBlocker: "connectionTag" must be a non-empty string');
    }
    const identity = resolveIdentity('RadosBlocker', opts.identity, hostname());
    const connectTimeoutMs = opts.connectTimeoutMs ?? 10_000;
    const opTimeoutMs = opts.opTimeoutMs ?? 0;
    const lockTimeoutMs = opts.lockTimeoutMs ?? 30_000;
    const lockRecheckMs = opts.lockRecheckMs ?? 2000;
    const leaseMs = opts.leaseMs ?? 15_000;
    const blocklistExpireSeconds = opts.blocklistExpireSeconds ?? 0;
    for (const [k, v, min] of [
      ['connectTimeoutMs', connectTimeoutMs, 1],
      ['opTimeoutMs', opTimeoutMs, 0],
      ['lockTimeoutMs', lockTimeoutMs, 0],
      ['lockRecheckMs', lockRecheckMs, 1],
      ['leaseMs', leaseMs, 0],
      ['blocklistExpireSeconds', blocklistExpireSeconds, 0],
    ] as const) {
      if (typeof v !== 'number' || !Number.isFinite(v) || v < min)
        throw new RangeError(`RadosBlocker: "${k}" must be >= ${min}`);
    }
    if (opts.sync !== undefined && opts.sync !== 'always' && opts.sync !== 'flush') {
      throw new TypeError('RadosBlocker: "sync" must be "always" or "flush"');
    }
    const maxDirtyBytes = opts.maxDirtyBytes ?? DEFAULT_MAX_DIRTY_BYTES;
    if (!Number.isSafeInteger(maxDirtyBytes) || maxDirtyBytes < 1 || maxDirtyBytes > MAX_DIRTY_BYTES_LIMIT) {
      throw new RangeError(
        `RadosBlocker: "maxDirtyBytes" must be an integer from 1 to ${MAX_DIRTY_BYTES_LIMIT} (64 MiB), got ${String(opts.maxDirtyBytes)}`,
      );
    }
    if (!Number.isSafeInteger(leaseMs) || !Number.isSafeInteger(blocklistExpireSeconds))
      throw new RangeError('RadosBlocker: "leaseMs" and "blocklistExpireSeconds" must be integers');
    super({
      kind: 'rados',
      identity,
      lockTimeoutMs,
      lockPollMs: lockRecheckMs,
      leaseMs,
      ...(opts.process ? { process: opts.process } : {}),
    });
    this.blocklistExpireSeconds = blocklistExpireSeconds;
    this.sync = opts.sync ?? 'always';
    this.maxDirtyBytes = maxDirtyBytes;
    this.connectionTag = opts.connectionTag ?? null;
    this.writeBack =
      this.sync === 'flush'
        ? new WriteBack(maxDirtyBytes, MAX_DIRTY_WRITES, {
            // A batch is held only behind a write already submitted, so the pool is open.
            send: (name, bufs, offsets) => {
              const native = this[NATIVE];
              if (native === null) return Promise.reject(closedError());
              return native.pool.writeExtents(name, bufs, offsets);
            },
            error: (e, name) => this.fail(e, `write ${name}`, { name }),
          })
        : null;
    this.pool = opts.pool;
    this.namespace = opts.namespace ?? '';
    this.cephConf = opts.cephConf;
    this.cephxId = cephxId;
    this.lockRecheckMs = lockRecheckMs;
    this.cookie = `${identity}#${randomBytes(8).toString('hex')}`;
    this.ready = (async () => {
      const conn = await acquireConnection({
        cephConf: opts.cephConf,
        cephxId,
        keyring: opts.keyring,
        connectTimeoutMs,
        opTimeoutMs,
        ...(opts.connectionTag !== undefined ? { tag: opts.connectionTag } : {}),
      });
      try {
        const pool = await conn.cluster.openPool(opts.pool, opts.namespace);
        const client = conn.cluster.instanceId() ?? 'client.?';
        this[NATIVE] = { conn, pool, client, addr: conn.cluster.addrs() ?? '' };
        return this[NATIVE];
      } catch (e) {
        await conn.release().catch(() => {});
        if (errnoOf(e) === E.ENOENT) {
          throw new ArchipelagoError(
            'EINVAL_CONFIG',
            `the Ceph pool "${opts.pool}" does not exist: create it or fix "pool"`,
            {
              cause: e,
              details: { pool: opts.pool },
            },
          );
        }
        throw fromRadosError(e, `open pool ${opts.pool}`);
      }
    })();
    this.ready.catch(() => {}); // reported by every call (and by open())
  }

  /** Connects and opens the pool; rejects (ETIMEDOUT, EINVAL_CONFIG, ...) when that fails. */
  static async open(opts: RadosBlockerOptions): Promise<RadosBlocker> {
    const b = new RadosBlocker(opts);
    try {
      await b.ready;
    } catch (e) {
      await b.close().catch(() => {});
      throw e;
    }
    return b;
  }

  /**
   * A view of this blocker whose locks belong to `identity`: the same connection, pool context,
   * calls in flight and lifetime, with its own cookie `<identity>#<this blocker's random>` and
   * description. A server that takes locks on behalf of many clients (the blocker daemon) keeps one
   * view per client identity instead of a pool context each. Closing a view does nothing; closing
   * this blocker closes its views (their calls then fail with ECLOSED).
   */
  withIdentity(identity: string): RadosBlocker {
    const id = resolveIdentity('RadosBlocker', identity, hostname());
    if (id === this.identity) return this;
    const tag = this.cookie.slice(this.cookie.lastIndexOf('#'));
    // Everything else (native state, the base's call gate and sleepers) is read through the
    // prototype: this blocker's.
    return Object.create(this, {
      identity: { value: id, enumerable: true },
      cookie: { value: `${id}${tag}`, enumerable: true },
      close: { value: async () => {} },
    }) as RadosBlocker;
  }

  /** librados client name of this blocker's connection (what `rados lock info` lists), once connected. */
  get clientName(): string | null {
    return this[NATIVE]?.client ?? null;
  }

  /** This blocker's client address (what fencing it blocklists, what its lock records say), once connected. */
  get clientAddr(): string | null {
    return this[NATIVE]?.addr ?? null;
  }

  // ------------------------------------------------------------------ objects

  // read, readInto and write are the data path (every NBD request is one of them): they take the
  // native pool directly once connected, without a closure or an await of their own.

  protected async _read(name: string, offset: number, length: number, missingOk: boolean): Promise<Buffer> {
    const pool = this[NATIVE]?.pool ?? (await this.ready).pool;
    const pending = this.writeBack?.pendingFor(name);
    if (pending) await pending;
    try {
      if (length === 0) {
        await pool.stat(name);
        return Buffer.alloc(0);
      }
      // Straight into the Buffer we return: librados copies the reply once, into `out`.
      const out = Buffer.allocUnsafe(length);
      const got = await pool.read(name, out, offset);
      if (got < length) out.fill(0, got);
      return out;
    } catch (e) {
      if (errnoOf(e) === E.ENOENT) {
        if (missingOk) return Buffer.alloc(length);
        throw missingObjectError(name, e);
      }
      throw this.fail(e, `read ${name}`, { name });
    }
  }

  /**
   * Contract `readInto`: a streaming reader (the HTTP gateway, bench/rados) reuses a few warm
   * buffers instead of faulting in fresh memory for every read, which is what large reads cost most.
   */
  protected override async _readInto(name: string, offset: number, target: Buffer): Promise<void> {
    if (target.length === 0) return;
    const pool = this[NATIVE]?.pool ?? (await this.ready).pool;
    const pending = this.writeBack?.pendingFor(name);
    if (pending) await pending;
    try {
      const got = await pool.read(name, target, offset);
      if (got < target.length) target.fill(0, got);
    } catch (e) {
      if (errnoOf(e) === E.ENOENT) {
        target.fill(0);
        return;
      }
      throw this.fail(e, `read ${name}`, { name });
    }
  }

  /**
   * Resolves on commit; with `sync: 'flush'` (unless `durable`) once librados has the write and it
   * fits under `maxDirtyBytes` (see writeBehind).
   */
  protected async _write(name: string, offset: number, data: Uint8Array, durable: boolean): Promise<void> {
    const pool = this[NATIVE]?.pool ?? (await this.ready).pool;
    if (data.byteLength > MAX_WRITE) {
      throw new ArchipelagoError(
        'EINVAL',
        `write ${name}: ${data.byteLength} bytes is more than librados takes in one write (${MAX_WRITE})`,
        { details: { name } },
      );
    }
    const wb = this.writeBack;
    if (wb !== null && !durable) {
      const room = wb.admit(data.byteLength);
      if (room !== null) await room;
      this.writeBehind(wb, pool, name, offset, data);
      return;
    }
    wb?.sendHeld(name); // a durable write goes out after the writes held for its object
    try {
      if (data.byteLength === 0) await pool.create(name, false);
      else await pool.write(name, data, offset);
    } catch (e) {
      throw this.fail(e, `write ${name}`, { name });
    }
  }

  /** Always durable when resolved (also with `sync: 'flush'`: the mapper and the gateway rely on it). */
  protected async _writeFull(name: string, data: Uint8Array): Promise<void> {
    const pool = await this.connected();
    await this.settled(name);
    try {
      await pool.writeFull(name, data);
    } catch (e) {
      throw this.fail(e, `writeFull ${name}`, { name });
    }
  }

  /**
   * Submits a write-back write that `wb` admitted (or holds it behind a write in flight to the
   * same object, to go out with others as one op), and leaves its outcome to flush(). librados
   * copies the bytes into its own buffer at submission (rados_aio_write appends them to a
   * bufferlist) and `hold` copies them, so the caller may reuse `data` as soon as this returns.
   */
  private writeBehind(wb: WriteBack, pool: NativePool, name: string, offset: number, data: Uint8Array): void {
    const n = data.byteLength;
    if (wb.hold(name, offset, data)) return;
    wb.sendHeld(name); // anything held for this object goes first
    let op: Promise<void>;
    try {
      op = n === 0 ? pool.create(name, false) : pool.write(name, data, offset);
    } catch (e) {
      wb.cancel(n);
      throw this.fail(e, `write ${name}`, { name });
    }
    wb.track(name, n, op, (e) => this.fail(e, `write ${name}`, { name }));
  }

  /** Read the source whole, then write_full the destination (as the original radosd did). */
  protected async _copy(src: string, dst: string, missingOk: boolean): Promise<void> {
    const pool = await this.connected();
    await this.settled(src);
    await this.settled(dst);
    let data: Buffer;
    try {
      const { size } = await pool.stat(src);
      data = Buffer.allocUnsafe(size);
      const got = size > 0 ? await pool.read(src, data, 0) : 0;
      if (got < size) data = data.subarray(0, got);
    } catch (e) {
      if (errnoOf(e) !== E.ENOENT) throw this.fail(e, `copy ${src} to ${dst}`, { name: src });
      if (!missingOk) throw missingSourceError(src, e);
      data = Buffer.alloc(0);
    }
    try {
      await pool.writeFull(dst, data);
    } catch (e) {
      throw this.fail(e, `copy ${src} to ${dst}`, { name: dst });
    }
  }

  protected async _delete(name: string): Promise<boolean> {
    const pool = await this.connected();
    await this.settled(name);
    try {
      await pool.remove(name);
      return true;
    } catch (e) {
      if (errnoOf(e) === E.ENOENT) return false;
      throw this.fail(e, `delete ${name}`, { name });
    }
  }

  protected async _info(name: string): Promise<ObjectInfo | null> {
    const pool = await this.connected();
    await this.settled(name);
    try {
      const st = await pool.stat(name);
      // RADOS keeps whole seconds.
      return { size: st.size, mtime: st.mtime * 1000 };
    } catch (e) {
      if (errnoOf(e) === E.ENOENT) return null;
      throw this.fail(e, `info ${name}`, { name });
    }
  }

  /** Walks the pool (rados_nobjects_list_*) in batches; the base leaves lock objects out. */
  protected async *_list(prefix: string): AsyncIterable<string> {
    const { pool } = await this.ready;
    // Objects created by acknowledged writes are listed: wait until RADOS has them.
    const pending = this.writeBack?.pendingWithPrefix(prefix);
    if (pending) await pending;
    this.assertOpen();
    const id = pool.listOpen();
    try {
      for (;;) {
        this.assertOpen();
        let batch: { names: string[]; done: boolean };
        try {
          batch = await pool.listNext(id, LIST_BATCH, prefix);
        } catch (e) {
          throw this.fail(e, `list ${this.pool}`);
        }
        yield* batch.names;
        if (batch.done) return;
      }
    } finally {
      if (this[NATIVE]) pool.listClose(id);
    }
  }

  /**
   * Reference §2.7: the first `size` bytes (zeros past the end; missing = zeros), trailing zeros
   * stripped, named by SHA-256; stored as that object with an exclusive create (one atomic write
   * op, so a reader never sees a partial object and an existing one is left alone).
   */
  protected async _hash(name: string, size: number): Promise<string> {
    const pool = await this.connected();
    const data = await this._read(name, 0, size, true);
    let end = data.length;
    while (end > 0 && data[end - 1] === 0) end--;
    const body = data.subarray(0, end);
    const h = createHash('sha256').update(body).digest('hex');
    if (end === 0) return h; // the zero block: stored nowhere
    await this.settled(h);
    try {
      await pool.create(h, true, body);
    } catch (e) {
      if (errnoOf(e) !== E.EEXIST) throw this.fail(e, `hash ${name}`, { name, hash: h });
    }
    return h;
  }

  // ------------------------------------------------------------------ locks

  /**
   * The contract's acquire. When the lock's last holder let its lease run out on the OSD without
   * releasing it (stale: it died, hung or was stopped, and may still write), the attempt fences
   * that holder and takes the lock in the backend (the OSD says it is free; the base's rule could
   * not tell a stopped process of this host from a live one); this reports it as `previous` and
   * `tookOver`. The base calls `_lockSession` synchronously from `acquire`, which is how the
   * session finds this call's note.
   */
  override acquire(name: string, options?: AcquireOptions): Promise<AcquireResult> {
    const note: TakeOver = { previous: null, why: null };
    this.takeOver = note;
    let result: Promise<AcquireResult>;
    try {
      result = super.acquire(name, options);
    } finally {
      this.takeOver = null;
    }
    return result.then((r) =>
      note.previous !== null && r.took && r.previous === null
        ? { took: true, previous: note.previous, tookOver: note.why }
        : r,
    );
  }

  /**
   * A waiting acquire watches the lock object and tries again when a release notifies it, or
   * after `lockRecheckMs` (the safety net for a lost notify, e.g. a releaser that crashed). The
   * watch starts after the first failed attempt and is followed at once by a second one, so a
   * release between the first attempt and the watch is not missed.
   */
  protected _lockSession(name: string, _wait: boolean, record: () => LockRecord): LockSession {
    const oid = name + LOCK_SUFFIX;
    const note = this.takeOver;
    let pool: NativePool | null = null;
    let watchId: number | null = null;
    let watched = false;
    let woken = false;
    let wake: (() => void) | null = null;
    return {
      attempt: async () => {
        pool ??= await this.connected();
        woken = false;
        return this.tryLock(pool, name, record, note);
      },
      pause: async (ms) => {
        if (watched && !woken) await this.sleep(Math.min(ms, this.lockRecheckMs), (w) => (wake = w));
        wake = null;
        watched = true;
        if (watchId !== null || pool === null) return;
        try {
          watchId = await pool.watch(oid, (err, payload) => {
            if (err === undefined && isReleaseRequest(payload)) return; // a request frees nothing
            woken = true;
            wake?.();
          });
        } catch (e) {
          if (errnoOf(e) !== E.ENOENT) throw this.fail(e, `acquire ${name}`, { lock: name });
          // the lock object vanished: it is free, the next attempt takes it
        }
      },
      end: async () => {
        if (watchId !== null) await pool?.unwatch(watchId).catch(() => {});
      },
    };
  }

  /**
   * One attempt: takes the lock (null), or returns the record of its holder. A stale lock (its
   * holder's lease ran out on the OSD) is fenced and taken.
   */
  private async tryLock(
    pool: NativePool,
    name: string,
    record: () => LockRecord,
    note: TakeOver | null,
  ): Promise<LockRecord | null> {
    const native = this[NATIVE] ?? (await this.ready);
    let state: LockState | null = null; // what the next take expects (null: no record)
    for (let attempt = 0; attempt < 50; attempt++) {
      let fenced: string | null = null;
      if (state !== null) fenced = await this.fenceStale(name, state);
      const hold = this.hold(native, record());
      if (
        (await this.swap(name, 'acquire', take(pool, name + LOCK_SUFFIX, state?.raw ?? null, hold))) ===
        'done'
      ) {
        const stale = state === null ? null : holderOf(state);
        if (stale !== null && note !== null) {
          const why = deadHolder(stale, this.process) ?? 'its lease ran out on the OSD (it did not renew it)';
          note.previous = stale;
          note.why = fenced === null ? why : `${why}; ${fenced}`;
        }
        return null;
      }
      const now = await this.readState(pool, name);
      const status = statusOf(now);
      if (status === 'held' || status === 'foreign') return holderOf(now);
      state = status === 'stale' ? now : null;
    }
    throw new ArchipelagoError('EIO', `acquire ${name}: the lock kept changing during 50 attempts`, {
      details: { lock: name },
    });
  }

  /** The record of lock `name` (of its stale holder too), or null when it is free. */
  protected async _lockHolder(name: string): Promise<LockRecord | null> {
    return holderOf(await this.readState(await this.connected(), name));
  }

  /**
   * Replaces the record (and the hold) of lock `name` with `next` for this blocker if it still is
   * `expected`: a renewal of our own hold in place (LOCK_FLAG_MUST_RENEW: fails once our lease ran
   * out on the OSD), else breaking the holder's cls lock and taking it, each op guarded by the
   * record. A stale holder of another client is fenced first.
   */
  protected async _replace(name: string, expected: LockRecord, next: LockRecord): Promise<boolean> {
    const pool = await this.connected();
    const native = this[NATIVE] ?? (await this.ready);
    const oid = name + LOCK_SUFFIX;
    const state = await this.stateFor(pool, name, expected);
    if (state === null) return false;
    const cur = holderOf(state) as LockRecord;
    const hold = this.hold(native, next);
    const status = statusOf(state);
    const mine = state.stored?.client === native.client && state.stored.cookie === this.cookie;
    if (mine && status === 'held') return this.renewOwn(pool, name, expected, next, state);
    if (mine && status === 'stale') {
      throw new ArchipelagoError(
        'ELOCKED',
        `lock ${name} was lost: its lease ran out on the OSD before this renewal (${describeHolder(cur)}); stop writing under it`,
        { details: { lock: name, lost: true, holder: describeHolder(cur) } },
      );
    }
    if (status === 'stale') await this.fenceStale(name, state);
    // Another holder's record goes: the clients writing for it (`clients`) are cut off first.
    else await this.fenceClients(name, cur);
    if (
      state.locker !== null &&
      (await this.swap(name, 'break', breakLocker(pool, oid, state.raw, state.locker))) !== 'done'
    )
      return false;
    if ((await this.swap(name, 'acquire', take(pool, oid, state.raw, hold))) !== 'done') return false;
    this.renewedAsks.set(this.askKey(name), null); // taking it dropped any request
    return true;
  }

  /**
   * Frees lock `name` (its cls lock and its record, in one op) if it still is `holder`; a stale
   * holder of another client is fenced first. Notifies the waiters (close() waits for that).
   */
  protected async _unlock(name: string, holder: LockRecord): Promise<boolean> {
    const pool = await this.connected();
    const oid = name + LOCK_SUFFIX;
    const state = await this.stateFor(pool, name, holder);
    if (state === null) return false;
    if (statusOf(state) === 'stale') await this.fenceStale(name, state);
    else if (!this.isMine(state)) await this.fenceClients(name, holderOf(state) as LockRecord);
    if ((await this.swap(name, 'release', remove(pool, oid, state.raw, state.locker))) !== 'done')
      return false;
    this.renewedAsks.delete(this.askKey(name));
    // Wake waiters (every blocker watching <name>_lock); close() waits for this.
    this.notifyLock(pool, oid, NOTIFY_RELEASED);
    return true;
  }

  /** True when `state` is held (or was, if stale) by this blocker's client and cookie. */
  private isMine(state: LockState): boolean {
    const native = this[NATIVE];
    return native !== null && state.stored?.client === native.client && state.stored.cookie === this.cookie;
  }

  /**
   * Renews our own hold of `name` in place with `next`, keeping the record's `clients`. A
   * registration (`addClient`) between the read and the renewal changes the record but not the
   * hold: read again and retry while the lock is still ours and shows `expected`'s holder.
   */
  private async renewOwn(
    pool: NativePool,
    name: string,
    expected: LockRecord,
    next: LockRecord,
    first: LockState,
  ): Promise<boolean> {
    const native = this[NATIVE] ?? (await this.ready);
    const oid = name + LOCK_SUFFIX;
    let state = first;
    for (let attempt = 0; attempt < 50; attempt++) {
      const clients = state.stored?.clients;
      const hold = this.hold(native, clients === undefined ? next : { ...next, clients });
      if ((await this.swap(name, 'renew', renew(pool, oid, state.raw as string, hold))) === 'done') {
        // The op was guarded by the record `state` was read with: the request it showed is ours.
        this.renewedAsks.set(this.askKey(name), state.request);
        return true;
      }
      const now = await this.readState(pool, name);
      const cur = holderOf(now);
      if (statusOf(now) !== 'held' || !this.isMine(now) || cur === null || !sameHolder(cur, expected))
        return false;
      state = now;
    }
    return false;
  }

  /**
   * Registers `addr`, the address of another librados client that writes for the holder of lock
   * `name` (a `vlmc map` endpoint's own data client, writing for mapperd), in the lock's record
   * (`clients`), so that every later break and take-over blocklists it too (as it does the
   * holder's own client), whatever the holder's state. One op guarded by the record as read: a
   * breaker that read the record before it fails its own guarded op, reads again and sees the
   * address. The holder must be `holder` (owner, and process unless null: any process hold of
   * that owner) and hold the lock now (`ENOTLOCKED` when nobody does, `ELOCKED` otherwise); the
   * holder's renewals keep the list. Resolves with the record as written. Idempotent.
   */
  addClient(
    name: string,
    addr: string,
    holder: { owner: string; process?: LockProcess | null },
  ): Promise<LockRecord> {
    return this.changeClients<LockRecord>('addClient', name, addr, holder, (cur, held) => {
      if (cur === null) throw notLockedError(name);
      if (!held) throw lockLostError(name, describeHolder(cur));
      if (cur.clients?.includes(addr)) return { done: cur };
      return { next: { ...cur, clients: [...(cur.clients ?? []), addr] } };
    });
  }

  /**
   * Takes `addr` off the record of lock `name` (`clients`; see `addClient`): a client that stopped
   * writing for the holder (an unmapped volume's endpoint client, shut down first) while the lock
   * stays held, so that the list does not grow with every map and a later break does not
   * blocklist an address that may by then be another client's. Only while `holder` (owner, and
   * process unless null) holds the lock; one op guarded by the record as read. Resolves with the
   * record as written, or null when there was nothing to take off (the lock is free, held by
   * another holder, stale, or does not list `addr`). Idempotent.
   */
  removeClient(
    name: string,
    addr: string,
    holder: { owner: string; process?: LockProcess | null },
  ): Promise<LockRecord | null> {
    return this.changeClients<null>('removeClient', name, addr, holder, (cur, held) => {
      if (cur === null || !held || !cur.clients?.includes(addr)) return { done: null };
      const rest = cur.clients.filter((a) => a !== addr);
      const { clients: _old, ...plain } = cur;
      return { next: rest.length > 0 ? { ...plain, clients: rest } : plain };
    });
  }

  /**
   * `addClient` / `removeClient`: reads the lock, lets `decide` answer (`done`) or name the record
   * to write (`next`, `held` saying whether `holder` holds the lock now), and rewrites it in one op
   * guarded by the record as read, reading again when the lock changed meanwhile.
   */
  private changeClients<T>(
    op: 'addClient' | 'removeClient',
    name: string,
    addr: string,
    holder: { owner: string; process?: LockProcess | null },
    decide: (cur: LockRecord | null, held: boolean) => { done: T } | { next: LockRecord },
  ): Promise<T | LockRecord> {
    const bad =
      typeof addr === 'string' && addr !== '' && !/\s/.test(addr)
        ? null
        : new ArchipelagoError('EINVAL', `${op}: "addr" must be a client address, got ${String(addr)}`);
    return this.counted(name, 'lock name', bad, async () => {
      const pool = await this.connected();
      const oid = name + LOCK_SUFFIX;
      for (let attempt = 0; attempt < 50; attempt++) {
        const state = await this.readState(pool, name);
        const cur = holderOf(state);
        const stored = state.stored;
        const held =
          cur !== null &&
          stored !== null &&
          statusOf(state) === 'held' &&
          cur.owner === holder.owner &&
          (holder.process === undefined ||
            holder.process === null ||
            sameProcess(cur.process, holder.process));
        const d = decide(cur, held);
        if ('done' in d) return d.done;
        if (stored === null) throw lockLostError(name, 'nobody');
        const raw = encodeRecord(d.next, stored.client, stored.cookie);
        const what = op === 'addClient' ? 'register a client of' : 'unregister a client of';
        if ((await this.swap(name, what, rewrite(pool, oid, state.raw as string, raw))) === 'done')
          return d.next;
      }
      throw new ArchipelagoError('EIO', `${op} ${name}: the lock kept changing during 50 attempts`, {
        details: { lock: name },
      });
    });
  }

  // ------------------------------------------------------------------ release requests

  /**
   * Records `req` for the holder of lock `name`: the xattr `archipelago.release` of `<name>_lock`,
   * set by an op guarded by the holder's record, so it is set only while that holder holds the
   * lock (when it renewed meanwhile, tried again; when the lock was freed or changed hands, nothing
   * is asked: a request is for the holder it was made to, and the requester asks again). Then
   * notifies the lock object (not awaited; close() waits for it): the holder's `watchRelease`
   * calls its listener, waiting acquires ignore it.
   */
  protected override async _requestRelease(name: string, req: ReleaseRequest): Promise<void> {
    const pool = await this.connected();
    const oid = name + LOCK_SUFFIX;
    let asked: string | null = null; // the holder asked: its cls_lock client and cookie
    for (let attempt = 0; attempt < 50; attempt++) {
      const state = await this.readState(pool, name);
      const holder = holderKey(state);
      if (holder === null || (asked !== null && holder !== asked)) return; // freed or changed hands
      asked = holder;
      if ((await this.swap(name, 'request release of', askRelease(pool, oid, state.raw, req))) === 'done') {
        this.notifyLock(pool, oid, NOTIFY_RELEASE_REQUEST);
        return;
      }
    }
    throw new ArchipelagoError(
      'EIO',
      `request release of ${name}: the lock kept changing during 50 attempts`,
      {
        details: { lock: name },
      },
    );
  }

  /**
   * The release request pending for the holder of lock `name`. After a renewal of ours (the
   * base's only call) no op at all: the renewal's compound op was guarded by the record read
   * together with the request (one read op, `get_info` + `getxattrs`), so that request is still
   * addressed to us (only taking or freeing the lock drops one, and either changes the record).
   * A request that arrives between that read and the renewal is reported at the next renewal
   * (or at once through `watchRelease`). Otherwise one read op.
   */
  protected override async _releaseRequest(name: string): Promise<ReleaseRequest | null> {
    const key = this.askKey(name);
    const seen = this.renewedAsks.get(key);
    if (seen !== undefined) {
      this.renewedAsks.delete(key);
      return seen;
    }
    return (await this.readState(await this.connected(), name)).request;
  }

  /**
   * Nothing to do: the op that takes the lock and the op that frees it drop the request
   * themselves, atomically with the change of hands. A separate removal after them would be
   * wrong, not just redundant: it could drop a request already addressed to the new holder.
   */
  protected override _clearReleaseRequest(_name: string): Promise<void> {
    return Promise.resolve();
  }

  /**
   * Watches `<name>_lock` (rados_watch2) and calls `listener` on every release request notified
   * to it, whoever sent it (a blocker may hold a lock for other processes, `as`); notifies of
   * releases (every release, this blocker's own included) do not call it. The watch is in place a
   * few ms after this returns; a request made before that is found by one read once it is (and
   * the listener called). A watch the cluster broke (an OSD restart, a lost connection) is set up
   * again the same way, so a request whose notify it missed still calls the listener. No watch
   * when the lock object does not exist (nobody holds the lock: the holder's renewal reports
   * requests). Returns the function that stops watching; close() stops every watch. The watch does
   * not keep the process alive, and no listener call comes after stop or close.
   */
  watchRelease(name: string, listener: () => void): () => void {
    checkName(name, 'lock name');
    this.assertOpen();
    const oid = name + LOCK_SUFFIX;
    let stopped = false;
    let pool: NativePool | null = null;
    let id: number | null = null;
    const live = () => !stopped && !this.closed;
    const unwatch = async () => {
      const w = id;
      id = null;
      if (w !== null) await pool?.unwatch(w).catch(() => {});
    };
    const watch = async (): Promise<void> => {
      try {
        pool ??= await this.connected();
      } catch {
        return; // never connected: every call says so
      }
      while (live()) {
        try {
          id = await pool.watch(oid, onEvent);
          return;
        } catch (e) {
          // No lock object (nobody holds it), or this client was fenced (for good): give up.
          if (!live() || errnoOf(e) === E.ENOENT || errnoOf(e) === EBLOCKLISTED) return;
          await this.sleep(this.lockRecheckMs); // the cluster refused it (a blip): try again
        }
      }
    };
    // Once watching, a request made before the watch was in place has its notify behind it:
    // ask the lock object (one read op) whether one is pending.
    const establish = async () => {
      await watch();
      if (!live() || id === null || pool === null) return;
      const state = await readLock(pool, oid).catch(() => null);
      if (live() && state !== null && state.request !== null && statusOf(state) !== 'free') listener();
    };
    let running: Promise<void> = Promise.resolve();
    const onEvent = (err?: number, payload?: Buffer) => {
      if (!live()) return;
      // A broken watch: drop it and watch again (a notify may have been missed meanwhile).
      if (err !== undefined) running = running.then(unwatch).then(establish);
      else if (isReleaseRequest(payload)) listener();
    };
    running = establish();
    const stop = async () => {
      if (stopped) return;
      stopped = true;
      this.releaseWatches.delete(stop);
      await running.catch(() => {});
      await unwatch();
    };
    this.releaseWatches.add(stop);
    return () => void stop();
  }

  /** The key of `renewedAsks` for lock `name` of this blocker (or view). */
  private askKey(name: string): string {
    return `${this.cookie} ${name}`;
  }

  /** Notifies `oid` with `payload`, not awaited (close() waits for it). */
  private notifyLock(pool: NativePool, oid: string, payload: Buffer): void {
    const n = pool.notify(oid, NOTIFY_TIMEOUT_MS, payload).catch(() => false);
    this.notifies.add(n);
    void n.finally(() => this.notifies.delete(n));
  }

  /**
   * Fences the holder of `holder`: blocklists its client address (rados_blocklist_add, for
   * `blocklistExpireSeconds`), as `rbd` does before it breaks an exclusive lock, so that the OSDs
   * refuse its writes from now on. Null (the base then waits out its lease) when that client is
   * one of this process's own (several identities share one client; a process never fences
   * itself) or its address is unknown; a process of this host that is gone needs nothing. Refuses (throws) when the cephx client may not
   * blocklist: a holder that cannot be fenced keeps its lock.
   */
  protected override _fence(name: string, holder: LockRecord): Promise<string | null> {
    const state = stateOf(holder);
    return this.fence(name, holder, state?.stored?.client ?? state?.locker?.client);
  }

  private async fence(name: string, rec: LockRecord, client: string | undefined): Promise<string | null> {
    // The clients writing for the holder first, whatever the holder's own state: they do not die
    // with it (an endpoint outlives a crashed mapperd), and a proxied holder's own client is not theirs.
    const extra = await this.fenceClients(name, rec);
    const own = await this.fenceHolder(name, rec, client);
    // Null still means "the holder itself was not cut off" (the base then waits out its lease).
    return own === null || extra === null ? own : `${own}; ${extra}`;
  }

  /** The holder's own part of `fence`: its client address (`addr`). */
  private async fenceHolder(
    name: string,
    rec: LockRecord,
    client: string | undefined,
  ): Promise<string | null> {
    const p = rec.process;
    if (p !== null && sameHost(p, this.process)) {
      if (sameProcess(p, this.process)) return null; // never this process: it would fence itself
      const gone = deadHolder({ ...rec, expires: null }, this.process);
      if (gone !== null) return gone; // its client died with it
    }
    const native = this[NATIVE] ?? (await this.ready);
    const addr = rec.addr;
    if (addr === undefined || addr === '' || isOwnAddress(addr) || client === native.client) return null;
    return this.blocklist(name, rec, addr);
  }

  /**
   * Blocklists every address of `rec.clients` (the further clients that write for the holder,
   * `addClient`) except this process's own: `blocklisted a, b`, or null when there was none.
   */
  private async fenceClients(name: string, rec: LockRecord): Promise<string | null> {
    const clients = rec.clients ?? [];
    if (clients.length === 0) return null;
    const native = this[NATIVE] ?? (await this.ready);
    const done: string[] = [];
    for (const addr of new Set(clients)) {
      if (addr === '' || addr === native.addr || isOwnAddress(addr)) continue;
      await this.blocklist(name, rec, addr);
      done.push(addr);
    }
    return done.length === 0 ? null : `blocklisted ${done.join(', ')} (writing for ${rec.owner})`;
  }

  /** Blocklists `addr` (a client of `rec`'s holder) for `blocklistExpireSeconds`, once per half that. */
  private async blocklist(name: string, rec: LockRecord, addr: string): Promise<string> {
    const native = this[NATIVE] ?? (await this.ready);
    const done = `blocklisted ${addr}`;
    const last = this.fencedAt.get(addr);
    const keepS = this.blocklistExpireSeconds || 3600;
    if (last !== undefined && Date.now() - last < (keepS * 1000) / 2) return done;
    try {
      await native.conn.cluster.blocklistAdd(addr, this.blocklistExpireSeconds);
    } catch (e) {
      const errno = errnoOf(e);
      if (errno === E.EACCES || errno === E.EPERM) {
        throw new ArchipelagoError(
          'EINVAL_CONFIG',
          `cannot fence ${describeHolder(rec)} of lock ${name}: the Ceph cluster refused client.${this.cephxId} the command "osd blocklist add ${addr}" (${(e as Error).message}); its mon caps must allow it (mon 'profile rbd', or mon 'allow r, allow command "osd blocklist"'); the lock was left to its holder`,
          { cause: e, details: { lock: name, holder: describeHolder(rec), addr, errno } },
        );
      }
      throw this.fail(e, `fence ${describeHolder(rec)} of lock ${name} (blocklist ${addr})`, {
        lock: name,
        addr,
      });
    }
    this.fencedAt.set(addr, Date.now());
    return done;
  }

  /** Fences the holder of a stale record (see `fence`): it let its lease run out without releasing. */
  private fenceStale(name: string, state: LockState): Promise<string | null> {
    const rec = holderOf(state);
    return rec === null || state.stored === null
      ? Promise.resolve(null)
      : this.fence(name, rec, state.stored.client);
  }

  /** What this blocker stores to hold a lock with record `rec`: the record, description, lease. */
  private hold(native: NativeState, rec: LockRecord): Hold {
    const p = rec.process;
    return {
      record: encodeRecord({ ...rec, addr: native.addr }, native.client, this.cookie),
      cookie: this.cookie,
      description:
        p === null
          ? `archipelago ${rec.owner} on ${hostname()} (host hold)`
          : `archipelago ${rec.owner} on ${p.host} pid ${p.pid}`,
      durationMs: rec.expires === null ? 0 : Math.max(1, rec.expires - Date.now()),
    };
  }

  /**
   * The lock state a compare-and-swap of `rec` is guarded by: the one `rec` was read from (the
   * guard makes the op fail if the lock changed since), or, for a record the base made, the lock
   * as it is now if it still shows `rec`; null when it does not.
   */
  private async stateFor(pool: NativePool, name: string, rec: LockRecord): Promise<LockState | null> {
    const known = stateOf(rec);
    if (known !== undefined) return known;
    const state = await this.readState(pool, name);
    const cur = holderOf(state);
    return cur !== null && sameHolder(cur, rec) ? state : null;
  }

  private async readState(pool: NativePool, name: string): Promise<LockState> {
    try {
      return await readLock(pool, name + LOCK_SUFFIX);
    } catch (e) {
      throw this.fail(e, `lock info ${name}`, { lock: name });
    }
  }

  private async swap(name: string, what: string, op: Promise<Swap>): Promise<Swap> {
    try {
      return await op;
    } catch (e) {
      throw this.fail(e, `${what} ${name}`, { lock: name });
    }
  }

  /** fromRadosError, naming this client when it was fenced. */
  private fail(e: unknown, what: string, details: Record<string, unknown> = {}): ArchipelagoError {
    const native = this[NATIVE];
    if (errnoOf(e) === EBLOCKLISTED && native)
      return fromRadosError(e, what, { ...details, client: native.client, addr: native.addr });
    return fromRadosError(e, what, details);
  }

  // ------------------------------------------------------------------ lifecycle

  /**
   * `sync: 'flush'`: waits for every write acknowledged before the call, and rejects when one of
   * them failed since the previous flush (its code, ETIMEDOUT / ENOSPC / EIO ..., the object in
   * the message and `details.name`); NBD reports that FLUSH as failed. With `sync: 'always'` each
   * write resolved on commit, so there is nothing to wait for.
   */
  protected async _flush(): Promise<void> {
    await this.connected();
    if (this.writeBack) await this.writeBack.flush();
  }

  /** `sync: 'flush'`: bytes of acknowledged writes RADOS has not committed yet (0 otherwise). */
  get dirtyBytes(): number {
    return this.writeBack?.pendingBytes ?? 0;
  }

  /** `sync: 'flush'`: acknowledged writes RADOS has not committed yet (0 otherwise). */
  get dirtyWrites(): number {
    return this.writeBack?.pendingWrites ?? 0;
  }

  /** librados object calls (rados_aio_*) of this blocker submitted and not yet completed. */
  get aioInFlight(): number {
    return this[NATIVE]?.pool.pending() ?? 0;
  }

  /**
   * Once close() refused new calls, ended waiting acquires and the calls in flight ended: stops
   * the release watches, waits for outstanding notifies, flushes (write-back), then closes the
   * pool context and drops the connection. Locks stay held (they belong to the identity). Rejects, once everything is
   * closed, when an acknowledged write failed that no flush reported.
   */
  protected async _close(): Promise<void> {
    await Promise.allSettled([...this.releaseWatches].map((stop) => stop()));
    await Promise.allSettled([...this.notifies]);
    let lost: unknown = null;
    if (this.writeBack) await this.writeBack.flush().catch((e: unknown) => (lost = e));
    let state: NativeState | null = null;
    try {
      state = await this.ready;
    } catch {
      return; // never connected
    }
    this[NATIVE] = null;
    await state.pool.close();
    await state.conn.release();
    if (lost !== null) throw lost;
  }

  /** The pool, once connected (rejects as the connection did). */
  private async connected(): Promise<NativePool> {
    return this[NATIVE]?.pool ?? (await this.ready).pool;
  }

  /** Waits until RADOS has every acknowledged write of `name` (write-back; at once otherwise). */
  private async settled(name: string): Promise<void> {
    const pending = this.writeBack?.pendingFor(name);
    if (pending) await pending;
  }
}

// ------------------------------------------------------------------ helpers

/** The identity in a lock's cookie (`<identity>#<random>`); foreign locks show client/cookie. */
export function ownerOf(l: Pick<ClsLocker, 'client' | 'cookie'>): string {
  const i = l.cookie.lastIndexOf('#');
  return i > 0 ? l.cookie.slice(0, i) : `${l.client}/${l.cookie}`;
}

/**
 * The record a lock state shows (the read state attached, not enumerable), or null when it is
 * free. A holder without a record of ours (an older version's lock, or `rados lock`) is held by
 * the host: its owner from the cookie, no process, no lease.
 */
function holderOf(state: LockState): LockRecord | null {
  const status = statusOf(state);
  if (status === 'free') return null;
  let rec: LockRecord;
  if (status === 'foreign') {
    rec = { owner: ownerOf(state.locker as ClsLocker), process: null, expires: null };
  } else {
    const { client: _c, cookie: _k, ...plain } = state.stored as StoredRecord;
    rec = plain;
  }
  Object.defineProperty(rec, STATE, { value: state, enumerable: false });
  return rec;
}

/** Who holds the lock in `state` (its cls_lock client and cookie, the record's when stale), or null: free. */
function holderKey(state: LockState): string | null {
  const h = state.locker ?? state.stored;
  return h === null ? null : `${h.client} ${h.cookie}`;
}

function stateOf(rec: LockRecord): LockState | undefined {
  return (rec as { [STATE]?: LockState })[STATE];
}

/** True when `cur` (just read) shows the record `rec` the base made: same owner, process, lease. */
function sameHolder(cur: LockRecord, rec: LockRecord): boolean {
  return (
    cur.owner === rec.owner &&
    cur.expires === rec.expires &&
    (cur.process === null ? rec.process === null : sameProcess(cur.process, rec.process))
  );
}
