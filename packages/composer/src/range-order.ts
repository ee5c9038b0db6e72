/** An admitted I/O: wait for `ready` (unless `blocked` is false), then call `done()` exactly once. */
export interface Ticket {
  /** Settles once every earlier overlapping I/O it must follow is done (already settled when none). */
  ready: Promise<void>;
  /** False when nothing had to be waited for: the I/O may start at once, without awaiting `ready`. */
  blocked: boolean;
  done(): void;
}

interface Pending {
  start: number;
  end: number;
  write: boolean;
  /** Made only when a later I/O has to wait for this one (most never overlap anything). */
  finished: Promise<void> | null;
  finish: (() => void) | null;
}

const READY: Promise<void> = Promise.resolve();
const noop = (): void => {};

class Admitted implements Ticket {
  constructor(
    private readonly order: RangeOrder,
    private readonly me: Pending,
    readonly ready: Promise<void>,
    readonly blocked: boolean,
  ) {}

  done(): void {
    this.order.remove(this.me);
  }
}

/**
 * Orders overlapping I/O by submission: a write waits for every earlier overlapping I/O that is
 * still running, and a read waits for earlier overlapping writes. Non-overlapping I/O runs
 * concurrently. In-flight counts are small (bounded by the endpoint's queue depth), so a scan of
 * the pending list is cheaper than an interval tree. An I/O that overlaps nothing costs no promise.
 */
export class RangeOrder {
  private pending: Pending[] = [];

  admit(offset: number, length: number, write: boolean): Ticket {
    const start = offset;
    const end = offset + Math.max(length, 1);
    let waits: Promise<void>[] | null = null;
    for (const p of this.pending) {
      if (p.start < end && start < p.end && (write || p.write)) {
        if (p.finished === null) {
          p.finished = new Promise<void>((r) => {
            p.finish = r;
          });
        }
        if (waits === null) waits = [];
        waits.push(p.finished);
      }
    }
    const me: Pending = { start, end, write, finished: null, finish: null };
    this.pending.push(me);
    if (waits === null) return new Admitted(this, me, READY, false);
    return new Admitted(this, me, waits.length === 1 ? waits[0]! : Promise.all(waits).then(noop), true);
  }

  /** Ends `me` (Ticket.done): later I/O waiting for it may go. */
  remove(me: Pending): void {
    const i = this.pending.indexOf(me);
    if (i >= 0) this.pending.splice(i, 1);
    me.finish?.();
  }

  get size(): number {
    return this.pending.length;
  }
}
