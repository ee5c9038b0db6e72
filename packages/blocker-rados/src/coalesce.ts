/**
 * Write merging for a RadosBlocker in write-back mode (`sync: 'flush'`). librbd's writearound
 * cache sends a guest's sequential 1 MiB writes to the OSD as about half as many ops; without
 * merging, every write is an op of its own, and the OSD's CPU per op is what bounds sequential
 * writes on a small cluster.
 *
 * Rule: a write to an object that has no write in flight is submitted at once. A write to an
 * object that has one in flight waits (its bytes copied, since the caller was acknowledged and
 * may reuse its buffer) in that object's queue, where it extends the last queued run when it
 * starts where that run ends. When the object's last write in flight settles, each queued run
 * goes out as one op. Nothing here talks to RADOS: `submit` does.
 *
 * Ordering. RADOS applies one client's ops to one object in the order they were submitted, and
 * runs are submitted in the order their first write arrived; a write that does not extend the
 * last run starts a new one (never merged into an earlier run), so overlapping writes land in
 * the order they were made. An operation that must see the queued writes (a read, a durable
 * write, a flush) calls `kick`, which submits the queue at once instead of after the write in
 * flight.
 */

/** Submits one write op; the promise settles when RADOS committed it (or failed). */
export type SubmitWrite = (name: string, offset: number, data: Uint8Array) => Promise<void>;

/** The largest run merged into one op (16 MiB; the OSD's default osd_max_write_size is 90 MiB). */
export const MAX_RUN_BYTES = 16 * 2 ** 20;

interface Run {
  readonly offset: number;
  end: number;
  readonly chunks: Buffer[];
  readonly done: Promise<void>;
  resolve: () => void;
  reject: (e: unknown) => void;
}

interface ObjectState {
  inflight: number;
  runs: Run[];
}

export class Coalescer {
  private readonly objects = new Map<string, ObjectState>();
  /** Writes that joined a queue instead of going out at once, and ops those queues became. */
  queuedWrites = 0;
  mergedOps = 0;

  constructor(
    private readonly submit: SubmitWrite,
    readonly maxRunBytes = MAX_RUN_BYTES,
  ) {}

  /**
   * Submits `data` at `offset` of `name` now, or queues it behind the write in flight there.
   * Resolves once the op carrying these bytes committed. Throws only when an immediate submit
   * throws (nothing was queued then).
   */
  write(name: string, offset: number, data: Uint8Array): Promise<void> {
    const s = this.objects.get(name);
    if (s === undefined || (s.inflight === 0 && s.runs.length === 0) || data.byteLength === 0) {
      return this.send(name, s, offset, data);
    }
    this.queuedWrites++;
    const copy = Buffer.from(data); // the caller may reuse `data` once acknowledged
    const last = s.runs[s.runs.length - 1];
    if (
      last !== undefined &&
      last.end === offset &&
      last.end - last.offset + copy.length <= this.maxRunBytes
    ) {
      last.chunks.push(copy);
      last.end += copy.length;
      return last.done;
    }
    let resolve!: () => void;
    let reject!: (e: unknown) => void;
    const done = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    s.runs.push({ offset, end: offset + copy.length, chunks: [copy], done, resolve, reject });
    return done;
  }

  /** Submits what is queued for `name` now (before an operation that must see those writes). */
  kick(name: string): void {
    const s = this.objects.get(name);
    if (s !== undefined && s.runs.length > 0) this.drain(name, s);
  }

  /** `kick` for every object whose name starts with `prefix` ('' for all). */
  kickAll(prefix = ''): void {
    for (const [name, s] of this.objects)
      if (s.runs.length > 0 && name.startsWith(prefix)) this.drain(name, s);
  }

  /** Writes queued and not yet submitted. */
  get queuedRuns(): number {
    let n = 0;
    for (const s of this.objects.values()) n += s.runs.length;
    return n;
  }

  private send(
    name: string,
    known: ObjectState | undefined,
    offset: number,
    data: Uint8Array,
  ): Promise<void> {
    let s = known;
    if (s === undefined) {
      s = { inflight: 0, runs: [] };
      this.objects.set(name, s);
    }
    const op = this.submitted(name, s, offset, data);
    const state = s;
    const settled = () => {
      state.inflight--;
      if (state.inflight > 0) return;
      if (state.runs.length > 0) this.drain(name, state);
      else if (this.objects.get(name) === state) this.objects.delete(name);
    };
    op.then(settled, settled);
    return op;
  }

  /** Submits, counting the op in flight; a synchronous throw leaves nothing counted. */
  private submitted(name: string, s: ObjectState, offset: number, data: Uint8Array): Promise<void> {
    const op = this.submit(name, offset, data); // may throw: the caller sees it
    s.inflight++;
    return op;
  }

  private drain(name: string, s: ObjectState): void {
    const runs = s.runs;
    s.runs = [];
    for (const run of runs) {
      this.mergedOps++;
      const data = run.chunks.length === 1 ? run.chunks[0]! : Buffer.concat(run.chunks, run.end - run.offset);
      let op: Promise<void>;
      try {
        op = this.send(name, s, run.offset, data);
      } catch (e) {
        run.reject(e);
        continue;
      }
      op.then(run.resolve, run.reject);
    }
  }
}
