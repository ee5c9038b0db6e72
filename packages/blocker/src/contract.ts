/**
 * The blocker contract, version 1.
 *
 * A blocker stores named objects (byte arrays) and named locks. Object names are opaque strings
 * of 1..123 bytes drawn from [A-Za-z0-9._-] (mapfile's name rules guarantee this for every name
 * Archipelago builds). Every method is asynchronous and safe to call concurrently; ordering between
 * concurrent calls on the same object is the caller's business (the composer orders overlapping
 * writes).
 *
 * Errors are ArchipelagoError with codes: ENOENT_OBJECT (missing object where one is required),
 * ELOCKED (lock held by another owner; `details.owner` names it), ENOTLOCKED (release of a lock we
 * do not hold), ETIMEDOUT (blocking acquire gave up), ENOSPC / EIO (storage faults), EINVAL_NAME
 * (a name that could escape the store), ECLOSED (used after close()), EBUSY (breaking the lock of
 * a live process of this host).
 *
 * Locks carry a record of their holder (holder.ts): the owner identity, and either the holding
 * process (host, boot id, pid and its start time) with a lease, or nobody (held by the host). A
 * lock whose holding process is provably dead (gone from this host, or its lease expired) is
 * taken over by the next acquire, after fencing it.
 */

import type { LockProcess, LockRecord } from './holder.js';

export interface ReadOptions {
  /** Treat a missing object as all zeros instead of failing with ENOENT_OBJECT. */
  missingOk?: boolean;
}

export interface WriteOptions {
  /**
   * Durable when the promise resolves even if the blocker runs in write-back mode (NBD FUA).
   * Blockers that make every write durable ignore it.
   */
  durable?: boolean;
}

export interface AcquireOptions {
  /** Wait for the lock instead of failing at once with ELOCKED. */
  wait?: boolean;
  /** With `wait`, give up after this many milliseconds with ETIMEDOUT (default: the blocker's). */
  timeoutMs?: number;
  /**
   * Who holds the lock (default `process`): this process, under a lease of `leaseMs` that `renew`
   * extends; or the `host`, i.e. the identity with no process and no lease (`vlmc open`, `vlmc
   * lock`), kept until released or broken. On a lock this identity holds already, the record is
   * rewritten to say so (a process adopting a host hold, or handing its hold back to the host).
   */
  hold?: 'process' | 'host';
  /** Lease of a process hold, ms (default: the blocker's `leaseMs`; 0: no lease). */
  leaseMs?: number;
  /** The process the lock is held for (default: this one). A blocker peer passes its client's. */
  as?: LockProcess;
}

/** What an acquire did. */
export interface AcquireResult {
  /** True when this call took the lock; false when this identity held it already. */
  took: boolean;
  /** The lock's record before this call (null: it was free). */
  previous: LockRecord | null;
  /**
   * Why `previous`, a holder this call took the lock over from, was provably dead (its pid gone,
   * its lease expired); it was fenced first. Null when no holder was taken over.
   */
  tookOver: string | null;
}

export interface RenewOptions {
  /** The new lease, ms from now (default: the blocker's `leaseMs`). */
  leaseMs?: number;
  /** The process holding the lock (default: this one). */
  as?: LockProcess;
}

export interface BreakOptions {
  /**
   * How long to wait, at most, for a live holder elsewhere whose lease cannot be cut short (file
   * blockers) to lose it, ms (default: the blocker's `leaseMs` plus a second).
   */
  waitMs?: number;
  /** Called once before such a wait, with what is waited for (for progress output). */
  onWait?: (what: string, ms: number) => void;
}

export interface RequestReleaseOptions {
  /** Who asks (default: this blocker's identity). */
  by?: string;
}

/** What a breakLock did. */
export interface BreakReport {
  /** The holder the lock was taken from. */
  previous: LockRecord;
  /**
   * How that holder was made unable to write before the lock was broken: `blocklisted <addr>`
   * (RADOS), `its lease ran out`, `its process is gone`, `held by the host: no process`.
   */
  fenced: string;
}

export interface ReleaseOptions {
  /** Break the lock even when another owner holds it. */
  force?: boolean;
}

export interface ObjectInfo {
  /** Stored length in bytes. Reads past it return zeros. */
  size: number;
  /**
   * When the object was last written, ms since the epoch, where the backend can tell (files:
   * the file's mtime; RADOS: the object's mtime, whole seconds). Absent when it cannot (a blocker
   * reached over the segment). Garbage collection uses it to leave young objects alone.
   */
  mtime?: number;
}

/** What `Blocker.space` tells. */
export interface StorageSpace {
  /** Bytes a new object may still take. */
  available: number;
  /** Bytes of the whole storage. */
  total: number;
  /** Where that was measured (a directory, a pool). */
  where: string;
}

export interface Blocker {
  readonly specificationVersion: 'v1';
  /** Short kind name, e.g. "file" or "rados". */
  readonly kind: string;
  /** Lock owner identity written into locks, `<hostname>_<instance>`. */
  readonly identity: string;

  /**
   * Reads `length` bytes at `offset`. Bytes past the stored end read as zeros (the returned buffer
   * always has `length` bytes). A missing object fails with ENOENT_OBJECT unless `missingOk`.
   */
  read(name: string, offset: number, length: number, options?: ReadOptions): Promise<Buffer>;

  /**
   * Writes `data` at `offset`, creating the object if needed. Durable when the promise resolves,
   * unless the blocker was configured for write-back: then it is durable after the next `flush()`
   * resolves, or at once with `{ durable: true }`.
   */
  write(name: string, offset: number, data: Uint8Array, options?: WriteOptions): Promise<void>;

  /**
   * Replaces the whole object with `data` (truncating anything beyond), creating it if needed.
   * Durable when the promise resolves.
   */
  writeFull(name: string, data: Uint8Array): Promise<void>;

  /**
   * Copies object `src` to `dst` (replacing dst). Durable when resolved. A missing source fails
   * with ENOENT_OBJECT unless `missingOk`, in which case dst becomes empty.
   */
  copy(src: string, dst: string, options?: ReadOptions): Promise<void>;

  /** Deletes an object. Resolves `false` when it did not exist. */
  delete(name: string): Promise<boolean>;

  /** Size of an object, or null when it does not exist. */
  info(name: string): Promise<ObjectInfo | null>;

  /** True when the object exists. */
  exists(name: string): Promise<boolean>;

  /** Names of all objects whose name starts with `prefix` (lock objects excluded), in no set order. */
  list(prefix?: string): AsyncIterable<string>;

  /**
   * Takes the lock named `name` (stored as `<name>_lock`) for this blocker's identity. Idempotent
   * for the same identity. Fails with ELOCKED when another owner holds it and `wait` is not set;
   * with `wait`, blocks until free or `timeoutMs`, then ETIMEDOUT.
   */
  acquire(name: string, options?: AcquireOptions): Promise<AcquireResult>;

  /**
   * The lock's record (owner, holding process, lease), or null when it is free. A lock written
   * by an older version (its owner alone) reads as held by the host.
   */
  lockInfo(name: string): Promise<LockRecord | null>;

  /**
   * Extends the lease of a lock this process holds. ELOCKED when another owner (or another
   * process) holds it now: the lock was lost, and the caller must stop writing; ENOTLOCKED when
   * it is free.
   */
  renew(name: string, options?: RenewOptions): Promise<LockRecord>;

  /**
   * Takes the lock away from its holder, whoever it is, after making sure the holder can no longer
   * write (fencing): RADOS blocklists the holder's client; a file blocker takes the lock and waits
   * for the holder's lease to end (a live holder finds it lost at its next renewal and stops;
   * one that does not renew stops at the end of its lease). The lock is left free. ENOTLOCKED when
   * it is free; EBUSY when the holder is a live process on this host (stop it instead);
   * ETIMEDOUT when the holder kept it past `waitMs`.
   */
  breakLock(name: string, options?: BreakOptions): Promise<BreakReport>;

  /**
   * Asks the holder of lock `name` to let it go (cooperative hand-over, as RBD's exclusive lock):
   * records a release request the holder's next `renew` reports (`releaseRequested`) and wakes
   * its `watchRelease` listener where the backend can (files: a request file next to the lock,
   * seen by inotify; RADOS: notify on the lock object). Resolves with the lock's record as it was
   * asked (null: it is free, nothing was asked). The request is dropped when the lock changes hands.
   */
  requestRelease(name: string, options?: RequestReleaseOptions): Promise<LockRecord | null>;

  /**
   * Calls `listener` soon after a release of lock `name` is requested: a hint (the holder's
   * `renew` reports the request in any case), so a holder hands over in milliseconds rather than
   * at its next renewal. Returns the function that stops watching. Absent where a backend cannot
   * watch (the request then waits for the renewal).
   */
  watchRelease?(name: string, listener: () => void): () => void;

  /**
   * Releases the lock. Fails with ENOTLOCKED when it is not held, and with ELOCKED when another
   * owner holds it and `force` is not set.
   */
  release(name: string, options?: ReleaseOptions): Promise<void>;

  /** The identity holding the lock, or null when it is free. */
  lockOwner(name: string): Promise<string | null>;

  /**
   * Content-addresses object `name` (reference §2.7): reads its first `size` bytes (zeros past
   * the end; a missing object is all zeros), strips trailing zero bytes, and names the rest by
   * the lowercase hex SHA-256 H (the Pithos block hash; an all-zero block gives the zero-block
   * name and stores nothing). Stores the stripped bytes as object H unless H already exists,
   * atomically (a reader never sees a partial H), and resolves with H in every case.
   * Optional: blockers that cannot hash leave it undefined (callers fail with ENOTSUP).
   */
  hash?(name: string, size: number): Promise<string>;

  /**
   * Like `read` with `missingOk`, into the caller's buffer: `target.length` bytes at `offset`
   * (zeros past the stored end, all zeros for a missing object). Optional: it lets a reader that
   * streams many blocks reuse a few warm buffers instead of faulting in fresh memory per read.
   * Use `readIntoBuffer`, which falls back to `read` for blockers without it.
   */
  readInto?(name: string, offset: number, target: Buffer): Promise<void>;

  /**
   * Free and total bytes of the storage this blocker writes to (a file blocker: `statfs` of its
   * directory, `available` as an unprivileged writer sees it). Optional: blockers that cannot tell
   * cheaply leave it undefined, and callers skip the check (the RADOS blocker: use `ceph df`).
   */
  space?(): Promise<StorageSpace>;

  /**
   * Makes every acknowledged write durable, whichever process-local write it came from (a no-op
   * for blockers that sync each write).
   */
  flush(): Promise<void>;

  /** Releases resources (fd cache, connections). Locks stay held: they belong to the identity. */
  close(): Promise<void>;
}

export type { LockProcess, LockRecord, ReleaseRequest } from './holder.js';

/** The suffix the contract appends to lock names (reference §1.2). */
export const LOCK_SUFFIX = '_lock';

/** Longest lock-owner identity, in bytes (the original's uniquestr limit). */
export const MAX_IDENTITY_BYTES = 128;

/**
 * The lock-owner identity a blocker uses: the given one, or `<hostname>_embedded`. Every blocker
 * applies the same rule: 1..128 bytes, no control characters (it is written into lock files and
 * lock descriptions, and `cat` must show it). `who` names the blocker in the TypeError.
 */
export function resolveIdentity(who: string, identity: string | undefined, host: string): string {
  const id = identity ?? `${host}_embedded`;
  if (
    typeof id !== 'string' ||
    id === '' ||
    Buffer.byteLength(id) > MAX_IDENTITY_BYTES ||
    /[\x00-\x1f\x7f]/.test(id)
  ) {
    throw new TypeError(
      `${who}: "identity" must be 1..${MAX_IDENTITY_BYTES} bytes without control characters`,
    );
  }
  return id;
}

/** `b.readInto(name, offset, target)` where the blocker offers it, else a `read` copied into target. */
export async function readIntoBuffer(
  b: Blocker,
  name: string,
  offset: number,
  target: Buffer,
): Promise<void> {
  if (b.readInto) await b.readInto(name, offset, target);
  else (await b.read(name, offset, target.length, { missingOk: true })).copy(target);
}
