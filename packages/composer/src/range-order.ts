/** An admitted I/O: wait for `ready`, then call `done()` exactly once. */
export interface Ticket {
  ready: Promise<void>;
  done(): void;
}

interface Pending {
  start: number;
  end: number;
  write: boolean;
  finished: Promise<void>;
}

/**
 * Orders overlapping I/O by submission: a write waits for every earlier overlapping I/O that is
 * still running, and a read waits for earlier overlapping writes. Non-overlapping I/O runs
 * concurrently. In-flight counts are small (bounded by the endpoint's queue depth), so a scan of
 * the pending list is cheaper than an interval tree.
 */
export class RangeOrder {
  private pending: Pending[] = [];

  admit(offset: number, length: number, write: boolean): Ticket {
    const start = offset;
    const end = offset + Math.max(length, 1);
    const waits: Promise<void>[] = [];
    for (const p of this.pending) {
      if (p.start < end && start < p.end && (write || p.write)) waits.push(p.finished);
    }
    let finish!: () => void;
    const me: Pending = {
      start,
      end,
      write,
      finished: new Promise<void>((r) => {
        finish = r;
      }),
    };
    this.pending.push(me);
    return {
      ready: waits.length === 0 ? Promise.resolve() : Promise.all(waits).then(() => undefined),
      done: () => {
        const i = this.pending.indexOf(me);
        if (i >= 0) this.pending.splice(i, 1);
        finish();
      },
    };
  }

  get size(): number {
    return this.pending.length;
  }
}
