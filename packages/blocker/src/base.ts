/**
 * AbstractBlocker: what every blocker shares, in the style of abstract-level. Its public methods
 * (the Blocker contract) check their arguments with the contract's rules (rules.ts), refuse calls
 * after close() with ECLOSED, count the calls in flight so that close() can wait for them, run
 * the lock logic (the waiting acquire, the owner check of a release), and then call the
 * backend's protected `_read`, `_write`, `_lockSession`, ... with arguments already known good.
 * So every backend refuses the same misuse with the same error, and a backend is only its store.
 *
 * Hot path: `read`, `readInto` and `write` call `_read` / `_readInto` / `_write` synchronously
 * once the checks pass and return its promise with the call count settled on it (one `.then`, no
 * extra await); so those three must return a promise and never throw (an async method does).
 * The other methods are plain async functions.
 *
 * Locks (one place for acquire, release and the owner, so that holder records and fencing can be
 * added here): a backend offers one attempt at a time (`_lockSession`), the holder of a lock
 * (`_lockHolder`) and the removal of a lock (`_unlock`); the base decides what an acquire or a
 * release means. A waiting acquire sleeps `lockPollMs` between attempts, or as the backend's
 * session says (RADOS wakes on watch/notify); close() ends every wait with ECLOSED.
 */
import {
  type AcquireOptions,
  type Blocker,
  LOCK_SUFFIX,
  type ObjectInfo,
  type ReadOptions,
  type ReleaseOptions,
  type WriteOptions,
} from './contract.js';
import { CallGate } from './gate.js';
import {
  checkName,
  checkPrefix,
  closedError,
  countError,
  dataError,
  isValidObjectName,
  lengthError,
  lockedError,
  lockTimeoutError,
  type NameRole,
  nameError,
  notLockedError,
  notOwnerError,
  targetError,
  timeoutError,
} from './rules.js';

/** Who holds a lock. Backends may carry more (RADOS: its lockers) for their `_unlock`. */
export interface LockHolder {
  /** The owner identity. */
  readonly owner: string;
}

/** One acquire's attempts at a lock (AbstractBlocker._lockSession). */
export interface LockSession {
  /** Tries once: null when the lock is ours now (also when it already was), else its owner. */
  attempt(): Promise<string | null>;
  /**
   * Between the attempts of a waiting acquire: resolves when another attempt is worth it, at the
   * latest after `ms` (default: the base's sleep of `lockPollMs`). Use `sleep()`, which close()
   * ends early.
   */
  pause?(ms: number): Promise<void>;
  /** After the last attempt, whatever its outcome (removes temp files, stops watching). */
  end?(): Promise<void>;
}

export interface AbstractBlockerOptions {
  /** Short kind name, e.g. "file". */
  kind: string;
  /** Lock owner identity, already checked (resolveIdentity). */
  identity: string;
  /** Default timeout of a waiting acquire, in ms. Default 30000. */
  lockTimeoutMs?: number;
  /** Sleep between the attempts of a waiting acquire, in ms. Default 100. */
  lockPollMs?: number;
}

export abstract class AbstractBlocker<H extends LockHolder = LockHolder> implements Blocker {
  readonly specificationVersion = 'v1' as const;
  readonly kind: string;
  readonly identity: string;
  /** Default timeout of a waiting acquire, in ms. */
  readonly lockTimeoutMs: number;
  /** Sleep between the attempts of a waiting acquire, in ms. */
  readonly lockPollMs: number;

  // Plain (not #private) fields: RadosBlocker.withIdentity views reach them through the prototype.
  private readonly gate = new CallGate(closedError);
  /** Wake-ups of sleeping waits, called by close(). */
  private readonly sleepers = new Set<() => void>();
  private closing: Promise<void> | null = null;
  /** Settles a counted call: made once, so the hot path allocates no closure per call. */
  private readonly leaveOk = <T>(v: T): T => {
    this.gate.leave();
    return v;
  };
  private readonly leaveErr = (e: unknown): never => {
    this.gate.leave();
    throw e;
  };

  constructor(opts: AbstractBlockerOptions) {
    this.kind = opts.kind;
    this.identity = opts.identity;
    this.lockTimeoutMs = opts.lockTimeoutMs ?? 30_000;
    this.lockPollMs = opts.lockPollMs ?? 100;
  }

  // ------------------------------------------------------------------ objects (the hot path)

  read(name: string, offset: number, length: number, options?: ReadOptions): Promise<Buffer> {
    return (
      this.refuse(name, offset, lengthError(length)) ??
      this._read(name, offset, length, options?.missingOk === true).then(this.leaveOk, this.leaveErr)
    );
  }

  /**
   * Like `read` with `missingOk`, into the caller's buffer: `target.length` bytes at `offset`
   * (zeros past the stored end, all zeros for a missing object).
   */
  readInto(name: string, offset: number, target: Buffer): Promise<void> {
    return (
      this.refuse(name, offset, targetError(target)) ??
      this._readInto(name, offset, target).then(this.leaveOk, this.leaveErr)
    );
  }

  write(name: string, offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    return (
      this.refuse(name, offset, dataError(data)) ??
      this._write(name, offset, data, options?.durable === true).then(this.leaveOk, this.leaveErr)
    );
  }

  /**
   * The hot path's checks, in the order every call makes them (closed, name, offset, then the
   * third argument's `bad`): a rejected promise when one fails, else null with the call counted.
   */
  private refuse(name: unknown, offset: unknown, bad: Error | null): Promise<never> | null {
    const e = this.gate.closed ? closedError() : (nameError(name) ?? countError(offset, 'offset') ?? bad);
    if (e !== null) return Promise.reject(e);
    this.gate.enter();
    return null;
  }

  // ------------------------------------------------------------------ objects

  writeFull(name: string, data: Uint8Array): Promise<void> {
    return this.counted(name, 'object name', dataError(data), () => this._writeFull(name, data));
  }

  copy(src: string, dst: string, options?: ReadOptions): Promise<void> {
    const bad = nameError(dst, 'destination object name');
    return this.counted(src, 'source object name', bad, () =>
      this._copy(src, dst, options?.missingOk === true),
    );
  }

  delete(name: string): Promise<boolean> {
    return this.counted(name, 'object name', null, () => this._delete(name));
  }

  async info(name: string): Promise<ObjectInfo | null> {
    const size = await this.counted(name, 'object name', null, () => this._info(name));
    return size === null ? null : { size };
  }

  async exists(name: string): Promise<boolean> {
    return (await this.info(name)) !== null;
  }

  /**
   * Not counted as a call in flight (an abandoned iterator would hold close() forever): instead
   * every name is checked against close(). Only object names come out: never a lock, never a
   * temporary or foreign name a backend's store may hold.
   */
  async *list(prefix = ''): AsyncIterable<string> {
    this.assertOpen();
    checkPrefix(prefix);
    for await (const n of this._list(prefix)) {
      this.assertOpen();
      if (n.startsWith(prefix) && !n.endsWith(LOCK_SUFFIX) && isValidObjectName(n)) yield n;
    }
  }

  hash(name: string, size: number): Promise<string> {
    return this.counted(name, 'object name', lengthError(size, 'size'), () => this._hash(name, size));
  }

  // ------------------------------------------------------------------ locks

  acquire(name: string, options?: AcquireOptions): Promise<void> {
    const t = options?.timeoutMs;
    const bad = t === undefined ? null : timeoutError(t, name);
    const wait = options?.wait === true;
    return this.counted(name, 'lock name', bad, () => this.acquireLock(name, wait, t ?? this.lockTimeoutMs));
  }

  release(name: string, options?: ReleaseOptions): Promise<void> {
    return this.counted(name, 'lock name', null, () => this._release(name, options?.force === true));
  }

  async lockOwner(name: string): Promise<string | null> {
    const holder = await this.counted(name, 'lock name', null, () => this._lockHolder(name));
    return holder?.owner ?? null;
  }

  /**
   * The calls off the hot path: checks (closed, then `name` in its `role`, then `bad`, another
   * argument's error), then `run`, counted as a call in flight until it settles.
   */
  private async counted<T>(
    name: unknown,
    role: NameRole,
    bad: Error | null,
    run: () => Promise<T>,
  ): Promise<T> {
    this.enter();
    try {
      checkName(name, role);
      if (bad !== null) throw bad;
      return await run();
    } finally {
      this.leave();
    }
  }

  /** Tries, and with `wait` tries again until the lock is ours, the timeout or close(). */
  private async acquireLock(name: string, wait: boolean, timeoutMs: number): Promise<void> {
    const session = this._lockSession(name, wait);
    try {
      let owner = await session.attempt();
      if (owner === null) return;
      if (!wait) throw lockedError(name, owner);
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const left = deadline - Date.now();
        if (left <= 0) throw lockTimeoutError(name, owner, timeoutMs);
        this.assertOpen();
        await (session.pause ? session.pause(left) : this.sleep(Math.min(this.lockPollMs, left)));
        this.assertOpen();
        owner = await session.attempt();
        if (owner === null) return;
      }
    } finally {
      await session.end?.();
    }
  }

  /**
   * Releases lock `name`: ENOTLOCKED when nobody holds it, ELOCKED when another identity does and
   * `force` is not set. A backend whose server decides this itself (SegmentBlocker) overrides it.
   */
  protected async _release(name: string, force: boolean): Promise<void> {
    const holder = await this._lockHolder(name);
    if (holder === null) throw notLockedError(name);
    if (holder.owner !== this.identity && !force) throw notOwnerError(name, holder.owner, this.identity);
    if (!(await this._unlock(name, holder))) throw notLockedError(name);
  }

  // ------------------------------------------------------------------ lifecycle

  async flush(): Promise<void> {
    this.enter();
    try {
      await this._flush();
    } finally {
      this.leave();
    }
  }

  /**
   * Refuses new calls (ECLOSED), ends waiting acquires (ECLOSED), waits for the calls in flight,
   * then releases the backend's resources (`_close`). Locks stay held: they belong to the
   * identity. Idempotent.
   */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.gate.close();
    for (const wake of [...this.sleepers]) wake();
    this.closing = this.gate.drained().then(() => this._close());
    return this.closing;
  }

  // ------------------------------------------------------------------ for backends

  /** True once close() was called. */
  protected get closed(): boolean {
    return this.gate.closed;
  }

  /** Throws ECLOSED after close(). */
  protected assertOpen(): void {
    if (this.gate.closed) throw closedError();
  }

  /** Counts a call in flight (ECLOSED after close()); pair with leave(). For a backend's own methods. */
  protected enter(): void {
    this.gate.enter();
  }

  protected leave(): void {
    this.gate.leave();
  }

  /** Resolves after `ms`, or at once when close() is called; `onWake` gets the early wake-up. */
  protected sleep(ms: number, onWake?: (wake: () => void) => void): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.sleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.sleepers.add(done);
      onWake?.(done);
    });
  }

  // ------------------------------------------------------------------ the backend

  /** `length` bytes at `offset`, zeros past the end; ENOENT_OBJECT for a missing object unless `missingOk`. */
  protected abstract _read(name: string, offset: number, length: number, missingOk: boolean): Promise<Buffer>;

  /** `target.length` bytes at `offset` into `target`, zeros past the end or for a missing object. */
  protected _readInto(name: string, offset: number, target: Buffer): Promise<void> {
    return this._read(name, offset, target.length, true).then((b) => {
      b.copy(target);
    });
  }

  /** `durable`: durable when resolved also in write-back mode (NBD FUA). */
  protected abstract _write(name: string, offset: number, data: Uint8Array, durable: boolean): Promise<void>;

  protected abstract _writeFull(name: string, data: Uint8Array): Promise<void>;

  /** ENOENT_OBJECT (missingSourceError) for a missing `src` unless `missingOk` (then dst becomes empty). */
  protected abstract _copy(src: string, dst: string, missingOk: boolean): Promise<void>;

  protected abstract _delete(name: string): Promise<boolean>;

  /** The object's size, or null when it does not exist. */
  protected abstract _info(name: string): Promise<number | null>;

  /** Names starting with `prefix`; the base drops lock names and anything that is no object name. */
  protected abstract _list(prefix: string): AsyncIterable<string>;

  protected abstract _hash(name: string, size: number): Promise<string>;

  /** The attempts of one acquire of lock `name` (`wait`: a waiting acquire will follow up). */
  protected abstract _lockSession(name: string, wait: boolean): LockSession;

  /** Who holds lock `name`, or null when it is free. */
  protected abstract _lockHolder(name: string): Promise<H | null>;

  /** Removes lock `name` whoever holds it (`holder`, as just read); false when it was gone already. */
  protected abstract _unlock(name: string, holder: H): Promise<boolean>;

  protected abstract _flush(): Promise<void>;

  /** After close(), once no call is in flight: releases fds, connections, ... */
  protected abstract _close(): Promise<void>;
}
