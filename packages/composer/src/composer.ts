import { type Blocker, readIntoBuffer } from '@archipelago/blocker';
import type { Logger, MapperApi, ObjectSegment, VolumeInfo } from '@archipelago/mapper';
import type { Extent, VolumeApi, WriteOptions, ZeroOptions } from './api.js';
import { RangeOrder } from './range-order.js';

export type { Extent, WriteOptions, ZeroOptions } from './api.js';

export interface ComposerOptions {
  /** The mapper: in process (`Mapper`) or a remote one (`SegmentMapper`). */
  mapper: MapperApi;
  /** Blocker holding data objects. */
  blockerb: Blocker;
  logger?: Logger;
}

/** Per-volume I/O state: in-flight count, freeze, and ordering of overlapping I/O. */
class VolumeState {
  inflight = 0;
  private drained: Array<() => void> = [];
  /** While set, new I/O waits (a snapshot, close or remove is draining the volume). */
  frozen: Promise<void> | null = null;
  readonly order = new RangeOrder();

  enter(): void {
    this.inflight++;
  }

  leave(): void {
    this.inflight--;
    if (this.inflight === 0) for (const d of this.drained.splice(0)) d();
  }

  drain(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((r) => this.drained.push(r));
  }
}

/**
 * The volume composer: turns a volume I/O into object I/Os through the mapper, runs them in
 * parallel and joins the result (vlmcd's job, reference §4.1).
 *
 * - any offset and length; split across objects; zero blocks are served without I/O;
 * - many I/Os in flight; overlapping I/Os take effect in the order they were submitted;
 * - snapshot, close and remove freeze the volume, drain in-flight I/O, run, and unfreeze.
 */
export class Composer implements VolumeApi {
  readonly mapper: MapperApi;
  private readonly blockerb: Blocker;
  private readonly volumes = new Map<string, VolumeState>();

  constructor(opts: ComposerOptions) {
    this.mapper = opts.mapper;
    this.blockerb = opts.blockerb;
  }

  private state(name: string): VolumeState {
    let s = this.volumes.get(name);
    if (!s) {
      s = new VolumeState();
      this.volumes.set(name, s);
    }
    return s;
  }

  /**
   * Runs one I/O: waits while the volume is frozen, counts it in flight, orders it by range. An
   * I/O that waits for nothing starts at once, in the caller's turn (no promise hop before `fn`).
   */
  private io<T>(
    name: string,
    offset: number,
    length: number,
    write: boolean,
    fn: () => Promise<T>,
  ): Promise<T> {
    const s = this.state(name);
    if (s.frozen) return this.ioAfterThaw(s, offset, length, write, fn);
    s.enter();
    const ticket = s.order.admit(offset, length, write);
    let run: Promise<T>;
    if (ticket.blocked) run = ticket.ready.then(fn);
    else {
      try {
        run = fn();
      } catch (e) {
        run = Promise.reject(e);
      }
    }
    return run.finally(() => {
      ticket.done();
      s.leave();
    });
  }

  /** `io` for a frozen volume: waits for the thaw first. */
  private async ioAfterThaw<T>(
    s: VolumeState,
    offset: number,
    length: number,
    write: boolean,
    fn: () => Promise<T>,
  ): Promise<T> {
    while (s.frozen) await s.frozen;
    s.enter();
    const ticket = s.order.admit(offset, length, write);
    try {
      if (ticket.blocked) await ticket.ready;
      return await fn();
    } finally {
      ticket.done();
      s.leave();
    }
  }

  /** Reads `length` bytes at `offset`. */
  read(name: string, offset: number, length: number): Promise<Buffer> {
    return this.io(name, offset, length, false, async () => {
      const segs = await this.mapper.mapRead(name, offset, length);
      if (segs.length === 1) return this.readSegment(segs[0]!);
      return this.fill(segs, Buffer.allocUnsafe(length));
    });
  }

  /**
   * Reads `out.length` bytes at `offset` into `out` (vlmcd fills the request's shared-memory data
   * this way). Resolves with `out`.
   */
  readInto(name: string, offset: number, out: Buffer): Promise<Buffer> {
    return this.io(name, offset, out.length, false, () =>
      this.mapper.mapRead(name, offset, out.length).then((segs) => this.fill(segs, out)),
    );
  }

  private fill(segs: readonly ObjectSegment[], out: Buffer): Promise<Buffer> {
    if (segs.length === 1) {
      // One object (most I/O): no allSettled over one promise.
      const seg = segs[0]!;
      if (seg.zero) return Promise.resolve(out.fill(0));
      const b = this.blockerb;
      const p = b.readInto
        ? b.readInto(seg.target, seg.offset, out)
        : readIntoBuffer(b, seg.target, seg.offset, out);
      return p.then(() => out);
    }
    return this.fillParts(segs, out);
  }

  private async fillParts(segs: readonly ObjectSegment[], out: Buffer): Promise<Buffer> {
    let pos = 0;
    // allSettled: when one part fails, the others still land in `out`; the caller must not see
    // the failure (and hand `out` on, e.g. vlmcd's request back to its sender) before they did.
    const settled = await Promise.allSettled(
      segs.map((seg) => {
        const at = pos;
        pos += seg.size;
        if (seg.zero) {
          out.fill(0, at, at + seg.size);
          return undefined;
        }
        // Straight into `out`: no fresh buffer per segment (first touches of fresh memory cost
        // more than the copy on some VMs).
        return readIntoBuffer(this.blockerb, seg.target, seg.offset, out.subarray(at, at + seg.size));
      }),
    );
    for (const r of settled) if (r.status === 'rejected') throw r.reason;
    return out;
  }

  private readSegment(seg: ObjectSegment): Promise<Buffer> {
    if (seg.zero) return Promise.resolve(Buffer.alloc(seg.size));
    // A writable object that was never written (zero-block copy-up) does not exist yet: zeros.
    return this.blockerb.read(seg.target, seg.offset, seg.size, { missingOk: true });
  }

  /** Writes `data` at `offset`; shared blocks are copied up first. */
  write(name: string, offset: number, data: Uint8Array, opts: WriteOptions = {}): Promise<void> {
    return this.io(name, offset, data.length, true, async () => {
      if (data.length === 0) return;
      const segs = await this.mapper.mapWrite(name, offset, data.length);
      const durable = opts.fua === true;
      if (segs.length === 1) {
        const seg = segs[0]!;
        const part = seg.size === data.length ? data : data.subarray(0, seg.size);
        await this.blockerb.write(seg.target, seg.offset, part, { durable });
      } else {
        let pos = 0;
        await Promise.all(
          segs.map((seg) => {
            const part = data.subarray(pos, pos + seg.size);
            pos += seg.size;
            return this.blockerb.write(seg.target, seg.offset, part, { durable });
          }),
        );
      }
      // FUA covers the map too: mapWrite may have just pointed a block at a new object, and a
      // write-back blockerm holds that entry only until its next flush. The mapper also re-checks
      // that the volume is still ours before the write is acknowledged (fencing).
      if (opts.fua) await this.mapper.flush(name);
    });
  }

  /**
   * Makes `[offset, offset+length)` read as zeros. Whole blocks go back to the zero block (their
   * objects are freed) unless `noHole`; partial blocks get zeros written, except where they are
   * zero blocks already.
   */
  writeZeroes(name: string, offset: number, length: number, opts: ZeroOptions = {}): Promise<void> {
    return this.io(name, offset, length, true, async () => {
      await this.mapper.assertWritable(name);
      if (length === 0) return;
      const segs = await this.mapper.mapRead(name, offset, length);
      await Promise.all(
        segs.map(async (seg) => {
          if (seg.zero && !opts.noHole) return;
          if (seg.size === seg.blocksize && !opts.noHole) return this.mapper.discard(name, seg.index);
          const start = seg.index * seg.blocksize + seg.offset;
          const [w] = await this.mapper.mapWrite(name, start, seg.size);
          await this.blockerb.write(w!.target, w!.offset, zeros(seg.size), { durable: opts.fua === true });
        }),
      );
      if (opts.fua) await this.mapper.flush(name);
    });
  }

  /** Discards a range: afterwards it reads as zeros (same as writeZeroes without NO_HOLE). */
  trim(name: string, offset: number, length: number): Promise<void> {
    return this.writeZeroes(name, offset, length);
  }

  /**
   * Makes every acknowledged write durable. With a volume name, the mapper also re-checks that the
   * volume is still this process's before the flush is acknowledged (EIO fenced when it is not).
   */
  async flush(name?: string): Promise<void> {
    await Promise.all([this.blockerb.flush(), this.mapper.flush(name)]);
  }

  /** Data and zero extents of a range (zero blocks are holes). */
  async blockStatus(name: string, offset: number, length: number): Promise<Extent[]> {
    const segs = await this.mapper.mapRead(name, offset, length);
    const out: Extent[] = [];
    let pos = offset;
    for (const s of segs) {
      const last = out[out.length - 1];
      if (last && last.zero === s.zero) last.length += s.size;
      else out.push({ offset: pos, length: s.size, zero: s.zero });
      pos += s.size;
    }
    return out;
  }

  /**
   * Runs `fn` with the volume frozen: new I/O waits, in-flight I/O drains first. Used for
   * snapshot, close and remove.
   */
  async frozen<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const s = this.state(name);
    while (s.frozen) await s.frozen;
    let thaw!: () => void;
    s.frozen = new Promise((r) => {
      thaw = r;
    });
    try {
      await s.drain();
      return await fn();
    } finally {
      s.frozen = null;
      thaw();
      if (s.inflight === 0 && !s.frozen) this.volumes.delete(name);
    }
  }

  /**
   * Snapshots a volume. With a write-back blockerb, the data written so far is made durable
   * first: the snapshot shares those objects and must not lose what it was taken with (librbd
   * flushes its cache before a snapshot too).
   */
  snapshot(name: string, snap: string): Promise<VolumeInfo> {
    return this.frozen(name, async () => {
      await this.blockerb.flush();
      return this.mapper.snapshot(name, snap);
    });
  }

  /** Drains, makes the data written so far durable (write-back blockerb), and closes the volume. */
  close(name: string): Promise<void> {
    return this.frozen(name, async () => {
      await this.blockerb.flush();
      await this.mapper.closeVolume(name);
    });
  }

  remove(name: string): Promise<void> {
    return this.frozen(name, () => this.mapper.remove(name));
  }

  /** Size of a volume in bytes. */
  async size(name: string): Promise<number> {
    return (await this.mapper.info(name)).size;
  }
}

let zeroBuf = Buffer.alloc(0);
function zeros(n: number): Buffer {
  if (zeroBuf.length < n) zeroBuf = Buffer.alloc(n);
  return zeroBuf.subarray(0, n);
}
