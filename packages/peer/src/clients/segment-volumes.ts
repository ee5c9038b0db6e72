/**
 * SegmentVolumes: volume I/O through a vlmcd peer (protocol/vlmc-wire.ts), with the composer's method
 * shapes (`VolumeApi`), so the NBD export and the `vlmc` commands use it in place of an
 * in-process Composer. A write is copied once, straight into the request's shared-memory data; a
 * read is copied once out of the reply. I/O, flush, close and info are retried when vlmcd died or
 * stopped (client.ts), so a vlmcd restart is transparent to an NBD client; snapshot and remove
 * are not (their failure is reported).
 *
 * Reads issued in the same tick (an NBD connection dispatches every request of a socket read at
 * once) go to vlmcd as one READV request, one wake-up each way instead of one per read; any
 * other call sends the reads queued before it first, so vlmcd still sees submission order.
 */
import type { Extent, VolumeApi, WriteOptions, ZeroOptions } from '@archipelago/composer';
import { ArchipelagoError, decodeInfoReply, encodeTargetPayload, XF } from '@archipelago/libxseg';
import type { XsegReply } from '@archipelago/libxseg/segment';
import type { VolumeInfo } from '@archipelago/mapper';
import { encodeReadVector, READV_MAX, readVectorBytes, VlmcFlag, VlmcOp } from '../protocol/vlmc-wire.js';
import { fromJson } from '../protocol/wire.js';
import { PeerClient, type PeerClientOptions, UNTRACKED } from './client.js';

export interface SegmentVolumesOptions extends PeerClientOptions {
  /** Notes which volumes an operation opened (a SegmentMapper with `trackOpens`). */
  tracker?: { track<T>(name: string, fn: () => Promise<T>): Promise<T>; forget(name: string): void };
}

/** The most bytes one READV asks for. */
const READV_MAX_BYTES = 8 << 20;

interface QueuedRead {
  name: string;
  offset: number;
  length: number;
  /** The caller's buffer (readInto), or null for a fresh one. */
  out: Buffer | null;
  resolve: (b: Buffer) => void;
  reject: (e: unknown) => void;
}

function checkRange(offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0)
    throw new ArchipelagoError(
      'EINVAL',
      `offset and length must be integers >= 0 (got ${offset}, ${length})`,
    );
}

export class SegmentVolumes extends PeerClient implements VolumeApi {
  private readonly tracker: SegmentVolumesOptions['tracker'];
  private queued: QueuedRead[] = [];
  private scheduled = false;
  /** False once vlmcd answered READV with ENOTSUP (an older vlmcd): reads go one by one. */
  private vectored = true;
  /** Reads sent as READV, and READV requests (tests, logs). */
  readonly batchStats = { reads: 0, requests: 0 };

  constructor(opts: SegmentVolumesOptions) {
    super(opts, 'vlmcd');
    this.tracker = opts.tracker;
  }

  private io<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return this.tracker ? this.tracker.track(name, fn) : fn();
  }

  read(name: string, offset: number, length: number): Promise<Buffer> {
    checkRange(offset, length);
    return this.io(name, () => this.queueRead(name, offset, length, null));
  }

  /** Reads `out.length` bytes at `offset` into `out` (no fresh memory); resolves with `out`. */
  readInto(name: string, offset: number, out: Buffer): Promise<Buffer> {
    checkRange(offset, out.length);
    return this.io(name, () => this.queueRead(name, offset, out.length, out));
  }

  private queueRead(name: string, offset: number, length: number, out: Buffer | null): Promise<Buffer> {
    if (this.closed) return this.readOne({ name, offset, length, out, resolve: () => {}, reject: () => {} });
    return new Promise((resolve, reject) => {
      this.queued.push({ name, offset, length, out, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        queueMicrotask(() => this.sendReads());
      }
    });
  }

  /** Sends the queued reads: one READV per volume (split at READV_MAX reads or READV_MAX_BYTES). */
  private sendReads(): void {
    this.scheduled = false;
    const all = this.queued;
    if (all.length === 0) return;
    this.queued = [];
    const byName = new Map<string, QueuedRead[]>();
    for (const q of all) {
      const l = byName.get(q.name);
      if (l) l.push(q);
      else byName.set(q.name, [q]);
    }
    for (const [name, list] of byName) {
      for (let i = 0; i < list.length; ) {
        let j = i;
        let bytes = 0;
        while (
          j < list.length &&
          j - i < READV_MAX &&
          (j === i || bytes + list[j]!.length <= READV_MAX_BYTES)
        ) {
          bytes += list[j]!.length;
          j++;
        }
        const chunk = list.slice(i, j);
        i = j;
        if (chunk.length === 1 || !this.vectored) for (const q of chunk) this.settle(q, this.readOne(q));
        else void this.readVector(name, chunk, bytes);
      }
    }
  }

  private settle(q: QueuedRead, p: Promise<Buffer>): void {
    p.then(q.resolve, q.reject);
  }

  private async readOne(q: QueuedRead): Promise<Buffer> {
    const what = `read ${q.name}`;
    if (q.out === null)
      return this.readReply(what, { op: VlmcOp.READ, target: q.name, offset: q.offset, size: q.length });
    await this.readReplyInto(what, { op: VlmcOp.READ, target: q.name, offset: q.offset }, q.out);
    return q.out;
  }

  private async readVector(name: string, chunk: QueuedRead[], total: number): Promise<void> {
    const desc = readVectorBytes(chunk.length);
    // Filled in place in the segment; a retry fills a new request.
    const send = (dst: number): Promise<XsegReply> => {
      const w = this.port.prepare(Math.max(desc, total));
      try {
        encodeReadVector(w.data, chunk);
      } catch (e) {
        w.release();
        throw e;
      }
      return w.call({ dst, op: VlmcOp.READV, target: name, size: desc }, UNTRACKED);
    };
    let r: XsegReply;
    try {
      r = await this.request(`read ${name}`, send, true);
    } catch (e) {
      // One failed read fails the lot: each read again on its own, for its own answer.
      if (ArchipelagoError.is(e, 'ENOTSUP')) this.vectored = false;
      for (const q of chunk) this.settle(q, this.readOne(q));
      return;
    }
    try {
      if (r.serviced < total || r.data.length < total)
        throw new ArchipelagoError('EIO', `read ${name}: short READV reply (${r.serviced} < ${total})`);
      this.batchStats.requests++;
      this.batchStats.reads += chunk.length;
      let at = 0;
      for (const q of chunk) {
        const out = q.out ?? Buffer.allocUnsafe(q.length);
        r.data.copy(out, 0, at, at + q.length);
        at += q.length;
        q.resolve(out);
      }
    } catch (e) {
      for (const q of chunk) q.reject(e);
    } finally {
      r.release();
    }
  }

  /** Sends what is queued, then waits for the calls in flight and leaves the port. */
  override disconnect(): Promise<void> {
    this.ordered();
    return super.disconnect();
  }

  /** Sends the reads queued so far before another call, so vlmcd sees the calls in order. */
  private ordered(): void {
    if (this.queued.length > 0) this.sendReads();
  }

  write(name: string, offset: number, data: Uint8Array, opts: WriteOptions = {}): Promise<void> {
    if (!(data instanceof Uint8Array)) throw new ArchipelagoError('EINVAL', 'data must be a Uint8Array');
    checkRange(offset, data.length);
    this.ordered();
    const src = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const flags = opts.fua ? XF.FUA : 0;
    // Filled in place in the segment; a retry fills a new request.
    const send = (dst: number): Promise<XsegReply> => {
      const w = this.port.prepare(src.length);
      src.copy(w.data);
      return w.call({ dst, op: VlmcOp.WRITE, target: name, offset, size: src.length, flags }, UNTRACKED);
    };
    return this.io(name, async () => (await this.request(`write ${name}`, send, true)).release());
  }

  writeZeroes(name: string, offset: number, length: number, opts: ZeroOptions = {}): Promise<void> {
    checkRange(offset, length);
    this.ordered();
    const flags = (opts.fua ? XF.FUA : 0) | (opts.noHole ? VlmcFlag.NOHOLE : 0);
    return this.io(name, () =>
      this.simple(
        `write-zeroes ${name}`,
        { op: VlmcOp.WRITEZEROES, target: name, offset, size: length, reserve: 0, flags },
        true,
      ),
    );
  }

  trim(name: string, offset: number, length: number): Promise<void> {
    checkRange(offset, length);
    this.ordered();
    return this.io(name, () =>
      this.simple(`trim ${name}`, { op: VlmcOp.TRIM, target: name, offset, size: length, reserve: 0 }, true),
    );
  }

  flush(name?: string): Promise<void> {
    this.ordered();
    return this.simple(`flush ${name ?? ''}`, { op: VlmcOp.FLUSH, target: name ?? '' }, true);
  }

  async blockStatus(name: string, offset: number, length: number): Promise<Extent[]> {
    checkRange(offset, length);
    const what = `block status ${name}`;
    const r = await this.request(
      what,
      { op: VlmcOp.BLOCKSTATUS, target: name, offset, size: length, reserve: 4096 },
      true,
    );
    try {
      return fromJson<Extent[]>(r.data.subarray(0, r.serviced), what);
    } finally {
      r.release();
    }
  }

  /**
   * Drains the volume's in-flight I/O in vlmcd (a barrier), then runs `fn`. Unlike the in-process
   * composer, I/O arriving while `fn` runs is not held back; `vlmc` refuses the map changes that
   * use this (rename, resize) on mapped volumes.
   */
  async frozen<T>(name: string, fn: () => Promise<T>): Promise<T> {
    this.ordered();
    await this.simple(`freeze ${name}`, { op: VlmcOp.FREEZE, target: name }, true);
    return fn();
  }

  async snapshot(name: string, snap: string): Promise<VolumeInfo> {
    this.ordered();
    const data = encodeTargetPayload(snap);
    const what = `snapshot ${name}`;
    return this.io(name, async () => {
      const r = await this.request(what, { op: VlmcOp.SNAPSHOT, target: name, data, size: data.length });
      try {
        return fromJson<VolumeInfo>(r.data.subarray(0, r.serviced), what);
      } finally {
        r.release();
      }
    });
  }

  async close(name: string): Promise<void> {
    this.ordered();
    await this.simple(`close ${name}`, { op: VlmcOp.CLOSE, target: name }, true);
    this.tracker?.forget(name);
  }

  async remove(name: string): Promise<void> {
    this.ordered();
    await this.simple(`remove ${name}`, { op: VlmcOp.DELETE, target: name });
    this.tracker?.forget(name);
  }

  async size(name: string): Promise<number> {
    const r = await this.request(`info ${name}`, { op: VlmcOp.INFO, target: name, reserve: 8 }, true);
    try {
      return Number(decodeInfoReply(Buffer.from(r.data.subarray(0, 8))));
    } finally {
      r.release();
    }
  }
}
