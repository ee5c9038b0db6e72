/**
 * An in-memory blocker for tests: the contract with no storage underneath. Several MemoryBlockers
 * given the same MemoryStore share objects and locks, as several file blockers share a directory.
 * It is a test double for packages above the contract (mapper, composer) and the second
 * implementation that keeps the conformance suite honest; it is not for production use.
 */
import { createHash } from 'node:crypto';
import { ArchipelagoError } from '@archipelago/libxseg';
import {
  type AcquireOptions,
  type Blocker,
  LOCK_SUFFIX,
  type ObjectInfo,
  type ReadOptions,
  type ReleaseOptions,
} from '../contract.js';

const NAME_RE = /^[A-Za-z0-9._-]{1,123}$/;

/** Objects and locks shared by the MemoryBlockers built on it. */
export class MemoryStore {
  readonly objects = new Map<string, Buffer>();
  /** Lock name (without the suffix) → owner identity. */
  readonly locks = new Map<string, string>();
}

export interface MemoryBlockerOptions {
  store?: MemoryStore;
  identity?: string;
  /** Default timeout of a waiting acquire, in ms. Default 30000. */
  lockTimeoutMs?: number;
  /** Poll interval of a waiting acquire, in ms. Default 10. */
  lockPollMs?: number;
}

export class MemoryBlocker implements Blocker {
  readonly specificationVersion = 'v1' as const;
  readonly kind = 'memory';
  readonly identity: string;
  readonly store: MemoryStore;
  private readonly lockTimeoutMs: number;
  private readonly lockPollMs: number;
  private closed = false;
  private readonly sleepers = new Set<() => void>();

  constructor(opts: MemoryBlockerOptions = {}) {
    this.store = opts.store ?? new MemoryStore();
    this.identity = opts.identity ?? 'memory_1';
    this.lockTimeoutMs = opts.lockTimeoutMs ?? 30_000;
    this.lockPollMs = opts.lockPollMs ?? 10;
  }

  async read(name: string, offset: number, length: number, options?: ReadOptions): Promise<Buffer> {
    this.check(name);
    count(offset, 'offset');
    count(length, 'length');
    const obj = this.store.objects.get(name);
    if (!obj) {
      if (options?.missingOk) return Buffer.alloc(length);
      throw new ArchipelagoError('ENOENT_OBJECT', `object ${name} does not exist`, { details: { name } });
    }
    const out = Buffer.alloc(length);
    if (offset < obj.length) obj.copy(out, 0, offset, Math.min(obj.length, offset + length));
    return out;
  }

  async write(name: string, offset: number, data: Uint8Array): Promise<void> {
    this.check(name);
    count(offset, 'offset');
    const obj = this.store.objects.get(name) ?? Buffer.alloc(0);
    const end = offset + data.byteLength;
    const next = end > obj.length ? Buffer.concat([obj, Buffer.alloc(end - obj.length)]) : obj;
    next.set(data, offset);
    this.store.objects.set(name, next);
  }

  async writeFull(name: string, data: Uint8Array): Promise<void> {
    this.check(name);
    this.store.objects.set(name, Buffer.from(data));
  }

  async copy(src: string, dst: string, options?: ReadOptions): Promise<void> {
    this.check(src);
    this.check(dst);
    const obj = this.store.objects.get(src);
    if (!obj && !options?.missingOk) {
      throw new ArchipelagoError('ENOENT_OBJECT', `cannot copy ${src}: the object does not exist`, {
        details: { name: src },
      });
    }
    this.store.objects.set(dst, Buffer.from(obj ?? Buffer.alloc(0)));
  }

  async delete(name: string): Promise<boolean> {
    this.check(name);
    return this.store.objects.delete(name);
  }

  async info(name: string): Promise<ObjectInfo | null> {
    this.check(name);
    const obj = this.store.objects.get(name);
    return obj ? { size: obj.length } : null;
  }

  async exists(name: string): Promise<boolean> {
    return (await this.info(name)) !== null;
  }

  async *list(prefix = ''): AsyncIterable<string> {
    this.check();
    for (const name of [...this.store.objects.keys()]) {
      if (name.startsWith(prefix) && !name.endsWith(LOCK_SUFFIX)) yield name;
    }
  }

  async acquire(name: string, options?: AcquireOptions): Promise<void> {
    this.check(name);
    const deadline = Date.now() + (options?.timeoutMs ?? this.lockTimeoutMs);
    for (;;) {
      const owner = this.store.locks.get(name);
      if (owner === undefined || owner === this.identity) {
        this.store.locks.set(name, this.identity);
        return;
      }
      if (!options?.wait) {
        throw new ArchipelagoError('ELOCKED', `lock ${name} is held by ${owner}`, {
          details: { lock: name, owner },
        });
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new ArchipelagoError('ETIMEDOUT', `lock ${name} is still held by ${owner}`, {
          details: { lock: name, owner },
        });
      }
      await this.sleep(Math.min(left, this.lockPollMs));
      this.check();
    }
  }

  async release(name: string, options?: ReleaseOptions): Promise<void> {
    this.check(name);
    const owner = this.store.locks.get(name);
    if (owner === undefined) {
      throw new ArchipelagoError('ENOTLOCKED', `lock ${name} is not held`, { details: { lock: name } });
    }
    if (owner !== this.identity && !options?.force) {
      throw new ArchipelagoError('ELOCKED', `lock ${name} is held by ${owner}`, {
        details: { lock: name, owner },
      });
    }
    this.store.locks.delete(name);
  }

  async lockOwner(name: string): Promise<string | null> {
    this.check(name);
    return this.store.locks.get(name) ?? null;
  }

  /** Contract `hash`: stores the stripped content under its SHA-256 unless present; returns it. */
  async hash(name: string, size: number): Promise<string> {
    this.check(name);
    count(size, 'size');
    const obj = this.store.objects.get(name) ?? Buffer.alloc(0);
    let end = Math.min(size, obj.length);
    while (end > 0 && obj[end - 1] === 0) end--;
    const data = obj.subarray(0, end);
    const h = createHash('sha256').update(data).digest('hex');
    if (end > 0 && !this.store.objects.has(h)) this.store.objects.set(h, Buffer.from(data));
    return h;
  }

  async flush(): Promise<void> {
    this.check();
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const wake of [...this.sleepers]) wake();
  }

  private check(name?: string): void {
    if (this.closed) throw new ArchipelagoError('ECLOSED', 'the memory blocker is closed');
    if (name !== undefined && (!NAME_RE.test(name) || name === '.' || name === '..')) {
      throw new ArchipelagoError('EINVAL_NAME', `invalid object name ${JSON.stringify(name)}`, {
        details: { name },
      });
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.sleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.sleepers.add(done);
    });
  }
}

function count(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new ArchipelagoError('EINVAL', `${what} must be an integer >= 0, got ${String(n)}`);
  }
}
