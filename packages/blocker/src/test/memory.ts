/**
 * An in-memory blocker for tests: the contract with no storage underneath. Several MemoryBlockers
 * given the same MemoryStore share objects and locks, as several file blockers share a directory.
 * It is a test double for packages above the contract (mapper, composer) and the second
 * implementation that keeps the conformance suite honest; it is not for production use.
 */
import { createHash } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { AbstractBlocker, type LockSession } from '../base.js';
import { resolveIdentity } from '../contract.js';
import type { LockProcess, LockRecord, ReleaseRequest } from '../holder.js';
import { missingObjectError, missingSourceError } from '../rules.js';

/** Objects and locks shared by the MemoryBlockers built on it. */
export class MemoryStore {
  readonly objects = new Map<string, Buffer>();
  /** Lock name (without the suffix) → its record. */
  readonly locks = new Map<string, LockRecord>();
  /** Lock name → the release request pending for its holder. */
  readonly releaseRequests = new Map<string, ReleaseRequest>();
  /** Lock name → the listeners of `watchRelease`. */
  readonly releaseWatchers = new Map<string, Set<() => void>>();
}

export interface MemoryBlockerOptions {
  store?: MemoryStore;
  identity?: string;
  /** Default timeout of a waiting acquire, in ms. Default 30000. */
  lockTimeoutMs?: number;
  /** Poll interval of a waiting acquire, in ms. Default 10. */
  lockPollMs?: number;
  /** Default lease of a process hold, ms. Default 15000. */
  leaseMs?: number;
  /** The process locks are held for (default this one). */
  process?: LockProcess;
}

export class MemoryBlocker extends AbstractBlocker {
  readonly store: MemoryStore;

  constructor(opts: MemoryBlockerOptions = {}) {
    super({
      kind: 'memory',
      identity: resolveIdentity('MemoryBlocker', opts.identity ?? 'memory_1', ''),
      lockTimeoutMs: opts.lockTimeoutMs ?? 30_000,
      lockPollMs: opts.lockPollMs ?? 10,
      ...(opts.leaseMs !== undefined ? { leaseMs: opts.leaseMs } : {}),
      ...(opts.process !== undefined ? { process: opts.process } : {}),
    });
    this.store = opts.store ?? new MemoryStore();
  }

  protected async _read(name: string, offset: number, length: number, missingOk: boolean): Promise<Buffer> {
    const obj = this.store.objects.get(name);
    if (!obj) {
      if (missingOk) return Buffer.alloc(length);
      throw missingObjectError(name);
    }
    const out = Buffer.alloc(length);
    if (offset < obj.length) obj.copy(out, 0, offset, Math.min(obj.length, offset + length));
    return out;
  }

  protected async _write(name: string, offset: number, data: Uint8Array): Promise<void> {
    const obj = this.store.objects.get(name) ?? Buffer.alloc(0);
    const end = offset + data.byteLength;
    const next = end > obj.length ? Buffer.concat([obj, Buffer.alloc(end - obj.length)]) : obj;
    next.set(data, offset);
    this.store.objects.set(name, next);
  }

  protected async _writeFull(name: string, data: Uint8Array): Promise<void> {
    this.store.objects.set(name, Buffer.from(data));
  }

  protected async _copy(src: string, dst: string, missingOk: boolean): Promise<void> {
    const obj = this.store.objects.get(src);
    if (!obj && !missingOk) throw missingSourceError(src);
    this.store.objects.set(dst, Buffer.from(obj ?? Buffer.alloc(0)));
  }

  protected async _delete(name: string): Promise<boolean> {
    return this.store.objects.delete(name);
  }

  protected async _info(name: string): Promise<number | null> {
    return this.store.objects.get(name)?.length ?? null;
  }

  protected async *_list(prefix: string): AsyncIterable<string> {
    for (const name of [...this.store.objects.keys()]) if (name.startsWith(prefix)) yield name;
  }

  /** Contract `hash`: stores the stripped content under its SHA-256 unless present; returns it. */
  protected async _hash(name: string, size: number): Promise<string> {
    const obj = this.store.objects.get(name) ?? Buffer.alloc(0);
    let end = Math.min(size, obj.length);
    while (end > 0 && obj[end - 1] === 0) end--;
    const data = obj.subarray(0, end);
    const h = createHash('sha256').update(data).digest('hex');
    if (end > 0 && !this.store.objects.has(h)) this.store.objects.set(h, Buffer.from(data));
    return h;
  }

  protected _lockSession(name: string, _wait: boolean, record: () => LockRecord): LockSession {
    return {
      attempt: async () => {
        const cur = this.store.locks.get(name);
        if (cur !== undefined) return structuredClone(cur);
        this.store.locks.set(name, record());
        return null;
      },
    };
  }

  protected async _lockHolder(name: string): Promise<LockRecord | null> {
    const cur = this.store.locks.get(name);
    return cur === undefined ? null : structuredClone(cur);
  }

  protected async _replace(name: string, expected: LockRecord, next: LockRecord): Promise<boolean> {
    const cur = this.store.locks.get(name);
    if (cur === undefined || !isDeepStrictEqual(cur, expected)) return false;
    this.store.locks.set(name, structuredClone(next));
    return true;
  }

  protected async _unlock(name: string, holder: LockRecord): Promise<boolean> {
    const cur = this.store.locks.get(name);
    if (cur === undefined || !isDeepStrictEqual(cur, holder)) return false;
    return this.store.locks.delete(name);
  }

  watchRelease(name: string, listener: () => void): () => void {
    const set = this.store.releaseWatchers.get(name) ?? new Set<() => void>();
    this.store.releaseWatchers.set(name, set);
    const once = () => listener();
    set.add(once);
    return () => void set.delete(once);
  }

  protected override async _requestRelease(name: string, req: ReleaseRequest): Promise<void> {
    this.store.releaseRequests.set(name, { ...req });
    for (const l of this.store.releaseWatchers.get(name) ?? []) queueMicrotask(l);
  }

  protected override async _releaseRequest(name: string): Promise<ReleaseRequest | null> {
    const r = this.store.releaseRequests.get(name);
    return r === undefined ? null : { ...r };
  }

  protected override async _clearReleaseRequest(name: string): Promise<void> {
    this.store.releaseRequests.delete(name);
  }

  protected async _flush(): Promise<void> {}

  protected async _close(): Promise<void> {}
}
