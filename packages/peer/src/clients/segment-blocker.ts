/**
 * SegmentBlocker: a Blocker whose calls go through the segment to a blocker peer. It binds one
 * dynamic port and sends each call as one request (protocol/wire.ts); the peer's errors come back
 * as the same ArchipelagoErrors the local blocker would have thrown. Every blocker call is
 * idempotent (for one identity), so each is retried when the peer died or stopped (client.ts).
 *
 * Arguments, close() and the waiting acquire are AbstractBlocker's, as for every blocker: a bad
 * name never reaches the segment, and misuse fails here as it would on a local blocker.
 */
import { hostname } from 'node:os';
import {
  AbstractBlocker,
  isValidObjectName,
  type LockHolder,
  type LockSession,
  resolveIdentity,
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
import { PeerFlag, PeerOp } from '../protocol/wire.js';
import { PeerClient, type PeerClientOptions, type Send } from './client.js';

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

/** The segment side of a SegmentBlocker: every call may be sent again after the peer died. */
class BlockerLink extends PeerClient {
  constructor(opts: PeerClientOptions) {
    super(opts, 'blocker');
  }

  override request(what: string, o: Send): Promise<XsegReply> {
    return super.request(what, o, true);
  }

  override readReply(what: string, o: Send): Promise<Buffer> {
    return super.readReply(what, o);
  }

  override readReplyInto(what: string, o: Send, target: Buffer): Promise<void> {
    return super.readReplyInto(what, o, target);
  }

  override simple(what: string, o: Send): Promise<void> {
    return super.simple(what, o);
  }
}

export class SegmentBlocker extends AbstractBlocker {
  private readonly link: BlockerLink;
  /** The identity as lock requests carry it. */
  private readonly id: Buffer;

  constructor(opts: SegmentBlockerOptions) {
    const identity = resolveIdentity('SegmentBlocker', opts.identity ?? `${hostname()}_segment`, hostname());
    super({
      kind: opts.kind ?? 'segment',
      identity,
      ...(opts.lockTimeoutMs !== undefined ? { lockTimeoutMs: opts.lockTimeoutMs } : {}),
      ...(opts.lockPollMs !== undefined ? { lockPollMs: opts.lockPollMs } : {}),
    });
    this.id = Buffer.from(identity);
    this.link = new BlockerLink(opts);
  }

  /** The blocker peer's port. */
  get peerPort(): number {
    return this.link.peerPort;
  }

  /** The dynamic port this client sends from. */
  get clientPort(): number {
    return this.link.clientPort;
  }

  /** Calls retried after the peer died or stopped (for tests and logs). */
  get retries(): number {
    return this.link.retries;
  }

  /** Round trip to the peer (op PING). */
  ping(): Promise<void> {
    this.assertOpen();
    return this.link.ping();
  }

  /** close(), under the name every segment client has. */
  disconnect(): Promise<void> {
    return this.close();
  }

  protected _read(name: string, offset: number, length: number, missingOk: boolean): Promise<Buffer> {
    return this.link.readReply(`read ${name}`, {
      op: Op.READ,
      target: name,
      offset,
      size: length,
      flags: missingOk ? PeerFlag.MISSINGOK : 0,
    });
  }

  /** Into the caller's buffer: vlmcd copies a block peer's reply straight into its own request's data. */
  protected override _readInto(name: string, offset: number, target: Buffer): Promise<void> {
    return this.link.readReplyInto(
      `read ${name}`,
      { op: Op.READ, target: name, offset, flags: PeerFlag.MISSINGOK },
      target,
    );
  }

  /** `durable` (the composer's FUA) travels as XF_FUA: the peer's blocker answers once it is durable. */
  protected _write(name: string, offset: number, data: Uint8Array, durable: boolean): Promise<void> {
    const buf = toBuffer(data);
    return this.link.simple(`write ${name}`, {
      op: Op.WRITE,
      target: name,
      offset,
      size: buf.length,
      data: buf,
      flags: durable ? XF.FUA : 0,
    });
  }

  protected _writeFull(name: string, data: Uint8Array): Promise<void> {
    const buf = toBuffer(data);
    return this.link.simple(`writeFull ${name}`, {
      op: PeerOp.WRITEFULL,
      target: name,
      size: buf.length,
      data: buf,
    });
  }

  protected _copy(src: string, dst: string, missingOk: boolean): Promise<void> {
    const data = encodeTargetPayload(src);
    return this.link.simple(`copy ${src} ${dst}`, {
      op: Op.COPY,
      target: dst,
      size: data.length,
      data,
      flags: missingOk ? PeerFlag.MISSINGOK : 0,
    });
  }

  protected async _delete(name: string): Promise<boolean> {
    return absentAs(
      false,
      this.link.simple(`delete ${name}`, { op: Op.DELETE, target: name }).then(() => true),
    );
  }

  protected async _info(name: string): Promise<number | null> {
    const r = await absentAs(
      null,
      this.link.request(`info ${name}`, { op: Op.INFO, target: name, reserve: 8 }),
    );
    if (r === null) return null;
    try {
      return Number(decodeInfoReply(Buffer.from(r.data.subarray(0, 8))));
    } finally {
      r.release();
    }
  }

  /** Page by page (the peer answers at most LIST_PAGE_BYTES of names, then the next page from a cursor). */
  protected async *_list(prefix: string): AsyncIterable<string> {
    // A prefix no object name starts with (too long, or with other characters) matches nothing:
    // no request for it (it might not even fit a request's target).
    if (prefix !== '' && !isValidObjectName(prefix) && !isValidObjectName(`${prefix}x`)) return;
    let cursor = '';
    for (;;) {
      const c = Buffer.from(cursor);
      const r = await this.link.request(`list ${prefix}`, {
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
      yield* names;
      const last = names[names.length - 1];
      if (!more || last === undefined) return;
      cursor = last;
    }
  }

  protected async _hash(name: string, size: number): Promise<string> {
    const r = await this.link.request(`hash ${name}`, { op: Op.HASH, target: name, size, reserve: 260 });
    try {
      return decodeTargetPayload(Buffer.from(r.data.subarray(0, 260)));
    } finally {
      r.release();
    }
  }

  /**
   * Each attempt is one non-blocking acquire (XF_NOSYNC) on the peer, so no peer slot is held
   * while waiting and close() ends the wait at once. (The wire also has the blocking form, without
   * XF_NOSYNC, for clients that want the peer to wait.)
   */
  protected _lockSession(name: string): LockSession {
    return {
      attempt: async () => {
        try {
          await this.link.simple(`acquire ${name}`, {
            op: Op.ACQUIRE,
            target: name,
            flags: XF.NOSYNC,
            size: this.id.length,
            data: this.id,
          });
          return null;
        } catch (e) {
          if (!ArchipelagoError.is(e, 'ELOCKED')) throw e;
          return String(e.details.owner);
        }
      },
    };
  }

  protected async _lockHolder(name: string): Promise<LockHolder | null> {
    const r = await this.link.request(`lockOwner ${name}`, {
      op: PeerOp.LOCKOWNER,
      target: name,
      reserve: 256,
    });
    try {
      return r.serviced === 0 ? null : { owner: r.data.subarray(0, r.serviced).toString('utf8') };
    } finally {
      r.release();
    }
  }

  /** One round trip: the peer's blocker (with this identity) makes the owner check itself. */
  protected override _release(name: string, force: boolean): Promise<void> {
    return this.link.simple(`release ${name}`, {
      op: Op.RELEASE,
      target: name,
      flags: force ? XF.FORCE : 0,
      size: this.id.length,
      data: this.id,
    });
  }

  /** A forced release on the peer (what the base's `_release` asks for once it checked the holder). */
  protected _unlock(name: string): Promise<boolean> {
    return absentAs(
      false,
      this._release(name, true).then(() => true),
      'ENOTLOCKED',
    );
  }

  protected _flush(): Promise<void> {
    return this.link.simple('flush', { op: Op.FLUSH });
  }

  /** Leaves the port (and the segment, when this client joined it). */
  protected _close(): Promise<void> {
    return this.link.disconnect();
  }
}

/** A Buffer over the same bytes (the segment copies them once, into the request). */
function toBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** `p`, or `value` when it fails with `code` (the peer's way of saying "there is none"). */
async function absentAs<T, A>(
  value: A,
  p: Promise<T>,
  code: 'ENOENT_OBJECT' | 'ENOTLOCKED' = 'ENOENT_OBJECT',
) {
  try {
    return await p;
  } catch (e) {
    if (ArchipelagoError.is(e, code)) return value;
    throw e;
  }
}
