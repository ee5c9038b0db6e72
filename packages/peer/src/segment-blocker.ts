/**
 * SegmentBlocker: a Blocker whose calls go through the segment to a blocker peer. It binds one
 * dynamic port and sends each call as one request (wire.ts); the peer's errors come back as the
 * same ArchipelagoErrors the local blocker would have thrown. Every blocker call is idempotent
 * (for one identity), so each is retried when the peer died or stopped (client.ts).
 */
import { hostname } from 'node:os';
import type {
  AcquireOptions,
  Blocker,
  ObjectInfo,
  ReadOptions,
  ReleaseOptions,
  WriteOptions,
} from '@archipelago/blocker';
import {
  ArchipelagoError,
  decodeInfoReply,
  decodeTargetPayload,
  encodeTargetPayload,
  Op,
  XF,
} from '@archipelago/libxseg';
import type { XsegReply } from '@archipelago/libxseg/segment';
import { PeerClient, type PeerClientOptions, type Send } from './client.js';
import { PeerFlag, PeerOp } from './wire.js';

export interface SegmentBlockerOptions extends PeerClientOptions {
  /** Lock owner identity; default `<hostname>_segment`. */
  identity?: string;
  /** The kind reported (default "segment"). */
  kind?: string;
  /** Default timeout of a waiting acquire, in ms (default 30000). */
  lockTimeoutMs?: number;
  /** How often a waiting acquire retries, in ms (default 100). */
  lockPollMs?: number;
}

/** The contract's name rule, checked here so a bad name never reaches the segment. */
const NAME_RE = /^[A-Za-z0-9._-]{1,123}$/;

function checkName(name: unknown, what = 'object name'): string {
  if (typeof name !== 'string' || !NAME_RE.test(name) || name === '.' || name === '..')
    throw new ArchipelagoError(
      'EINVAL_NAME',
      `bad ${what} ${JSON.stringify(name)}: 1..123 of [A-Za-z0-9._-]`,
      {
        details: { name },
      },
    );
  return name;
}

function checkCount(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    throw new ArchipelagoError('EINVAL', `${what} must be an integer >= 0, got ${String(v)}`);
  return v;
}

export class SegmentBlocker extends PeerClient implements Blocker {
  readonly specificationVersion = 'v1' as const;
  readonly kind: string;
  readonly identity: string;
  private readonly lockTimeoutMs: number;
  private readonly lockPollMs: number;
  private readonly sleepers = new Set<{ res: () => void; rej: (e: Error) => void; timer: NodeJS.Timeout }>();

  constructor(opts: SegmentBlockerOptions) {
    const identity = opts.identity ?? `${hostname()}_segment`;
    if (Buffer.byteLength(identity) > 128 || identity === '')
      throw new ArchipelagoError('EINVAL', 'identity must be 1..128 bytes');
    super(opts, 'blocker');
    this.kind = opts.kind ?? 'segment';
    this.identity = identity;
    this.lockTimeoutMs = opts.lockTimeoutMs ?? 30_000;
    this.lockPollMs = opts.lockPollMs ?? 100;
  }

  /** Every blocker call may be sent again after the peer died. */
  protected override request(what: string, o: Send): Promise<XsegReply> {
    return super.request(what, o, true);
  }

  async read(name: string, offset: number, length: number, options?: ReadOptions): Promise<Buffer> {
    checkName(name);
    checkCount(offset, 'offset');
    checkCount(length, 'length');
    return this.readReply(`read ${name}`, {
      op: Op.READ,
      target: name,
      offset,
      size: length,
      flags: options?.missingOk ? PeerFlag.MISSINGOK : 0,
    });
  }

  /**
   * Like `read` with `missingOk`, into the caller's buffer (the composer's `readIntoBuffer` uses
   * it, so vlmcd copies a block peer's reply straight into its own request's shared data).
   */
  async readInto(name: string, offset: number, target: Buffer): Promise<void> {
    checkName(name);
    checkCount(offset, 'offset');
    if (!Buffer.isBuffer(target)) throw new ArchipelagoError('EINVAL', 'target must be a Buffer');
    await this.readReplyInto(
      `read ${name}`,
      { op: Op.READ, target: name, offset, flags: PeerFlag.MISSINGOK },
      target,
    );
  }

  private toBuffer(data: Uint8Array): Buffer {
    if (!(data instanceof Uint8Array)) throw new ArchipelagoError('EINVAL', 'data must be a Uint8Array');
    return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  }

  /** `durable` (the composer's FUA) travels as XF_FUA: the peer's blocker answers once it is durable. */
  async write(name: string, offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    checkName(name);
    checkCount(offset, 'offset');
    const buf = this.toBuffer(data);
    await this.simple(`write ${name}`, {
      op: Op.WRITE,
      target: name,
      offset,
      size: buf.length,
      data: buf,
      flags: options?.durable ? XF.FUA : 0,
    });
  }

  async writeFull(name: string, data: Uint8Array): Promise<void> {
    checkName(name);
    const buf = this.toBuffer(data);
    await this.simple(`writeFull ${name}`, {
      op: PeerOp.WRITEFULL,
      target: name,
      size: buf.length,
      data: buf,
    });
  }

  async copy(src: string, dst: string, options?: ReadOptions): Promise<void> {
    checkName(src, 'source object name');
    checkName(dst, 'destination object name');
    const data = encodeTargetPayload(src);
    await this.simple(`copy ${src} ${dst}`, {
      op: Op.COPY,
      target: dst,
      size: data.length,
      data,
      flags: options?.missingOk ? PeerFlag.MISSINGOK : 0,
    });
  }

  async delete(name: string): Promise<boolean> {
    checkName(name);
    try {
      await this.simple(`delete ${name}`, { op: Op.DELETE, target: name });
      return true;
    } catch (e) {
      if (ArchipelagoError.is(e, 'ENOENT_OBJECT')) return false;
      throw e;
    }
  }

  async info(name: string): Promise<ObjectInfo | null> {
    checkName(name);
    let r: XsegReply;
    try {
      r = await this.request(`info ${name}`, { op: Op.INFO, target: name, reserve: 8 });
    } catch (e) {
      if (ArchipelagoError.is(e, 'ENOENT_OBJECT')) return null;
      throw e;
    }
    try {
      return { size: Number(decodeInfoReply(Buffer.from(r.data.subarray(0, 8)))) };
    } finally {
      r.release();
    }
  }

  async exists(name: string): Promise<boolean> {
    return (await this.info(name)) !== null;
  }

  async *list(prefix = ''): AsyncIterable<string> {
    if (typeof prefix !== 'string' || Buffer.byteLength(prefix) > 256)
      throw new ArchipelagoError('EINVAL', 'list prefix must be a string of at most 256 bytes');
    let cursor = '';
    for (;;) {
      const c = Buffer.from(cursor);
      const r = await this.request(`list ${prefix}`, {
        op: PeerOp.LIST,
        target: prefix,
        size: c.length,
        data: c,
        reserve: 64 * 1024,
      });
      let names: string[];
      let more: boolean;
      try {
        const text = r.data.toString('utf8');
        names = text === '' ? [] : text.split('\n');
        more = r.serviced === 1;
      } finally {
        r.release();
      }
      for (const n of names) yield n;
      const last = names[names.length - 1];
      if (!more || last === undefined) return;
      cursor = last;
    }
  }

  async acquire(name: string, options?: AcquireOptions): Promise<void> {
    checkName(name, 'lock name');
    const id = Buffer.from(this.identity);
    const once = () =>
      this.simple(`acquire ${name}`, {
        op: Op.ACQUIRE,
        target: name,
        flags: XF.NOSYNC,
        size: id.length,
        data: id,
      });
    if (options?.wait !== true) return once();
    const t = options.timeoutMs ?? this.lockTimeoutMs;
    if (typeof t !== 'number' || !Number.isFinite(t) || t < 0)
      throw new ArchipelagoError('EINVAL', `acquire ${name}: timeoutMs must be a number >= 0`);
    // A waiting acquire polls with non-blocking ones from here (as FileBlocker polls its lock
    // file), so close() can end it at once and no peer slot is held while waiting. The wire also
    // has the blocking form (no XF_NOSYNC) for clients that want the peer to wait.
    const deadline = Date.now() + t;
    for (;;) {
      try {
        return await once();
      } catch (e) {
        if (!ArchipelagoError.is(e, 'ELOCKED')) throw e;
        const left = deadline - Date.now();
        if (left <= 0)
          throw new ArchipelagoError(
            'ETIMEDOUT',
            `lock ${name} is still held by ${String(e.details.owner)} after ${t} ms; retry later, or break it if that owner is gone`,
            { details: { ...e.details, timeoutMs: t } },
          );
        await this.pause(Math.min(this.lockPollMs, left));
      }
    }
  }

  /** Sleeps, or rejects with ECLOSED as soon as the blocker is closed. */
  private pause(ms: number): Promise<void> {
    return new Promise((res, rej) => {
      if (this.closed) {
        rej(new ArchipelagoError('ECLOSED', 'the segment blocker was closed'));
        return;
      }
      const w = {
        res,
        rej,
        timer: setTimeout(() => {
          this.sleepers.delete(w);
          res();
        }, ms),
      };
      this.sleepers.add(w);
    });
  }

  async release(name: string, options?: ReleaseOptions): Promise<void> {
    checkName(name, 'lock name');
    const id = Buffer.from(this.identity);
    await this.simple(`release ${name}`, {
      op: Op.RELEASE,
      target: name,
      flags: options?.force ? XF.FORCE : 0,
      size: id.length,
      data: id,
    });
  }

  async lockOwner(name: string): Promise<string | null> {
    checkName(name, 'lock name');
    const r = await this.request(`lockOwner ${name}`, { op: PeerOp.LOCKOWNER, target: name, reserve: 256 });
    try {
      return r.serviced === 0 ? null : r.data.subarray(0, r.serviced).toString('utf8');
    } finally {
      r.release();
    }
  }

  async hash(name: string, size: number): Promise<string> {
    checkName(name);
    checkCount(size, 'size');
    const r = await this.request(`hash ${name}`, { op: Op.HASH, target: name, size, reserve: 260 });
    try {
      return decodeTargetPayload(Buffer.from(r.data.subarray(0, 260)));
    } finally {
      r.release();
    }
  }

  async flush(): Promise<void> {
    await this.simple('flush', { op: Op.FLUSH });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    for (const w of this.sleepers) {
      clearTimeout(w.timer);
      w.rej(new ArchipelagoError('ECLOSED', 'the segment blocker was closed while waiting for a lock'));
    }
    this.sleepers.clear();
    await this.disconnect();
  }
}
