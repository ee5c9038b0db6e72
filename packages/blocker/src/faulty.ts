import { ArchipelagoError } from '@archipelago/libxseg';
import type {
  AcquireOptions,
  AcquireResult,
  Blocker,
  BreakOptions,
  BreakReport,
  ObjectInfo,
  ReadOptions,
  ReleaseOptions,
  RenewOptions,
  RequestReleaseOptions,
  StorageSpace,
  WriteOptions,
} from './contract.js';
import type { LockRecord } from './holder.js';

/** Which calls fail. A rule matches on the method and, optionally, the object name. */
export interface FaultPlan {
  method:
    | 'read'
    | 'write'
    | 'writeFull'
    | 'copy'
    | 'delete'
    | 'acquire'
    | 'release'
    | 'renew'
    | 'breakLock'
    | 'requestRelease'
    | 'hash';
  /** Only names matching this fail (default: every name). */
  match?: RegExp;
  /** Let this many matching calls through first (default 0). */
  after?: number;
  /** How many matching calls fail once armed (default: all of them). */
  times?: number;
  /** What the failure looks like (default: EIO "injected fault"). */
  error?: () => Error;
}

/**
 * A blocker that forwards every call to a real one and fails the calls a plan names: the
 * fault-injection wrapper for crash and error-path tests (LevelDB's EnvWrapper/ErrorEnv idea).
 * It never replaces a real blocker in a test; it wraps one.
 */
export class FaultyBlocker implements Blocker {
  readonly specificationVersion = 'v1' as const;
  readonly kind: string;
  readonly identity: string;
  private readonly plans: Array<FaultPlan & { seen: number; failed: number }> = [];
  /** Every failure injected so far, as `method name`. */
  readonly injected: string[] = [];
  /** Every call that changes the store, in order, as `method name` (what `crashAfter` counts). */
  readonly changes: string[] = [];
  /** After this many changes, every call fails: the process "crashed" (null: no crash armed). */
  private crashAt: number | null = null;

  /** Present when the wrapped blocker can hash. */
  readonly hash?: (name: string, size: number) => Promise<string>;
  /** Present when the wrapped blocker has it; a `read` fault plan covers it too. */
  readonly readInto?: (name: string, offset: number, target: Buffer) => Promise<void>;
  /** Present when the wrapped blocker has it. */
  readonly space?: () => Promise<StorageSpace>;

  constructor(readonly inner: Blocker) {
    this.kind = `faulty(${inner.kind})`;
    this.identity = inner.identity;
    const innerHash = inner.hash?.bind(inner);
    if (innerHash) {
      this.hash = async (name: string, size: number) => {
        this.check('hash', name);
        return innerHash(name, size);
      };
    }
    const innerSpace = inner.space?.bind(inner);
    if (innerSpace) this.space = innerSpace;
    const innerReadInto = inner.readInto?.bind(inner);
    if (innerReadInto) {
      this.readInto = async (name: string, offset: number, target: Buffer) => {
        this.check('read', name);
        return innerReadInto(name, offset, target);
      };
    }
  }

  /** Arms a fault; returns a function that disarms it. */
  fail(plan: FaultPlan): () => void {
    const p = { ...plan, seen: 0, failed: 0 };
    this.plans.push(p);
    return () => {
      const i = this.plans.indexOf(p);
      if (i >= 0) this.plans.splice(i, 1);
    };
  }

  clear(): void {
    this.plans.length = 0;
  }

  /**
   * Simulates a crash right after the `n`-th call that changes the store (counting from now):
   * that call goes through, and every later call of any kind fails with EIO, as a killed
   * process makes no more calls (LevelDB's fault-injection env drops what follows a crash the
   * same way). `crashAfter(null)` disarms it.
   */
  crashAfter(n: number | null): void {
    this.crashAt = n === null ? null : this.changes.length + n;
  }

  /** True once a crash armed with `crashAfter` has happened. */
  get crashed(): boolean {
    return this.crashAt !== null && this.changes.length >= this.crashAt;
  }

  private readonly CHANGES = new Set<FaultPlan['method']>([
    'write',
    'writeFull',
    'copy',
    'delete',
    'acquire',
    'release',
    'renew',
    'breakLock',
    'hash',
  ]);

  /** After a crash (`crashAfter`), every call fails. */
  private checkCrash(method: string, name: string): void {
    if (this.crashed) {
      this.injected.push(`${method} ${name} (after the crash)`);
      throw new ArchipelagoError('EIO', `injected crash: ${method} ${name} after the process died`);
    }
  }

  private check(method: FaultPlan['method'], name: string): void {
    this.checkCrash(method, name);
    if (this.CHANGES.has(method)) this.changes.push(`${method} ${name}`);
    for (const p of this.plans) {
      if (p.method !== method || (p.match && !p.match.test(name))) continue;
      p.seen++;
      if (p.seen <= (p.after ?? 0)) continue;
      if (p.times !== undefined && p.failed >= p.times) continue;
      p.failed++;
      this.injected.push(`${method} ${name}`);
      throw p.error ? p.error() : new ArchipelagoError('EIO', `injected fault: ${method} ${name}`);
    }
  }

  async read(name: string, offset: number, length: number, options?: ReadOptions): Promise<Buffer> {
    this.check('read', name);
    return this.inner.read(name, offset, length, options);
  }
  async write(name: string, offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    this.check('write', name);
    return this.inner.write(name, offset, data, options);
  }
  async writeFull(name: string, data: Uint8Array): Promise<void> {
    this.check('writeFull', name);
    return this.inner.writeFull(name, data);
  }
  async copy(src: string, dst: string, options?: ReadOptions): Promise<void> {
    this.check('copy', dst);
    return this.inner.copy(src, dst, options);
  }
  async delete(name: string): Promise<boolean> {
    this.check('delete', name);
    return this.inner.delete(name);
  }
  async info(name: string): Promise<ObjectInfo | null> {
    this.checkCrash('info', name);
    return this.inner.info(name);
  }
  async exists(name: string): Promise<boolean> {
    this.checkCrash('exists', name);
    return this.inner.exists(name);
  }
  list(prefix?: string): AsyncIterable<string> {
    this.checkCrash('list', prefix ?? '');
    return this.inner.list(prefix);
  }
  async acquire(name: string, options?: AcquireOptions): Promise<AcquireResult> {
    this.check('acquire', name);
    return this.inner.acquire(name, options);
  }
  async renew(name: string, options?: RenewOptions): Promise<LockRecord> {
    this.check('renew', name);
    return this.inner.renew(name, options);
  }
  async breakLock(name: string, options?: BreakOptions): Promise<BreakReport> {
    this.check('breakLock', name);
    return this.inner.breakLock(name, options);
  }
  async requestRelease(name: string, options?: RequestReleaseOptions): Promise<LockRecord | null> {
    this.check('requestRelease', name);
    return this.inner.requestRelease(name, options);
  }
  watchRelease(name: string, listener: () => void): () => void {
    return this.inner.watchRelease?.(name, listener) ?? (() => {});
  }
  async lockInfo(name: string): Promise<LockRecord | null> {
    this.checkCrash('lockInfo', name);
    return this.inner.lockInfo(name);
  }
  async release(name: string, options?: ReleaseOptions): Promise<void> {
    this.check('release', name);
    return this.inner.release(name, options);
  }
  async lockOwner(name: string): Promise<string | null> {
    this.checkCrash('lockOwner', name);
    return this.inner.lockOwner(name);
  }
  flush(): Promise<void> {
    return this.inner.flush();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
