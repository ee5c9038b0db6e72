/**
 * SegmentVolumes: volume I/O through a vlmcd peer (vlmc-peer.ts), with the composer's method
 * shapes (`VolumeApi`), so the NBD export and the `vlmc` commands use it in place of an
 * in-process Composer. A write is copied once, straight into the request's shared-memory data; a
 * read is copied once out of the reply. I/O, flush, close and info are retried when vlmcd died or
 * stopped (client.ts), so a vlmcd restart is transparent to an NBD client; snapshot and remove
 * are not (their failure is reported).
 */
import type { Extent, VolumeApi, WriteOptions, ZeroOptions } from '@archipelago/composer';
import { ArchipelagoError, decodeInfoReply, encodeTargetPayload, XF } from '@archipelago/libxseg';
import type { XsegReply } from '@archipelago/libxseg/segment';
import type { VolumeInfo } from '@archipelago/mapper';
import { PeerClient, type PeerClientOptions } from './client.js';
import { VlmcFlag, VlmcOp } from './vlmc-peer.js';
import { fromJson } from './wire.js';

export interface SegmentVolumesOptions extends PeerClientOptions {
  /** Notes which volumes an operation opened (a SegmentMapper with `trackOpens`). */
  tracker?: { track<T>(name: string, fn: () => Promise<T>): Promise<T>; forget(name: string): void };
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

  constructor(opts: SegmentVolumesOptions) {
    super(opts, 'vlmcd');
    this.tracker = opts.tracker;
  }

  private io<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return this.tracker ? this.tracker.track(name, fn) : fn();
  }

  read(name: string, offset: number, length: number): Promise<Buffer> {
    checkRange(offset, length);
    return this.io(name, () =>
      this.readReply(`read ${name}`, { op: VlmcOp.READ, target: name, offset, size: length }),
    );
  }

  /** Reads `out.length` bytes at `offset` into `out` (no fresh memory); resolves with `out`. */
  readInto(name: string, offset: number, out: Buffer): Promise<Buffer> {
    checkRange(offset, out.length);
    return this.io(name, async () => {
      await this.readReplyInto(`read ${name}`, { op: VlmcOp.READ, target: name, offset }, out);
      return out;
    });
  }

  write(name: string, offset: number, data: Uint8Array, opts: WriteOptions = {}): Promise<void> {
    if (!(data instanceof Uint8Array)) throw new ArchipelagoError('EINVAL', 'data must be a Uint8Array');
    checkRange(offset, data.length);
    const src = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const flags = opts.fua ? XF.FUA : 0;
    // Filled in place in the segment; a retry fills a new request.
    const send = (dst: number): Promise<XsegReply> => {
      const w = this.port.prepare(src.length);
      src.copy(w.data);
      return w.call({ dst, op: VlmcOp.WRITE, target: name, offset, size: src.length, flags });
    };
    return this.io(name, async () => (await this.request(`write ${name}`, send, true)).release());
  }

  writeZeroes(name: string, offset: number, length: number, opts: ZeroOptions = {}): Promise<void> {
    checkRange(offset, length);
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
    return this.io(name, () =>
      this.simple(`trim ${name}`, { op: VlmcOp.TRIM, target: name, offset, size: length, reserve: 0 }, true),
    );
  }

  flush(name?: string): Promise<void> {
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
    await this.simple(`freeze ${name}`, { op: VlmcOp.FREEZE, target: name }, true);
    return fn();
  }

  async snapshot(name: string, snap: string): Promise<VolumeInfo> {
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
    await this.simple(`close ${name}`, { op: VlmcOp.CLOSE, target: name }, true);
    this.tracker?.forget(name);
  }

  async remove(name: string): Promise<void> {
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
