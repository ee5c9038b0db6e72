/**
 * The file blocker: objects as plain files under a hashed directory tree (reference §4.3).
 *
 *   <dir>/<h0h1>/<h2h3>/<h4h5>/<name>      h = lowercase hex of SHA-256(name), first 3 bytes
 *   <name>_lock                            a lock: the owner's identity on the first line, then
 *                                          the holding process and lease (encodeLock), in
 *                                          <lockDir>/ when set, else hashed like an object
 *
 * Durability: every write is followed by fdatasync (with `sync: 'flush'`, write-back: a write is
 * acknowledged from the page cache and synced by the next flush(), or at once when the caller asks
 * for `durable`, as NBD FUA does); files and directories created on the way are
 * made durable by fsyncing their parent directory; writeFull and copy go through a temporary file
 * that is synced and then renamed over the target (atomic replace). So a resolved write survives
 * a crash, and a crash in the middle of writeFull or copy leaves the old object or the new one.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import {
  AbstractBlocker,
  checkData,
  checkName,
  LOCK_SUFFIX,
  type LockRecord,
  type LockSession,
  missingObjectError,
  missingSourceError,
  type ObjectInfo,
  type ReleaseRequest,
  resolveIdentity,
  type StorageSpace,
} from '@archipelago/blocker';
import { addressAlignment } from '@archipelago/fastio';
import { ArchipelagoError, fromSystemError } from '@archipelago/libxseg';
import { AlignedPool, CHUNK_SIZE, DIRECT_ALIGN } from './direct.js';
import { FdCache, type FdEntry } from './fd-cache.js';
import * as fsio from './fsio.js';
import { hashedPath, TEMP_MARK } from './names.js';
import { stripTrailingZeros } from './strip.js';

/** SHA-256 of the empty string: the zero block's name (reference §1.1). */
const ZERO_HASH = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
const sha256Hex = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

const { O_RDWR, O_WRONLY, O_RDONLY, O_CREAT, O_EXCL } = fs.constants;
/** Objects fdatasynced at once by flush(). */
const FLUSH_PARALLEL = 8;
/** What the synchronous fast paths return (no promise allocated per call). */
const RESOLVED: Promise<void> = Promise.resolve();

/** O_DIRECT is Linux-only; elsewhere `direct` silently means buffered + fsync. */
const O_DIRECT: number = fs.constants.O_DIRECT ?? 0;

/** Above this many remembered directories the set is cleared (mkdir of an existing dir is cheap). */
const MAX_KNOWN_DIRS = 65_536;

export interface FileBlockerOptions {
  /** Data directory; created on first write. */
  dir: string;
  /** Flat directory for lock files; when unset, locks are hashed into `dir` like any object. */
  lockDir?: string;
  /** Lock owner identity written into lock files. Default `${os.hostname()}_embedded`. */
  identity?: string;
  /** Use O_DIRECT with aligned bounce buffers (falls back to buffered + fsync where refused). */
  direct?: boolean;
  /** Capacity of the LRU cache of open fds. Default 512. */
  fdCache?: number;
  /** Default timeout of a waiting acquire, in ms. Default 30000. */
  lockTimeoutMs?: number;
  /** How often a waiting acquire polls the lock file, in ms. Default 100. */
  lockPollMs?: number;
  /** Default lease of a process hold, in ms (0: none). Default 15000. */
  leaseMs?: number;
  /**
   * Before a read or a write through a cached fd, check that the path still names that file
   * (another process or host may have replaced it: writeFull and copy go through temp + rename),
   * and reopen it if not, so no write lands in an unlinked inode and no read returns a replaced
   * map. For blockerm, whose headers and map blocks other processes and hosts rewrite; it costs a
   * stat and an fstat per read and write. Default false.
   */
  revalidateWrites?: boolean;
  /**
   * `always` (default): fdatasync before every write resolves. `flush`: write-back; writes are
   * durable once flush() resolves (or at once with `{ durable: true }`). writeFull, copy and hash
   * are always durable (copy-up ordering depends on it).
   */
  sync?: 'always' | 'flush';
  /**
   * Bytes of space held back in a file `.archip-reserve` at the top of `dir` (default 1 MiB; 0:
   * none). When a whole-object write (maps, headers, records) or a lock finds the file system
   * full, the reserve is given up and the call tried again, so `vlmc remove` and `vlmc gc` work on
   * a full disk and can free space; the reserve is made again once a delete finds room for it.
   * Data writes never use it.
   */
  reserveBytes?: number;
}

/** The file that holds FileBlockerOptions.reserveBytes (top level: never listed as an object). */
export const RESERVE_FILE = '.archip-reserve';

type DirectState = 'off' | 'untested' | 'on';

/**
 * The file blocker. Arguments, close() and the lock logic are AbstractBlocker's; this class is the
 * store: the `_read`, `_write`, ... it implements, plus `storeContent` and the O_DIRECT machinery.
 */
export class FileBlocker extends AbstractBlocker {
  /** Absolute data directory. */
  readonly dir: string;
  /** Absolute flat lock directory, or null when locks are hashed into `dir`. */
  readonly lockDir: string | null;

  // --- mutable state, guarded by the event loop
  private readonly fds: FdCache;
  /** Leaf directories known to exist (created by us or seen). */
  private readonly knownDirs = new Set<string>();
  private readonly makingDirs = new Map<string, Promise<void>>();
  private direct: DirectState;
  private directInit: Promise<void> | null = null;
  private pool: AlignedPool | null = null;
  private probeFd: number | null = null;
  /** O_DIRECT writes to one file run one at a time (they read-modify-write edge blocks and truncate). */
  private readonly directWrites = new Map<string, Promise<void>>();
  /** See FileBlockerOptions.revalidateWrites. */
  private readonly revalidateWrites: boolean;
  /** Write-back mode: paths written since the last flush, not yet synced. */
  private dirty = new Set<string>();
  /**
   * Write-back mode: directories whose new entries (objects, subdirectories) are not yet durable.
   * Synced by flush(), and before any durable operation (see ensureDir), so a durable write or
   * lock never depends on a directory entry that a crash could still lose.
   */
  private dirtyDirs = new Set<string>();
  /** Directory fsyncs under way, so a second caller waits for the one already started. */
  private readonly syncingDirs = new Map<string, Promise<void>>();
  readonly sync: 'always' | 'flush';
  private readonly reserveBytes: number;
  /** The reserve file: not looked at yet, held, given up or never made (no room), being made. */
  private reserve: 'unknown' | 'held' | 'absent' | 'making' = 'unknown';
  private reserveTried = 0;
  private reserveSkips = 0;
  /** The reserve being made in the background, if it is: close() waits for it (its fd is open). */
  private reserveTask: Promise<void> | null = null;

  constructor(opts: FileBlockerOptions) {
    if (typeof opts?.dir !== 'string' || opts.dir === '')
      throw new TypeError('FileBlocker: "dir" must be a path');
    if (opts.lockDir !== undefined && (typeof opts.lockDir !== 'string' || opts.lockDir === '')) {
      throw new TypeError('FileBlocker: "lockDir" must be a path');
    }
    const identity = resolveIdentity('FileBlocker', opts.identity, hostname());
    const fdCache = opts.fdCache ?? 512;
    if (!Number.isSafeInteger(fdCache) || fdCache < 1)
      throw new RangeError('FileBlocker: "fdCache" must be >= 1');
    const lockTimeoutMs = opts.lockTimeoutMs ?? 30_000;
    if (!Number.isFinite(lockTimeoutMs) || lockTimeoutMs < 0) {
      throw new RangeError('FileBlocker: "lockTimeoutMs" must be >= 0');
    }
    const lockPollMs = opts.lockPollMs ?? 100;
    if (!Number.isFinite(lockPollMs) || lockPollMs <= 0)
      throw new RangeError('FileBlocker: "lockPollMs" must be > 0');

    super({
      kind: 'file',
      identity,
      lockTimeoutMs,
      lockPollMs,
      ...(opts.leaseMs !== undefined ? { leaseMs: opts.leaseMs } : {}),
    });
    this.dir = resolve(opts.dir);
    this.lockDir = opts.lockDir === undefined ? null : resolve(opts.lockDir);
    this.direct = opts.direct && O_DIRECT !== 0 ? 'untested' : 'off';
    this.revalidateWrites = opts.revalidateWrites === true;
    if (opts.sync !== undefined && opts.sync !== 'always' && opts.sync !== 'flush') {
      throw new TypeError('FileBlocker: "sync" must be "always" or "flush"');
    }
    this.sync = opts.sync ?? 'always';
    const reserveBytes = opts.reserveBytes ?? 1024 * 1024;
    if (!Number.isSafeInteger(reserveBytes) || reserveBytes < 0)
      throw new RangeError('FileBlocker: "reserveBytes" must be an integer >= 0');
    this.reserveBytes = reserveBytes;
    this.fds = new FdCache(fdCache, (path) => this.openFile(path, 0));
  }

  /**
   * Makes the reserve file when it is missing and the file system has room for it many times
   * over; in the background (nothing waits for it), at most one at a time.
   */
  private keepReserve(): void {
    if (this.reserveBytes === 0 || this.reserve === 'held' || this.reserve === 'making') return;
    // After a try that found no room, not again for a while or for some deletes (a gc sweep
    // deletes many objects: one statfs for each would be waste).
    if (this.reserve === 'absent' && ++this.reserveSkips < 8 && Date.now() - this.reserveTried < 5_000)
      return;
    this.reserveTried = Date.now();
    this.reserveSkips = 0;
    this.reserve = 'making';
    this.reserveTask = (async () => {
      const path = join(this.dir, RESERVE_FILE);
      try {
        await fsp.mkdir(this.dir, { recursive: true });
        const st = await fsp.stat(path).catch(() => null);
        if (st && st.size >= this.reserveBytes) {
          this.reserve = 'held';
          return;
        }
        const free = await dirSpace(this.dir).catch(() => null);
        if (!free || free.available < 16 * this.reserveBytes) {
          this.reserve = 'absent';
          return;
        }
        // Written, not fallocated: zeros written take real blocks on every file system.
        await writeSynced(path, Buffer.alloc(this.reserveBytes));
        this.reserve = 'held';
      } catch {
        await fsp.unlink(path).catch(() => {});
        this.reserve = 'absent';
      }
    })().finally(() => {
      this.reserveTask = null;
    });
  }

  /**
   * Runs `fn`; when it fails because the file system is full and the reserve is held, gives the
   * reserve up and runs it once more.
   */
  private async withReserve<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      const full = fsio.errno(e) === 'ENOSPC' || ArchipelagoError.is(e, 'ENOSPC');
      if (!full || this.reserveBytes === 0) throw e;
      const path = join(this.dir, RESERVE_FILE);
      if (
        !(await fsp.unlink(path).then(
          () => true,
          () => false,
        ))
      )
        throw e;
      this.reserve = 'absent';
      this.reserveTried = 0; // the next delete may make it again at once
      process.emitWarning(
        `the file system of ${this.dir} is full: its space reserve (${this.reserveBytes} bytes) was given up for ${what}; free space (vlmc remove, vlmc gc)`,
        { code: 'ARCHIPELAGO_RESERVE' },
      );
      return fn();
    }
  }

  /** `dirSpace` of the blocker's directory. */
  space(): Promise<StorageSpace> {
    return dirSpace(this.dir);
  }

  /**
   * Where object `name` lives under `dir`: `<dir>/h0h1/h2h3/h4h5/<name>`, h being the lowercase hex
   * of the first 3 bytes of SHA-256(name). Throws EINVAL_NAME for a name that breaks the rules.
   */
  static objectPath(dir: string, name: string): string {
    checkName(name);
    return hashedPath(dir, name);
  }

  /** Where the lock file of `name` (`<name>_lock`) lives. Throws EINVAL_NAME for a bad name. */
  lockPath(name: string): string {
    checkName(name, 'lock name');
    const file = name + LOCK_SUFFIX;
    return this.lockDir === null ? hashedPath(this.dir, file) : join(this.lockDir, file);
  }

  /**
   * True when I/O goes through O_DIRECT. Known after the first read or write: `direct: true` on a
   * filesystem that refuses O_DIRECT (or its alignment) leaves this false.
   */
  get directIo(): boolean {
    return this.direct === 'on';
  }

  /** Number of fds held by the cache (for tests and diagnostics). */
  get cachedFds(): number {
    return this.fds.size;
  }

  /**
   * Forgets every cached fd (each closes once no call uses it): for a process that writes objects
   * another process may delete or replace, when it learns that may have happened (the endpoint's
   * direct data path, packages/runtime/src/direct-data.ts).
   */
  forgetCachedFds(): void {
    this.fds.invalidateAll();
  }

  // ------------------------------------------------------------------ objects

  protected _read(name: string, offset: number, length: number, missingOk: boolean): Promise<Buffer> {
    if (this.direct === 'off' && !this.revalidateWrites) {
      // Cached fd and bytes in the page cache: the copy happens in the caller's turn.
      const entry = this.fds.getCached(hashedPath(this.dir, name));
      if (entry !== undefined) {
        const out = Buffer.allocUnsafe(length);
        let got: number;
        try {
          got = fsio.preadCachedSync(entry.fd, out, 0, length, offset);
        } catch (e) {
          this.fds.release(entry);
          return Promise.reject(fromSystemError(e, `read ${name}`));
        }
        if (got >= 0) {
          this.fds.release(entry);
          if (got < length) out.fill(0, got);
          return Promise.resolve(out);
        }
        const from = -got - 1; // the rest is not cached: the thread pool reads it
        return fsio.preadFully(entry.fd, out, from, length - from, offset + from).then(
          (n) => {
            this.fds.release(entry);
            if (from + n < length) out.fill(0, from + n);
            return out;
          },
          (e: unknown) => {
            this.fds.release(entry);
            throw fromSystemError(e, `read ${name}`);
          },
        );
      }
    }
    return this.readObject(name, offset, length, missingOk, null);
  }

  /** `read`, into `target` when given (O_DIRECT mode: straight into it when it is aligned). */
  private async readObject(
    name: string,
    offset: number,
    length: number,
    missingOk: boolean,
    target: Buffer | null,
  ): Promise<Buffer> {
    const path = hashedPath(this.dir, name);
    if (this.direct === 'untested') await this.initDirect();
    for (;;) {
      let entry: FdEntry;
      try {
        entry = await this.fds.get(path);
      } catch (e) {
        if (fsio.errno(e) === 'ENOENT' || fsio.errno(e) === 'ENOTDIR') {
          if (missingOk) return target ? target.fill(0) : Buffer.alloc(length);
          throw missingObjectError(name, e);
        }
        throw fromSystemError(e, `read ${name}`);
      }
      if (!(await this.stillCurrent(entry, path))) continue;
      try {
        return entry.direct
          ? await this.readDirect(entry.fd, offset, length, target)
          : await readBuffered(entry.fd, offset, length);
      } catch (e) {
        this.directRefused(entry, e, `read ${name}`); // throws unless a buffered retry follows
      } finally {
        this.fds.release(entry);
      }
    }
  }

  /**
   * Contract `readInto` (streaming readers reuse a few warm buffers instead of faulting in fresh
   * memory per read); in O_DIRECT mode straight into `target` when it is aligned. A buffered read
   * of an object whose fd is cached and whose bytes are in the page cache completes on this
   * thread, without a promise hop before the copy.
   */
  protected override _readInto(name: string, offset: number, target: Buffer): Promise<void> {
    if (this.direct === 'off' && !this.revalidateWrites) {
      const entry = this.fds.getCached(hashedPath(this.dir, name));
      if (entry !== undefined) {
        let got: number;
        try {
          got = fsio.preadCachedSync(entry.fd, target, 0, target.length, offset);
        } catch (e) {
          this.fds.release(entry);
          return Promise.reject(fromSystemError(e, `read ${name}`));
        }
        if (got >= 0) {
          this.fds.release(entry);
          if (got < target.length) target.fill(0, got);
          return RESOLVED;
        }
        const from = -got - 1; // the rest is not cached: the thread pool reads it
        return fsio.preadFully(entry.fd, target, from, target.length - from, offset + from).then(
          (n) => {
            this.fds.release(entry);
            if (from + n < target.length) target.fill(0, from + n);
          },
          (e: unknown) => {
            this.fds.release(entry);
            throw fromSystemError(e, `read ${name}`);
          },
        );
      }
    }
    return this.readIntoSlow(name, offset, target);
  }

  private async readIntoSlow(name: string, offset: number, target: Buffer): Promise<void> {
    if (this.direct !== 'off') {
      const got = await this.readObject(name, offset, target.length, true, target);
      if (got !== target) got.copy(target);
      return;
    }
    const path = hashedPath(this.dir, name);
    let entry: FdEntry;
    try {
      entry = await this.fds.get(path);
    } catch (e) {
      if (fsio.errno(e) === 'ENOENT' || fsio.errno(e) === 'ENOTDIR') {
        target.fill(0);
        return;
      }
      throw fromSystemError(e, `read ${name}`);
    }
    if (!(await this.stillCurrent(entry, path))) return this.readIntoSlow(name, offset, target);
    try {
      const got = await fsio.preadCachedFully(entry.fd, target, 0, target.length, offset);
      if (got < target.length) target.fill(0, got);
    } catch (e) {
      throw fromSystemError(e, `read ${name}`);
    } finally {
      this.fds.release(entry);
    }
  }

  /**
   * A buffered, write-back write of up to WRITE_INLINE_MAX bytes to an object whose fd is cached
   * (the common 4 KiB random write) runs on this thread without a promise hop; everything else
   * (O_DIRECT, `sync = always`, FUA, large writes, an fd to open) takes `writeSlow`.
   */
  protected _write(name: string, offset: number, data: Uint8Array, durable: boolean): Promise<void> {
    if (
      this.direct === 'off' &&
      !this.revalidateWrites &&
      !durable &&
      this.sync !== 'always' &&
      data.byteLength <= fsio.WRITE_INLINE_MAX
    ) {
      const path = hashedPath(this.dir, name);
      const entry = this.fds.getCached(path);
      if (entry !== undefined) {
        try {
          fsio.pwriteInline(entry.fd, data, 0, data.byteLength, offset);
          this.dirty.add(path);
          return RESOLVED;
        } catch (e) {
          return Promise.reject(fromSystemError(e, `write ${name}`));
        } finally {
          this.fds.release(entry);
        }
      }
    }
    return this.writeSlow(name, offset, data, durable);
  }

  private async writeSlow(name: string, offset: number, data: Uint8Array, durable: boolean): Promise<void> {
    const path = hashedPath(this.dir, name);
    if (this.direct === 'untested') await this.initDirect();
    for (;;) {
      let entry: FdEntry;
      try {
        // New directory entries are always deferred: a durable write syncs them together
        // with its data below (one journal commit instead of three in a row), and a
        // write-back write leaves them to the flush.
        entry = await this.openForWrite(path);
      } catch (e) {
        throw fromSystemError(e, `write ${name}`);
      }
      try {
        if (entry.direct) {
          const fd = entry.fd;
          await this.serialized(path, () => this.writeDirect(fd, offset, data));
        } else if (data.byteLength <= fsio.WRITE_INLINE_MAX) {
          // Into the page cache on this thread: no thread-pool round trip (fsio.ts).
          fsio.pwriteInline(entry.fd, data, 0, data.byteLength, offset);
        } else {
          await fsio.pwriteFully(entry.fd, data, 0, data.byteLength, offset);
        }
        if (this.sync === 'always' || durable) {
          // The data and every pending directory entry (this object's name among them) are
          // durable before the write resolves; the fsyncs run side by side.
          if (this.dirtyDirs.size === 0 && this.syncingDirs.size === 0) await fsio.fdatasync(entry.fd);
          else await settleAll([fsio.fdatasync(entry.fd), this.syncDirs()]);
        } else this.dirty.add(path);
        return;
      } catch (e) {
        this.directRefused(entry, e, `write ${name}`); // throws unless a buffered retry follows
      } finally {
        this.fds.release(entry);
      }
    }
  }

  protected async _writeFull(name: string, data: Uint8Array): Promise<void> {
    if (this.reserve === 'unknown') this.keepReserve();
    await this.withReserve(`writeFull ${name}`, () =>
      this.replace(name, `writeFull ${name}`, (tmp) => writeSynced(tmp, data, fsio.fdatasync)),
    );
  }

  protected async _copy(src: string, dst: string, missingOk: boolean): Promise<void> {
    const srcPath = hashedPath(this.dir, src);
    await this.replace(dst, `copy ${src} to ${dst}`, async (tmp) => {
      try {
        // A reflink where the filesystem can (btrfs, xfs), else copy_file_range/sendfile in the kernel.
        await fsp.copyFile(srcPath, tmp, fs.constants.COPYFILE_FICLONE);
      } catch (e) {
        const code = fsio.errno(e);
        // ENOENT may also mean the temp file's directory vanished; only a missing source counts.
        if ((code === 'ENOENT' || code === 'ENOTDIR') && !(await pathExists(srcPath))) {
          if (!missingOk) throw missingSourceError(src, e);
          await fsio.close(await fsio.open(tmp, O_WRONLY | O_CREAT | O_EXCL));
          return;
        }
        throw e;
      }
      const fd = await fsio.open(tmp, O_RDWR);
      try {
        await fsio.fdatasync(fd);
      } finally {
        await fsio.close(fd).catch(() => {});
      }
    });
  }

  protected async _delete(name: string): Promise<boolean> {
    const path = hashedPath(this.dir, name);
    try {
      this.dirty.delete(path);
      await fsp.unlink(path);
      // Space freed: the reserve comes back once there is room for it.
      if (this.reserve === 'absent') this.keepReserve();
      return true;
    } catch (e) {
      const code = fsio.errno(e);
      if (code === 'ENOENT' || code === 'ENOTDIR') return false;
      throw fromSystemError(e, `delete ${name}`);
    } finally {
      this.fds.invalidate(path);
    }
  }

  protected async _info(name: string): Promise<ObjectInfo | null> {
    const path = hashedPath(this.dir, name);
    // An O_DIRECT write briefly rounds the size up to the block; wait for it to settle.
    const pending = this.directWrites.get(path);
    if (pending) await pending;
    try {
      const st = await fsp.stat(path);
      return { size: st.size, mtime: st.mtimeMs };
    } catch (e) {
      const code = fsio.errno(e);
      if (code === 'ENOENT' || code === 'ENOTDIR') return null;
      throw fromSystemError(e, `info ${name}`);
    }
  }

  /** Every file of the leaf directories; the base keeps the object names (no locks, no temp files). */
  protected async *_list(prefix: string): AsyncIterable<string> {
    // Every directory step checks that the blocker is still open (list is not a counted call).
    for (const a of await this.listHexDir(this.dir)) {
      const da = join(this.dir, a);
      for (const b of await this.listHexDir(da)) {
        const db = join(da, b);
        for (const c of await this.listHexDir(db)) {
          const dc = join(db, c);
          for (const ent of await this.readDir(dc)) {
            if (ent.isFile() && ent.name.startsWith(prefix)) yield ent.name;
          }
        }
      }
    }
  }

  // ------------------------------------------------------------------ locks

  /**
   * The NFS-safe idiom: the lock record goes to a unique synced file, which each attempt links to
   * the lock name; link(2) fails with EEXIST when the lock exists, atomically, even on NFS.
   */
  protected _lockSession(name: string, _wait: boolean, record: () => LockRecord): LockSession {
    const lp = this.lockPath(name);
    const ld = dirname(lp);
    const tmp = `${lp}${TEMP_MARK}${randomBytes(6).toString('hex')}`;
    let dir: Promise<void> | null = null;
    // A waiting acquire sleeps lockPollMs between attempts (the rule on a network file system),
    // and wakes early when inotify sees the lock file go (a release on this machine's view of
    // the directory): a hand-over then takes milliseconds, not a poll interval.
    let watcher: fs.FSWatcher | null = null;
    let wake: (() => void) | null = null;
    const base = basename(lp);
    return {
      pause: (ms) => {
        if (watcher === null) {
          try {
            watcher = fs.watch(ld, { persistent: false }, (_ev, f) => {
              if (f === base) wake?.();
            });
            watcher.on('error', () => {});
          } catch {
            // no directory, no inotify: poll
          }
        }
        return this.sleep(Math.min(ms, this.lockPollMs), (w) => {
          wake = w;
        });
      },
      attempt: async () => {
        try {
          dir ??= this.ensureDir(ld);
          await dir;
          // The record as of this attempt (a lease counts from when the lock is taken).
          await fsp.unlink(tmp).catch(() => {});
          await this.withReserve(`acquire ${name}`, async () => {
            await fsp.unlink(tmp).catch(() => {});
            await writeSynced(tmp, Buffer.from(encodeLock(record())));
          });
          for (;;) {
            if (await linkLock(tmp, lp)) {
              await fsio.fsyncDir(ld);
              return null;
            }
            const cur = await readLock(lp);
            if (cur !== null) return cur;
            // released between our link and our read: try again
          }
        } catch (e) {
          throw fromSystemError(e, `acquire ${name}`);
        }
      },
      end: () => {
        (watcher as fs.FSWatcher | null)?.close();
        return fsp.unlink(tmp).catch(() => {});
      },
    };
  }

  protected async _lockHolder(name: string): Promise<LockRecord | null> {
    try {
      return await readLock(this.lockPath(name));
    } catch (e) {
      throw fromSystemError(e, `read lock ${name}`);
    }
  }

  /**
   * Rewrites the record (temp file + rename over the lock) if it still is `expected`. The
   * compare and the rename are two steps: a file system offers no compare-and-swap, so two hosts
   * rewriting one lock at the same moment are kept apart by the lease rules (docs/ARCHITECTURE.md,
   * "Locks, leases and fencing"), not by this call.
   */
  protected async _replace(name: string, expected: LockRecord, next: LockRecord): Promise<boolean> {
    const lp = this.lockPath(name);
    try {
      const cur = await readLock(lp);
      if (cur === null || !sameLockRecord(cur, expected)) return false;
      const tmp = `${lp}${TEMP_MARK}${randomBytes(6).toString('hex')}`;
      try {
        await writeSynced(tmp, Buffer.from(encodeLock(next)));
        await fsp.rename(tmp, lp);
      } catch (e) {
        await fsp.unlink(tmp).catch(() => {});
        throw e;
      }
      await fsio.fsyncDir(dirname(lp));
      return true;
    } catch (e) {
      throw fromSystemError(e, `rewrite lock ${name}`);
    }
  }

  protected async _unlock(name: string, holder: LockRecord): Promise<boolean> {
    const lp = this.lockPath(name);
    try {
      const cur = await readLock(lp);
      if (cur === null || !sameLockRecord(cur, holder)) return false;
      await fsp.unlink(lp);
      return true;
    } catch (e) {
      if (fsio.errno(e) === 'ENOENT') return false;
      throw fromSystemError(e, `release ${name}`);
    } finally {
      this.fds.invalidate(lp);
    }
  }

  /** Where the release request of lock `name` lives: next to the lock, `<lock>~release`. */
  private releasePath(name: string): string {
    return `${this.lockPath(name)}${TEMP_MARK}release`;
  }

  /**
   * Watches for a release request of lock `name` with inotify on the lock's directory (no poll:
   * on a network file system that does not deliver other hosts' changes to inotify, the holder's
   * renewal still reports the request).
   */
  watchRelease(name: string, listener: () => void): () => void {
    const file = basename(this.releasePath(name));
    let w: fs.FSWatcher | null = null;
    try {
      w = fs.watch(dirname(this.lockPath(name)), { persistent: false }, (_ev, f) => {
        if (f === file) listener();
      });
      w.on('error', () => w?.close());
    } catch {
      // no directory yet (the lock is not held): the renewal reports requests
    }
    return () => w?.close();
  }

  protected override async _requestRelease(name: string, req: ReleaseRequest): Promise<void> {
    const rp = this.releasePath(name);
    const tmp = `${rp}${randomBytes(6).toString('hex')}`;
    try {
      await writeSynced(tmp, Buffer.from(`${JSON.stringify(req)}\n`));
      await fsp.rename(tmp, rp);
    } catch (e) {
      await fsp.unlink(tmp).catch(() => {});
      throw fromSystemError(e, `request release of ${name}`);
    }
  }

  protected override async _releaseRequest(name: string): Promise<ReleaseRequest | null> {
    let text: string;
    try {
      text = await fsp.readFile(this.releasePath(name), 'utf8');
    } catch (e) {
      if (fsio.errno(e) === 'ENOENT') return null;
      throw fromSystemError(e, `read the release request of ${name}`);
    }
    try {
      const r = JSON.parse(text) as Partial<ReleaseRequest>;
      if (typeof r.by === 'string' && typeof r.at === 'number') return { by: r.by, at: r.at };
    } catch {
      // a torn or foreign file still asks for the lock
    }
    return { by: 'unknown', at: 0 };
  }

  protected override async _clearReleaseRequest(name: string): Promise<void> {
    await fsp.unlink(this.releasePath(name)).catch(() => {});
  }

  // ------------------------------------------------------------------ content addressing

  /**
   * Content-addresses object `name` (contract `hash`, reference §2.7): reads its first `size`
   * bytes, strips trailing zeros, names the rest H = SHA-256 (lowercase hex) and stores it as
   * object H unless H exists. The store is atomic and crash-safe: the bytes go to a synced temp
   * file (`<H>~<random>`, invisible to list) next to H's path, which is then hard-linked to H's
   * path (link fails with EEXIST when H exists: someone stored the same content first, which is
   * just as good) and unlinked. Resolves H in every case, also when H already existed (the
   * original's filed returned no name then). An all-zero block is the zero block: nothing stored.
   * Precomputed `<name>_hash` objects of the original are not consulted: they go stale when the
   * object is rewritten, and hashing is cheap next to the I/O.
   */
  protected async _hash(name: string, size: number): Promise<string> {
    const block = await this.readObject(name, 0, size, true, null);
    const data = stripTrailingZeros(block);
    if (data.length === 0) return ZERO_HASH;
    const h = sha256Hex(data);
    await this.storeContent(h, data, `hash ${name}`);
    return h;
  }

  /**
   * Stores `data` as the content object `h` (its SHA-256, trailing zeros already stripped) unless
   * it exists; atomic (temp file + link). Resolves true when this call stored it. The caller
   * vouches that `h` names `data`; `hash()` computes it, the gateway verifies it.
   */
  async storeContent(h: string, data: Uint8Array, what = `store ${h}`): Promise<boolean> {
    this.enter();
    try {
      checkName(h);
      checkData(data);
      const path = hashedPath(this.dir, h);
      if (await pathExists(path)) return false;
      const dir = dirname(path);
      for (let attempt = 0; ; attempt++) {
        const tmp = join(dir, `${h}${TEMP_MARK}${randomBytes(6).toString('hex')}`);
        try {
          await this.ensureDir(dir);
          await writeSynced(tmp, data);
          let stored = true;
          try {
            await fsp.link(tmp, path);
          } catch (e) {
            if (fsio.errno(e) !== 'EEXIST') throw e;
            stored = false; // the same content, stored concurrently
          }
          await fsp.unlink(tmp).catch(() => {});
          if (stored) await fsio.fsyncDir(dir);
          return stored;
        } catch (e) {
          await fsp.unlink(tmp).catch(() => {});
          if (fsio.errno(e) === 'ENOENT' && attempt < 2) {
            this.knownDirs.delete(dir);
            continue;
          }
          throw fromSystemError(e, what);
        }
      }
    } finally {
      this.leave();
    }
  }

  // ------------------------------------------------------------------ lifecycle

  /**
   * In write-back mode, syncs every object written since the last flush (fsync flushes a file's
   * dirty pages whichever fd wrote them). With `sync: 'always'` there is nothing left to flush.
   */
  protected async _flush(): Promise<void> {
    if (this.dirty.size === 0 && this.dirtyDirs.size === 0 && this.syncingDirs.size === 0) return;
    const paths = [...this.dirty];
    this.dirty = new Set();
    const dirs = this.syncDirs();
    const failed: string[] = [];
    let first: unknown;
    let next = 0;
    const one = async (path: string) => {
      let fd: number | undefined;
      try {
        fd = await fsio.open(path, fs.constants.O_RDONLY);
        await fsio.fdatasync(fd);
      } catch (e) {
        if (fsio.errno(e) === 'ENOENT') return; // deleted since: nothing to keep
        failed.push(path);
        first ??= e;
      } finally {
        if (fd !== undefined) await fsio.close(fd).catch(() => undefined);
      }
    };
    // A bounded number at a time: hundreds of fdatasyncs at once make the journal commit
    // over and over and leave the disk less busy than a few streams do.
    await Promise.all(
      Array.from({ length: Math.min(FLUSH_PARALLEL, paths.length) }, async () => {
        while (next < paths.length) await one(paths[next++]!);
      }),
    );
    if (failed.length > 0) {
      for (const p of failed) this.dirty.add(p);
      await dirs.catch(() => undefined);
      throw fromSystemError(first, `flush (${failed.length} objects)`);
    }
    await dirs;
  }

  /**
   * Fsyncs the directories holding entries not yet durable, and waits for those another caller
   * is already syncing. A failed one stays pending (for the next caller) and fails the call.
   */
  private async syncDirs(): Promise<void> {
    const waits = [...this.syncingDirs.values()];
    for (const d of this.dirtyDirs) {
      const p = fsio.fsyncDir(d).then(
        () => {
          this.syncingDirs.delete(d);
        },
        (e: unknown) => {
          this.syncingDirs.delete(d);
          if (fsio.errno(e) === 'ENOENT') return; // removed since: nothing to keep
          this.dirtyDirs.add(d);
          throw fromSystemError(e, `sync directory ${d}`);
        },
      );
      this.syncingDirs.set(d, p);
      waits.push(p);
    }
    this.dirtyDirs = new Set();
    if (waits.length > 0) await settleAll(waits);
  }

  /** Write-back mode: objects written but not yet synced. */
  get unsynced(): number {
    return this.dirty.size;
  }

  /** Write-back mode: directories holding new entries not yet synced. */
  get unsyncedDirs(): number {
    return this.dirtyDirs.size + this.syncingDirs.size;
  }

  /** Once close() refused new calls and the calls in flight ended: closes every fd. */
  protected async _close(): Promise<void> {
    if (this.directInit) await this.directInit;
    // A reserve being written holds an fd on the file system (an unmount right after close()
    // failed with EBUSY: seen in a CI run).
    if (this.reserveTask) await this.reserveTask;
    await this.fds.close();
    if (this.probeFd !== null) await fsio.close(this.probeFd).catch(() => {});
    this.probeFd = null;
    this.pool = null;
  }

  // ------------------------------------------------------------------ internals

  /** Opens an existing file (plus `extra` flags), with O_DIRECT while it is on. */
  private async openFile(path: string, extra: number): Promise<{ fd: number; direct: boolean }> {
    if (this.direct === 'on') {
      try {
        return { fd: await fsio.open(path, O_RDWR | O_DIRECT | extra), direct: true };
      } catch (e) {
        if (fsio.errno(e) !== 'EINVAL') throw e;
        this.disableDirect();
      }
    }
    return { fd: await fsio.open(path, O_RDWR | extra), direct: false };
  }

  /**
   * An fd for writing `path`, creating the file (and its directories) when missing. The new
   * directory entries are left pending (dirtyDirs): the caller syncs them with its data (a durable
   * write) or the next flush does (write-back).
   */
  /**
   * With `revalidateWrites`, whether `path` still names the file `entry` has open; when it does
   * not (another process replaced or removed it), the entry is released and dropped from the cache.
   */
  private async stillCurrent(entry: FdEntry, path: string): Promise<boolean> {
    if (!this.revalidateWrites || (await this.sameFile(entry, path))) return true;
    this.fds.release(entry);
    this.fds.invalidate(path);
    return false;
  }

  /** True when `path` still names the file `entry` has open (same device and inode). */
  private async sameFile(entry: FdEntry, path: string): Promise<boolean> {
    const [byPath, byFd] = await Promise.all([
      fsp.stat(path).catch(() => null),
      new Promise<fs.Stats | null>((resolve) => fs.fstat(entry.fd, (err, st) => resolve(err ? null : st))),
    ]);
    return byPath !== null && byFd !== null && byPath.ino === byFd.ino && byPath.dev === byFd.dev;
  }

  private async openForWrite(path: string): Promise<FdEntry> {
    const dir = dirname(path);
    for (let attempt = 0; ; attempt++) {
      try {
        const entry = await this.fds.get(path);
        if (await this.stillCurrent(entry, path)) return entry;
        continue; // replaced (or removed) behind this cached fd: open the path again
      } catch (e) {
        const code = fsio.errno(e);
        if ((code !== 'ENOENT' && code !== 'ENOTDIR') || attempt >= 5) throw e;
      }
      await this.ensureDir(dir, true);
      try {
        return await this.fds.adopt(path, async () => {
          const opened = await this.openFile(path, O_CREAT | O_EXCL);
          this.dirtyDirs.add(dir);
          return opened;
        });
      } catch (e) {
        const code = fsio.errno(e);
        if (code === 'EEXIST' && attempt < 5) continue; // created concurrently: open theirs
        if (code === 'ENOENT' && attempt < 5) {
          this.knownDirs.delete(dir); // the directory was removed under us
          continue;
        }
        throw e;
      }
    }
  }

  /**
   * Writes a temp file next to `name`'s path with `fill` (which must sync it), renames it over the
   * object, invalidates cached fds and syncs the directory. The temp file is removed on failure.
   */
  private async replace(name: string, what: string, fill: (tmp: string) => Promise<void>): Promise<void> {
    const path = hashedPath(this.dir, name);
    const dir = dirname(path);
    for (let attempt = 0; ; attempt++) {
      const tmp = join(dir, `${name}${TEMP_MARK}${randomBytes(6).toString('hex')}`);
      try {
        await this.ensureDir(dir);
        await fill(tmp);
        await fsp.rename(tmp, path);
        this.fds.invalidate(path);
        await fsio.fsyncDir(dir);
        return;
      } catch (e) {
        await fsp.unlink(tmp).catch(() => {});
        if (ArchipelagoError.isInstance(e)) throw e;
        if (fsio.errno(e) === 'ENOENT' && attempt < 2) {
          this.knownDirs.delete(dir);
          continue;
        }
        throw fromSystemError(e, what);
      }
    }
  }

  /**
   * mkdir -p, remembered; the parents of every directory created are fsynced, or with `defer`
   * recorded for the next flush. Without `defer`, also syncs directories earlier calls deferred,
   * so whatever the caller creates next is reachable after a crash.
   */
  private async ensureDir(dir: string, defer = false): Promise<void> {
    if (!defer && (this.dirtyDirs.size > 0 || this.syncingDirs.size > 0)) await this.syncDirs();
    if (this.knownDirs.has(dir)) return;
    let making = this.makingDirs.get(dir);
    if (!making) {
      making = (async () => {
        const first = await fsp.mkdir(dir, { recursive: true });
        if (first !== undefined) {
          // Created `first` .. `dir`: make each new entry durable in its parent.
          const parents: string[] = [];
          for (let d = dir; ; d = dirname(d)) {
            parents.push(dirname(d));
            if (d === first || dirname(d) === d) break;
          }
          if (defer) for (const p of parents) this.dirtyDirs.add(p);
          else await Promise.all(parents.map((p) => fsio.fsyncDir(p)));
        }
        if (this.knownDirs.size >= MAX_KNOWN_DIRS) this.knownDirs.clear();
        this.knownDirs.add(dir);
      })().finally(() => this.makingDirs.delete(dir));
      this.makingDirs.set(dir, making);
    }
    await making;
  }

  private async listHexDir(dir: string): Promise<string[]> {
    const names: string[] = [];
    for (const ent of await this.readDir(dir)) {
      if (ent.isDirectory() && /^[0-9a-f]{2}$/.test(ent.name)) names.push(ent.name);
    }
    return names;
  }

  private async readDir(dir: string): Promise<fs.Dirent[]> {
    this.assertOpen();
    try {
      return await fsp.readdir(dir, { withFileTypes: true });
    } catch (e) {
      const code = fsio.errno(e);
      if (code === 'ENOENT' || code === 'ENOTDIR') return [];
      throw fromSystemError(e, `list ${dir}`);
    }
  }

  // --- O_DIRECT

  /** Probes O_DIRECT once: opens a probe file with it and finds an aligned bounce buffer. */
  private initDirect(): Promise<void> {
    this.directInit ??= (async () => {
      let fd: number | null = null;
      try {
        await fsp.mkdir(this.dir, { recursive: true });
        const probe = join(this.dir, `${TEMP_MARK}probe-${randomBytes(6).toString('hex')}`);
        try {
          const w = await fsio.open(probe, O_WRONLY | O_CREAT | O_EXCL);
          try {
            await fsio.pwriteFully(w, Buffer.alloc(DIRECT_ALIGN), 0, DIRECT_ALIGN, 0);
          } finally {
            await fsio.close(w);
          }
          fd = await fsio.open(probe, O_RDONLY | O_DIRECT);
        } finally {
          await fsp.unlink(probe).catch(() => {});
        }
        const pool = await AlignedPool.create(fd); // rejects when no aligned memory exists
        if (this.direct === 'untested') {
          this.pool = pool;
          this.probeFd = fd;
          fd = null;
          this.direct = 'on';
        }
      } catch {
        // EINVAL (tmpfs on older kernels, some FUSE and network filesystems) or no aligned window:
        // buffered I/O with fdatasync gives the same guarantees, at the page cache's cost.
        this.direct = 'off';
      } finally {
        if (fd !== null) await fsio.close(fd).catch(() => {});
      }
    })();
    return this.directInit;
  }

  /**
   * After an I/O on `entry` failed: when it was O_DIRECT refused (EINVAL), turns O_DIRECT off, so
   * that the caller retries buffered; throws any other failure as the error of `what`.
   */
  private directRefused(entry: FdEntry, e: unknown, what: string): void {
    if (!entry.direct || fsio.errno(e) !== 'EINVAL') throw fromSystemError(e, what);
    this.disableDirect();
  }

  /** Remembers that O_DIRECT does not work here and drops every O_DIRECT fd from the cache. */
  private disableDirect(): void {
    if (this.direct === 'off') return;
    this.direct = 'off';
    this.fds.invalidateAll();
  }

  private async serialized<T>(path: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.directWrites.get(path);
    let done!: () => void;
    const mine = new Promise<void>((r) => (done = r));
    const chain = prev ? prev.then(() => mine) : mine;
    this.directWrites.set(path, chain);
    try {
      if (prev) await prev;
      return await fn();
    } finally {
      done();
      if (this.directWrites.get(path) === chain) this.directWrites.delete(path);
    }
  }

  /** Reads through an aligned bounce buffer; bytes past the end of file are zeros. */
  private async readDirect(
    fd: number,
    offset: number,
    length: number,
    target: Buffer | null,
  ): Promise<Buffer> {
    const out = target ?? Buffer.allocUnsafe(length);
    const end = offset + length;
    let filled = offset;
    if (
      target &&
      offset % DIRECT_ALIGN === 0 &&
      length % DIRECT_ALIGN === 0 &&
      addressAlignment(target) >= DIRECT_ALIGN
    ) {
      // The caller's memory is aligned too: straight from the disk into it, no bounce copy.
      while (filled < end) {
        const got = await fsio.pread(fd, out, filled - offset, end - filled, filled);
        filled += got;
        if (got === 0 || got % DIRECT_ALIGN !== 0) break; // end of file
      }
    } else if (length > 0) {
      const pool = this.requirePool();
      const bounce = await pool.take();
      try {
        let pos = alignDown(offset);
        const stop = alignUp(end);
        while (pos < stop) {
          const n = Math.min(CHUNK_SIZE, stop - pos);
          const got = await fsio.pread(fd, bounce, 0, n, pos);
          const from = Math.max(pos, offset);
          const to = Math.min(pos + got, end);
          if (to > from) {
            bounce.copy(out, from - offset, from - pos, to - pos);
            filled = to;
          }
          if (got === n) pos += n;
          else if (got > 0 && got % DIRECT_ALIGN === 0) pos += got;
          else break; // end of file
        }
      } finally {
        pool.put(bounce);
      }
    }
    if (filled < end) out.fill(0, filled - offset);
    return out;
  }

  /**
   * Writes through an aligned bounce buffer. Partly covered first and last blocks are read first
   * (read-modify-write), and the file is truncated back when the aligned write went past the
   * logical end. Runs serialized per file.
   */
  private async writeDirect(fd: number, offset: number, data: Uint8Array): Promise<void> {
    const length = data.byteLength;
    if (length === 0) return;
    const end = offset + length;
    const start = alignDown(offset);
    const stop = alignUp(end);
    const oldSize = await fsio.fstatSize(fd);
    if (offset === start && end === stop && addressAlignment(data) >= DIRECT_ALIGN) {
      // The caller's memory is aligned too (e.g. a largeBuffer): straight to the disk, no copy.
      await fsio.pwriteFully(fd, data, 0, length, offset);
      return;
    }
    const pool = this.requirePool();
    if (offset === start && end === stop) {
      // Aligned at both ends: nothing to read back, so the chunks go to the disk side by side
      // (a 4 MiB block is 4 writes in flight instead of 4 in a row).
      const chunks: Promise<void>[] = [];
      for (let pos = start; pos < stop; pos += CHUNK_SIZE) {
        const n = Math.min(CHUNK_SIZE, stop - pos);
        chunks.push(
          pool.take().then(async (bounce) => {
            try {
              bounce.set(data.subarray(pos - offset, pos - offset + n), 0);
              await fsio.pwriteFully(fd, bounce, 0, n, pos);
            } finally {
              pool.put(bounce);
            }
          }),
        );
      }
      await settleAll(chunks);
      return;
    }
    const bounce = await pool.take();
    try {
      for (let pos = start; pos < stop; pos += CHUNK_SIZE) {
        const n = Math.min(CHUNK_SIZE, stop - pos);
        const headPartial = pos === start && offset > start;
        if (headPartial) await readBlock(fd, bounce, 0, start, oldSize);
        const last = pos + n - DIRECT_ALIGN;
        if (pos + n === stop && end < stop && !(headPartial && last === start)) {
          await readBlock(fd, bounce, n - DIRECT_ALIGN, last, oldSize);
        }
        const from = Math.max(pos, offset);
        const to = Math.min(pos + n, end);
        bounce.set(data.subarray(from - offset, to - offset), from - pos);
        await fsio.pwriteFully(fd, bounce, 0, n, pos);
      }
    } finally {
      pool.put(bounce);
    }
    const size = Math.max(oldSize, end);
    if (stop > size) await fsio.ftruncate(fd, size);
  }

  private requirePool(): AlignedPool {
    if (!this.pool) {
      const e: NodeJS.ErrnoException = new Error('O_DIRECT bounce buffers are not available');
      e.code = 'EINVAL';
      throw e;
    }
    return this.pool;
  }
}

// ------------------------------------------------------------------ helpers

const alignDown = (n: number) => n - (n % DIRECT_ALIGN);
const alignUp = (n: number) => alignDown(n + DIRECT_ALIGN - 1);

/** Reads into a fresh buffer (page cache first, then the thread pool); zeros past the end of file. */
async function readBuffered(fd: number, offset: number, length: number): Promise<Buffer> {
  const out = Buffer.allocUnsafe(length);
  const got = await fsio.preadCachedFully(fd, out, 0, length, offset);
  if (got < length) out.fill(0, got);
  return out;
}

/** Reads the aligned block at `pos` into `buf[at..at+4096)`, zeros past the end of file. */
async function readBlock(fd: number, buf: Buffer, at: number, pos: number, size: number): Promise<void> {
  // One pread: an O_DIRECT read cannot resume at the unaligned end of a short read.
  const got = pos < size ? await fsio.pread(fd, buf, at, DIRECT_ALIGN, pos) : 0;
  if (got < DIRECT_ALIGN) buf.fill(0, at + got, at + DIRECT_ALIGN);
}

/** Creates `path` exclusively with `data` and syncs it (fsync, or fdatasync where enough). */
async function writeSynced(
  path: string,
  data: Uint8Array,
  sync: (fd: number) => Promise<void> = fsio.fsync,
): Promise<void> {
  const fd = await fsio.open(path, O_WRONLY | O_CREAT | O_EXCL);
  try {
    await fsio.pwriteFully(fd, data, 0, data.byteLength, 0);
    await sync(fd);
  } finally {
    await fsio.close(fd).catch(() => {});
  }
}

/** link(tmp, lock): true when we created the lock, false when it already exists. */
async function linkLock(tmp: string, lock: string): Promise<boolean> {
  try {
    await fsp.link(tmp, lock);
    return true;
  } catch (e) {
    if (fsio.errno(e) === 'EEXIST') return false;
    // NFS may report a failure for a link that happened (a lost reply to a retried request):
    // the temp file's link count tells the truth.
    const st = await fsp.stat(tmp).catch(() => null);
    if (st && st.nlink === 2) return true;
    throw e;
  }
}

/**
 * A lock file: the owner identity on the first line (what `cat` shows, and all an older version
 * wrote), then, for a process hold, one JSON line with the holding process and the lease:
 *
 *     host1_embedded
 *     {"pid":4242,"start":"123456","boot":"6f1c…","host":"host1","expires":1796600000000}
 *
 * A file with the owner alone is a host hold (`vlmc open`), as every lock of an older version.
 */
export function encodeLock(r: LockRecord): string {
  if (r.process === null) return `${r.owner}\n`;
  const { pid, start, boot, host } = r.process;
  const extra = {
    ...(r.proxied === true ? { proxied: true } : {}),
    ...(r.notBefore !== undefined ? { notBefore: r.notBefore } : {}),
  };
  return `${r.owner}\n${JSON.stringify({ pid, start, boot, host, expires: r.expires, ...extra })}\n`;
}

/** Parses a lock file (see encodeLock); a second line that is no record is ignored. */
export function decodeLock(text: string): LockRecord {
  const lines = text.split(/\r?\n/);
  const owner = lines[0] ?? '';
  try {
    const o = JSON.parse(lines[1] ?? '') as Record<string, unknown>;
    if (
      typeof o.pid === 'number' &&
      typeof o.start === 'string' &&
      typeof o.boot === 'string' &&
      typeof o.host === 'string'
    )
      return {
        owner,
        process: { pid: o.pid, start: o.start, boot: o.boot, host: o.host },
        expires: typeof o.expires === 'number' ? o.expires : null,
        ...(o.proxied === true ? { proxied: true } : {}),
        ...(typeof o.notBefore === 'number' ? { notBefore: o.notBefore } : {}),
      };
  } catch {
    // the owner alone: a host hold
  }
  return { owner, process: null, expires: null };
}

/** The record in a lock file, or null when there is no lock. */
async function readLock(lockPath: string): Promise<LockRecord | null> {
  try {
    return decodeLock(await fsp.readFile(lockPath, 'utf8'));
  } catch (e) {
    const code = fsio.errno(e);
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw e;
  }
}

/** True when two records say the same (owner, process, lease). */
function sameLockRecord(a: LockRecord, b: LockRecord): boolean {
  return encodeLock(a) === encodeLock(b);
}

async function pathExists(path: string): Promise<boolean> {
  try {
    await fsp.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Waits for every promise (none is left running), then fails with the first failure, if any. */
async function settleAll(all: Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(all);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

/**
 * `statfs` of `dir` (of its nearest existing parent when it does not exist yet): the bytes an
 * unprivileged writer may still use (`bavail`), and the file system's size.
 */
export async function dirSpace(dir: string): Promise<StorageSpace> {
  let where = resolve(dir);
  for (;;) {
    try {
      const st = await fsp.statfs(where);
      return { available: st.bavail * st.bsize, total: st.blocks * st.bsize, where };
    } catch (e) {
      const parent = dirname(where);
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || parent === where) throw e;
      where = parent;
    }
  }
}
