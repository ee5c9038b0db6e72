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
 * Locks (one place for acquire, release, renewal, take-over and breaking): a backend stores lock
 * records (holder.ts) and offers one attempt at a time to create a lock (`_lockSession`), the
 * record of a lock (`_lockHolder`), a compare-and-replace of a record (`_replace`), the removal of
 * a lock (`_unlock`) and, where it can, fencing of a holder (`_fence`: RADOS blocklists it); the
 * base decides what an acquire, a release, a renewal or a break means, and when a holder is dead
 * (`deadHolder`). A waiting acquire sleeps `lockPollMs` between attempts, or as the backend's
 * session says (RADOS wakes on watch/notify); close() ends every wait with ECLOSED.
 */
import { ArchipelagoError } from '@archipelago/libxseg';
import {
  type AcquireOptions,
  type AcquireResult,
  type Blocker,
  type BreakOptions,
  type BreakReport,
  LOCK_SUFFIX,
  type ObjectInfo,
  type ReadOptions,
  type ReleaseOptions,
  type RenewOptions,
  type RequestReleaseOptions,
  type WriteOptions,
} from './contract.js';
import { CallGate } from './gate.js';
import {
  currentProcess,
  deadHolder,
  describeHolder,
  type LockProcess,
  type LockRecord,
  type ReleaseRequest,
  sameHost,
  sameProcess,
} from './holder.js';
import {
  cannotFenceError,
  checkName,
  checkPrefix,
  closedError,
  countError,
  dataError,
  holderAliveError,
  isValidObjectName,
  lengthError,
  lockedError,
  lockLostError,
  lockTimeoutError,
  type NameRole,
  nameError,
  notLockedError,
  notOwnerError,
  targetError,
  timeoutError,
} from './rules.js';

/** Who holds a lock: its record. Backends may carry more (RADOS: its lockers) for `_unlock`. */
export type LockHolder = LockRecord;

/** One acquire's attempts at a lock (AbstractBlocker._lockSession). */
export interface LockSession {
  /**
   * Tries once to create the lock with the record `record()` gives now: null when this attempt
   * created it, else the record of the lock as it is (whoever holds it, this identity included).
   */
  attempt(): Promise<LockRecord | null>;
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
  /** Lease of a process hold, ms, when the caller names none. Default 15000; 0: no lease. */
  leaseMs?: number;
  /** The process locks are held for by default (tests). Default: this process. */
  process?: LockProcess;
}

export abstract class AbstractBlocker<H extends LockHolder = LockHolder> implements Blocker {
  readonly specificationVersion = 'v1' as const;
  readonly kind: string;
  readonly identity: string;
  /** Default timeout of a waiting acquire, in ms. */
  readonly lockTimeoutMs: number;
  /** Sleep between the attempts of a waiting acquire, in ms. */
  readonly lockPollMs: number;
  /** Default lease of a process hold, ms (0: none). */
  readonly leaseMs: number;
  /** The process this blocker holds locks for, unless a call says `as`. */
  readonly process: LockProcess;

  // Plain (not #private) fields: RadosBlocker.withIdentity views reach them through the prototype.
  private readonly gate = new CallGate(closedError);
  /** Wake-ups of sleeping waits, called by close(). */
  private readonly sleepers = new Set<() => void>();
  /** The last lock call of each lock name in flight here (`oneAtATime`). */
  private readonly lockCalls = new Map<string, Promise<unknown>>();
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
    this.leaseMs = opts.leaseMs ?? 15_000;
    this.process = opts.process ?? currentProcess();
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
    const got = await this.counted(name, 'object name', null, () => this._info(name));
    return got === null ? null : typeof got === 'number' ? { size: got } : got;
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

  acquire(name: string, options?: AcquireOptions): Promise<AcquireResult> {
    const t = options?.timeoutMs;
    const bad =
      t === undefined
        ? (leaseError(options?.leaseMs) ?? null)
        : (timeoutError(t, name) ?? leaseError(options?.leaseMs));
    const run = () => this.acquireLock(name, options ?? {}, t ?? this.lockTimeoutMs);
    // A waiting acquire is not serialized (it would hold the others of this name for its wait);
    // it only takes a lock nobody of this identity holds.
    return this.counted(name, 'lock name', bad, () =>
      options?.wait === true ? run() : this.oneAtATime(name, run),
    );
  }

  release(name: string, options?: ReleaseOptions): Promise<void> {
    return this.counted(name, 'lock name', null, () =>
      this.oneAtATime(name, () => this._release(name, options?.force === true)),
    );
  }

  async lockOwner(name: string): Promise<string | null> {
    return (await this.lockInfo(name))?.owner ?? null;
  }

  lockInfo(name: string): Promise<LockRecord | null> {
    return this.counted(name, 'lock name', null, () => this._lockHolder(name));
  }

  renew(name: string, options?: RenewOptions): Promise<LockRecord> {
    return this.counted(name, 'lock name', leaseError(options?.leaseMs), () =>
      this.oneAtATime(name, async () => {
        const self = options?.as ?? this.process;
        const cur = await this._lockHolder(name);
        if (cur === null) throw notLockedError(name);
        if (cur.owner !== this.identity || !sameProcess(cur.process, self))
          throw lockLostError(name, describeHolder(cur));
        const next = this.recordFor({ leaseMs: options?.leaseMs ?? this.leaseMs }, self);
        if (await this._replace(name, cur, next)) {
          const asked = await this._releaseRequest(name);
          return asked === null ? next : { ...next, releaseRequested: asked };
        }
        const now = await this._lockHolder(name);
        throw now === null ? notLockedError(name) : lockLostError(name, describeHolder(now));
      }),
    );
  }

  requestRelease(name: string, options?: RequestReleaseOptions): Promise<LockRecord | null> {
    const by = options?.by;
    const bad =
      by === undefined || (typeof by === 'string' && by !== '')
        ? null
        : new ArchipelagoError(
            'EINVAL',
            `requestRelease: "by" must be a non-empty string, got ${String(by)}`,
          );
    return this.counted(name, 'lock name', bad, async () => {
      const cur = await this._lockHolder(name);
      if (cur === null) return null;
      await this._requestRelease(name, { by: by ?? this.identity, at: Date.now() });
      return cur;
    });
  }

  breakLock(name: string, options?: BreakOptions): Promise<BreakReport> {
    return this.counted(name, 'lock name', null, () => this.breakHolder(name, options ?? {}));
  }

  /**
   * The calls off the hot path: checks (closed, then `name` in its `role`, then `bad`, another
   * argument's error), then `run`, counted as a call in flight until it settles.
   */
  protected async counted<T>(
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

  /**
   * Runs `fn` after the lock calls of `name` this blocker has in flight: a renewal reads the
   * record and then replaces it (two steps on a file system), so a release or a hand-back to the
   * host running between them would be undone by it (the lock back, for a process done with it).
   */
  private oneAtATime<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.lockCalls.get(name);
    // Idle: run at once (synchronously: a backend may rely on acquire calling its session so).
    const run = prev === undefined ? fn() : prev.then(fn, fn);
    const settled = run.then(
      () => {},
      () => {},
    );
    this.lockCalls.set(name, settled);
    void settled.then(() => {
      if (this.lockCalls.get(name) === settled) this.lockCalls.delete(name);
    });
    return run;
  }

  /** The record an acquire (or renewal) of `opts` writes for process `self`, as of now. */
  private recordFor(opts: Pick<AcquireOptions, 'hold' | 'leaseMs'>, self: LockProcess): LockRecord {
    if (opts.hold === 'host') return { owner: this.identity, process: null, expires: null };
    const lease = opts.leaseMs ?? this.leaseMs;
    return {
      owner: this.identity,
      process: self,
      expires: lease > 0 ? Date.now() + lease : null,
      ...(sameProcess(self, this.process) ? {} : { proxied: true }),
    };
  }

  /**
   * Tries, and with `wait` tries again until the lock is ours, the timeout or close(). A lock this
   * identity holds already is ours (its record rewritten to the hold asked for, unless another
   * live process of this host holds it); a provably dead holder's lock is fenced, broken and
   * taken over.
   */
  private async acquireLock(name: string, opts: AcquireOptions, timeoutMs: number): Promise<AcquireResult> {
    const self = opts.as ?? this.process;
    const want = () => this.recordFor(opts, self);
    const session = this._lockSession(name, opts.wait === true, want);
    /** A dead holder this acquire broke the lock of, to report once the lock is ours. */
    let broken: { previous: LockRecord; tookOver: string } | null = null;
    try {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const cur = await session.attempt();
        if (cur === null) {
          // A request left for the lock's previous holder is not addressed to this one.
          await this._clearReleaseRequest(name);
          return { took: true, previous: broken?.previous ?? null, tookOver: broken?.tookOver ?? null };
        }
        const settled = await this.settleHeld(name, cur, want, self);
        if (settled === 'again') continue;
        if ('broke' in settled) {
          broken = { previous: cur, tookOver: settled.broke };
          continue;
        }
        if (settled.result !== null) return settled.result;
        if (opts.wait !== true) throw lockedError(name, cur.owner);
        const left = deadline - Date.now();
        if (left <= 0) throw lockTimeoutError(name, cur.owner, timeoutMs);
        this.assertOpen();
        await (session.pause ? session.pause(left) : this.sleep(Math.min(this.lockPollMs, left)));
        this.assertOpen();
      }
    } finally {
      await session.end?.();
    }
  }

  /**
   * An acquire found lock `name` held as `cur`: `result` when the lock is (or became) ours, or
   * null when another live holder keeps it; `broke` (why the holder was dead) when this call
   * fenced and removed a dead holder's lock; 'again' when the lock changed meanwhile.
   */
  private async settleHeld(
    name: string,
    cur: LockRecord,
    want: () => LockRecord,
    self: LockProcess,
  ): Promise<{ result: AcquireResult | null } | { broke: string } | 'again'> {
    const dead = deadHolder(cur, self);
    if (cur.owner !== this.identity) {
      if (dead === null) return { result: null };
      await this._fence(name, cur as H);
      return (await this._unlock(name, cur)) ? { broke: dead } : 'again';
    }
    // This identity holds it: ours, idempotently. Rewrite the record to the hold asked for, except
    // over another live process of this host (it holds the volume; same-host serialization keeps
    // the two apart, not this lock).
    const next = want();
    const otherLive = cur.process !== null && !sameProcess(cur.process, self) && dead === null;
    if (otherLive && next.process !== null) return { result: { took: false, previous: cur, tookOver: null } };
    if (dead !== null && cur.process !== null && !sameHost(cur.process, self))
      await this._fence(name, cur as H);
    if (!sameRecord(cur, next) && !(await this._replace(name, cur as H, next))) return 'again';
    return {
      result:
        dead === null
          ? { took: false, previous: cur, tookOver: null }
          : { took: true, previous: cur, tookOver: dead },
    };
  }

  /** breakLock: fence the holder, then free the lock (see the contract). */
  private async breakHolder(name: string, opts: BreakOptions): Promise<BreakReport> {
    const self = this.process;
    for (;;) {
      const cur = await this._lockHolder(name);
      if (cur === null) throw notLockedError(name);
      const who = describeHolder(cur);
      let fenced: string | null;
      if (cur.process === null) fenced = 'held by the host: no process';
      else fenced = deadHolder(cur, self);
      if (fenced === null && cur.process !== null && sameHost(cur.process, self))
        throw holderAliveError(name, who);
      let cutOff: string | null = null;
      if (fenced === null) {
        cutOff = await this._fence(name, cur);
        // Cutting off the writer's client stops the holder only if that client is the holder's own.
        if (cutOff !== null && cur.proxied !== true) fenced = cutOff;
      }
      if (fenced === null) {
        // A live holder elsewhere that nothing can cut off (entirely): take the lock from it (it
        // finds the lock lost at its next renewal and stops) and wait until its lease has run out.
        // Until then nobody may take the lock over, even if this breaker dies (`notBefore`).
        if (cur.expires === null) throw cannotFenceError(name, who, 'it holds no lease to wait out');
        const ours = {
          ...this.recordFor({ leaseMs: cur.expires - Date.now() + this.leaseMs }, self),
          notBefore: cur.expires,
        };
        if (!(await this._replace(name, cur, ours))) continue;
        const waitMs = opts.waitMs ?? this.leaseMs + 1000;
        const left = cur.expires - Date.now();
        if (left > waitMs) {
          await this._unlock(name, ours);
          throw cannotFenceError(
            name,
            who,
            `its lease ends in ${left} ms, more than the ${waitMs} ms allowed`,
          );
        }
        if (left > 0) {
          opts.onWait?.(`the lease of ${who} to run out`, left);
          await this.sleep(left);
          this.assertOpen();
        }
        await this._unlock(name, ours);
        return {
          previous: cur,
          fenced: cutOff === null ? 'its lease ran out' : `${cutOff}, and its lease ran out`,
        };
      }
      if (await this._unlock(name, cur)) return { previous: cur, fenced };
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
    await this._clearReleaseRequest(name);
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
  protected abstract _info(name: string): Promise<number | ObjectInfo | null>;

  /** Names starting with `prefix`; the base drops lock names and anything that is no object name. */
  protected abstract _list(prefix: string): AsyncIterable<string>;

  protected abstract _hash(name: string, size: number): Promise<string>;

  /**
   * The attempts of one acquire of lock `name` (`wait`: a waiting acquire will follow up), each
   * creating the lock with the record `record()` gives at that moment.
   */
  protected abstract _lockSession(name: string, wait: boolean, record: () => LockRecord): LockSession;

  /** The record of lock `name`, or null when it is free. */
  protected abstract _lockHolder(name: string): Promise<H | null>;

  /**
   * Replaces the record of lock `name` with `next` if it still is `expected` (as `_lockHolder`
   * gave it): false when it changed (or is gone) meanwhile.
   */
  protected abstract _replace(name: string, expected: H, next: LockRecord): Promise<boolean>;

  /**
   * Removes lock `name` if it still is `holder` (as `_lockHolder` gave it, or as this blocker
   * wrote it); false when it changed or was gone already.
   */
  protected abstract _unlock(name: string, holder: LockRecord): Promise<boolean>;

  /**
   * Makes `holder` unable to write (RADOS: blocklists its client address) and says how, or null
   * when this backend cannot (file blockers: the base waits for the holder's lease instead).
   */
  protected _fence(_name: string, _holder: H): Promise<string | null> {
    return Promise.resolve(null);
  }

  /**
   * Records release request `req` for lock `name` and wakes its watchers where the backend can
   * (the cooperative hand-over). Default: nowhere to record it (ENOTSUP).
   */
  protected _requestRelease(name: string, _req: ReleaseRequest): Promise<void> {
    return Promise.reject(
      new ArchipelagoError('ENOTSUP', `${this.kind} blocker cannot ask the holder of ${name} to release it`),
    );
  }

  /** The release request pending for lock `name`, or null (default: none). */
  protected _releaseRequest(_name: string): Promise<ReleaseRequest | null> {
    return Promise.resolve(null);
  }

  /** Drops the release request of lock `name`, if any (the lock changed hands). */
  protected _clearReleaseRequest(_name: string): Promise<void> {
    return Promise.resolve();
  }

  protected abstract _flush(): Promise<void>;

  /** After close(), once no call is in flight: releases fds, connections, ... */
  protected abstract _close(): Promise<void>;
}

/** EINVAL unless a lease (ms) is a safe integer >= 0 (or not given). */
function leaseError(ms: unknown): Error | null {
  if (ms === undefined) return null;
  return countError(ms, 'leaseMs');
}

/** True when two records say the same (owner, process, lease). */
function sameRecord(a: LockRecord, b: LockRecord): boolean {
  return (
    a.owner === b.owner &&
    a.expires === b.expires &&
    (a.process === null ? b.process === null : sameProcess(a.process, b.process))
  );
}
