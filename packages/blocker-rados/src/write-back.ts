/**
 * The bookkeeping of a RadosBlocker in write-back mode (`sync: 'flush'`): writes handed to
 * librados and acknowledged to the caller before RADOS committed them. Nothing here talks to
 * RADOS; the blocker submits the writes and reports their outcome through `track`.
 *
 * - Bound: at most `maxBytes` bytes (and `maxOps` writes) acknowledged but not committed. A write
 *   that does not fit waits in `admit` (first come, first served) until earlier ones commit; a
 *   write larger than `maxBytes` is admitted alone, when nothing else is pending.
 * - Flush: `flush()` waits for every write tracked before it was called, then rejects with the
 *   first failure among them that no earlier flush reported (each failure is reported by the
 *   flushes running when it is first reported, and by none after them).
 * - Ordering: `pendingFor(name)` is what an operation on `name` must wait for to see every write
 *   acknowledged before it (null when there is none: nothing to wait for on the hot path).
 */
import { ArchipelagoError } from '@archipelago/libxseg';

/** One acknowledged write that RADOS has not committed yet (or that failed). */
interface Pending {
  readonly seq: number;
  readonly name: string;
  readonly bytes: number;
  /** Settles (never rejects) once librados reported the outcome. */
  done: Promise<void>;
}

interface Failure {
  readonly seq: number;
  readonly name: string;
  readonly error: ArchipelagoError;
  /** Flushes started when a flush first reported it (null: not reported yet). */
  reportedAt: number | null;
}

export class WriteBack {
  private bytes = 0;
  private ops = 0;
  private readonly waiting: Array<{ bytes: number; go: () => void }> = [];
  private readonly inflight = new Set<Pending>();
  private readonly byObject = new Map<string, Pending[]>();
  private seq = 0;
  private failures: Failure[] = [];
  /** Flushes started so far, and the start numbers of those still running. */
  private flushes = 0;
  private readonly running = new Set<number>();

  constructor(
    readonly maxBytes: number,
    readonly maxOps: number,
  ) {}

  /** Bytes acknowledged (or admitted) and not yet committed. */
  get pendingBytes(): number {
    return this.bytes;
  }

  /** Writes acknowledged (or admitted) and not yet committed. */
  get pendingWrites(): number {
    return this.ops;
  }

  /** Writes waiting for room. */
  get waitingWrites(): number {
    return this.waiting.length;
  }

  /**
   * Reserves room for a write of `bytes`: null when there is room now (the caller submits at
   * once), else a promise that resolves when there is. Pair with `track` (or `cancel`).
   */
  admit(bytes: number): Promise<void> | null {
    if (this.waiting.length === 0 && this.fits(bytes)) {
      this.bytes += bytes;
      this.ops++;
      return null;
    }
    return new Promise((go) => this.waiting.push({ bytes, go }));
  }

  /** Gives back room admitted for a write that was never submitted. */
  cancel(bytes: number): void {
    this.release(bytes);
  }

  /**
   * Follows a submitted write of `bytes` (admitted before) to object `name` until `op` settles;
   * a failure becomes `toError(reason)` and is kept for the next flush.
   */
  track(name: string, bytes: number, op: Promise<unknown>, toError: (e: unknown) => ArchipelagoError): void {
    const p: Pending = { seq: ++this.seq, name, bytes, done: Promise.resolve() };
    p.done = op.then(
      () => this.settle(p, null),
      (e: unknown) => this.settle(p, toError(e)),
    );
    this.inflight.add(p);
    const list = this.byObject.get(name);
    if (list) list.push(p);
    else this.byObject.set(name, [p]);
  }

  /** What an operation on `name` waits for to see every acknowledged write of it; null if none. */
  pendingFor(name: string): Promise<unknown> | null {
    if (this.byObject.size === 0) return null;
    const list = this.byObject.get(name);
    if (!list) return null;
    return list.length === 1 ? list[0]!.done : Promise.all(list.map((p) => p.done));
  }

  /** Like `pendingFor`, for every object whose name starts with `prefix` (list). */
  pendingWithPrefix(prefix: string): Promise<unknown> | null {
    if (this.byObject.size === 0) return null;
    const waits: Promise<void>[] = [];
    for (const [name, list] of this.byObject) {
      if (name.startsWith(prefix)) for (const p of list) waits.push(p.done);
    }
    return waits.length === 0 ? null : Promise.all(waits);
  }

  /**
   * Waits for every write tracked so far; rejects when one of them failed (ETIMEDOUT, ENOSPC,
   * EIO, ...: the first failure's code, its object named) unless a flush that ended before this
   * one started reported it already.
   */
  async flush(): Promise<void> {
    const upTo = this.seq;
    const me = ++this.flushes;
    this.running.add(me);
    try {
      if (this.inflight.size > 0) await Promise.all([...this.inflight].map((p) => p.done));
      const mine = this.failures.filter(
        (f) => f.seq <= upTo && (f.reportedAt === null || me <= f.reportedAt),
      );
      if (mine.length === 0) return;
      for (const f of mine) f.reportedAt ??= this.flushes;
      throw flushError(mine);
    } finally {
      this.running.delete(me);
      this.prune();
    }
  }

  private fits(bytes: number): boolean {
    return this.ops === 0 || (this.bytes + bytes <= this.maxBytes && this.ops < this.maxOps);
  }

  private settle(p: Pending, error: ArchipelagoError | null): void {
    this.inflight.delete(p);
    const list = this.byObject.get(p.name);
    if (list) {
      const i = list.indexOf(p);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.byObject.delete(p.name);
    }
    if (error) this.failures.push({ seq: p.seq, name: p.name, error, reportedAt: null });
    this.release(p.bytes);
  }

  private release(bytes: number): void {
    this.bytes -= bytes;
    this.ops--;
    while (this.waiting.length > 0 && this.fits(this.waiting[0]!.bytes)) {
      const w = this.waiting.shift()!;
      this.bytes += w.bytes;
      this.ops++;
      w.go();
    }
  }

  /** Forgets reported failures that no running flush may still report. */
  private prune(): void {
    if (this.failures.length === 0) return;
    let oldest = Number.POSITIVE_INFINITY;
    for (const n of this.running) oldest = Math.min(oldest, n);
    this.failures = this.failures.filter((f) => f.reportedAt === null || oldest <= f.reportedAt);
  }
}

function flushError(failed: Failure[]): ArchipelagoError {
  const first = failed[0]!;
  const more =
    failed.length > 1
      ? ` (${failed.length - 1} more acknowledged write${failed.length > 2 ? 's' : ''} failed too)`
      : '';
  return new ArchipelagoError(
    first.error.code,
    `flush: a write acknowledged before RADOS committed it failed: ${first.error.message}${more}`,
    { cause: first.error, details: { ...first.error.details, name: first.name, failed: failed.length } },
  );
}
