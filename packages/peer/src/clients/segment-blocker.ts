/**
 * SegmentBlocker: a Blocker whose calls go through the segment to a blocker peer. It binds one
 * dynamic port and sends each call as one request (protocol/wire.ts); the peer's errors come back
 * as the same ArchipelagoErrors the local blocker would have thrown. Calls are retried when the
 * peer died or stopped (client.ts), except breakLock (below).
 *
 * Arguments and close() are AbstractBlocker's, as for every blocker: a bad name never reaches the
 * segment, and misuse fails here as it would on a local blocker. The lock logic (take-over of a
 * dead holder, fencing, renewal, breaking) runs in the peer, on its blocker of this client's
 * identity, for this client's process (`process`, or the `as` of a call): the lock records the
 * pid of the process using this SegmentBlocker, never the blocker peer's. So acquire, renew,
 * breakLock, release and requestRelease are one call to the peer each (protocol/lock-wire.ts),
 * and the backend's lock hooks are never reached here. No `watchRelease`: a release request
 * reaches the holder at its next renewal (the RENEW reply's `releaseRequested`).
 */
import { hostname } from 'node:os';
import {
  AbstractBlocker,
  type AcquireOptions,
  type AcquireResult,
  type BreakOptions,
  type BreakReport,
  countError,
  isValidObjectName,
  type LockProcess,
  type LockRecord,
  type LockSession,
  lockTimeoutError,
  type RenewOptions,
  type RequestReleaseOptions,
  resolveIdentity,
  timeoutError,
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
import { type BreakReply, encodeLockArgs, type LockArgs } from '../protocol/lock-wire.js';
import { fromJson, PeerFlag, PeerOp } from '../protocol/wire.js';
import { PeerClient, type PeerClientOptions, type PeerState, type Send } from './client.js';

export interface SegmentBlockerOptions extends PeerClientOptions {
  /** Lock owner identity; default `<hostname>_segment`. */
  identity?: string;
  /** The kind reported (default "segment"). */
  kind?: string;
  /** Default timeout of a waiting acquire, in ms (default 30000). */
  lockTimeoutMs?: number;
  /** How often a waiting acquire retries, in ms (default 100). */
  lockPollMs?: number;
  /** Lease of a process hold when a call names none, ms (default 15000; 0: no lease). */
  leaseMs?: number;
  /** The process locks are held for unless a call says `as` (default: this process). */
  process?: LockProcess;
}

/** Room reserved for a JSON answer (a lock record, an acquire's result); a longer one still fits. */
const JSON_REPLY_ROOM = 2048;

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

  /** A call answered with JSON; `retry`: send it again after the peer died or stopped. */
  async json<T>(what: string, o: Send, retry: boolean): Promise<T> {
    const r = await super.request(what, { reserve: JSON_REPLY_ROOM, ...o }, retry);
    try {
      return fromJson<T>(r.data.subarray(0, r.serviced), what);
    } finally {
      r.release();
    }
  }
}

export class SegmentBlocker extends AbstractBlocker {
  private readonly link: BlockerLink;

  constructor(opts: SegmentBlockerOptions) {
    const identity = resolveIdentity('SegmentBlocker', opts.identity ?? `${hostname()}_segment`, hostname());
    super({
      kind: opts.kind ?? 'segment',
      identity,
      ...(opts.lockTimeoutMs !== undefined ? { lockTimeoutMs: opts.lockTimeoutMs } : {}),
      ...(opts.lockPollMs !== undefined ? { lockPollMs: opts.lockPollMs } : {}),
      ...(opts.leaseMs !== undefined ? { leaseMs: opts.leaseMs } : {}),
      ...(opts.process !== undefined ? { process: opts.process } : {}),
    });
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

  /** Whether the blocker peer serves its port (`PeerClient.peerState`). */
  peerState(): PeerState {
    return this.link.peerState();
  }

  /** Fails every call in flight at once and refuses new ones (`PeerClient.abort`). */
  abort(reason?: string): void {
    this.link.abort(reason);
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

  // ------------------------------------------------------------------ locks (decided by the peer)

  /**
   * One ACQUIRE per attempt, which the peer's blocker of this identity decides for `as` (this
   * client's process unless the call names another): it takes a free lock, takes over a dead
   * holder's after fencing it, and rewrites a lock this identity holds to the hold asked for.
   * Attempts do not wait in the peer (XF_NOSYNC): a waiting acquire tries again every
   * `lockPollMs` from here, so no peer slot is held while it waits and close() ends the wait at
   * once (ECLOSED). Retried after a peer restart: for one identity and process acquire is
   * idempotent (an attempt the dead peer had served finds the lock ours: `took` false).
   */
  override acquire(name: string, options: AcquireOptions = {}): Promise<AcquireResult> {
    const t = options.timeoutMs;
    const bad = (t === undefined ? null : timeoutError(t, name)) ?? leaseError(options.leaseMs);
    return this.counted(name, 'lock name', bad, async () => {
      const hold = options.hold ?? 'process';
      const args = this.lockArgs({
        hold,
        leaseMs: options.leaseMs ?? this.leaseMs,
        ...(hold === 'process' ? { as: options.as ?? this.process } : {}),
      });
      const deadline = Date.now() + (t ?? this.lockTimeoutMs);
      for (;;) {
        try {
          const o = { op: Op.ACQUIRE, target: name, flags: XF.NOSYNC, data: args };
          return await this.link.json<AcquireResult>(`acquire ${name}`, o, true);
        } catch (e) {
          if (options.wait !== true || !ArchipelagoError.is(e, 'ELOCKED')) throw e;
          const left = deadline - Date.now();
          if (left <= 0) throw lockTimeoutError(name, String(e.details.owner), t ?? this.lockTimeoutMs);
          await this.pollPause(left);
        }
      }
    });
  }

  /**
   * RENEW: extends the lease of the lock this client's process holds (retried: renewing twice is
   * renewing). ELOCKED with `details.lost` when the lock is another's now.
   */
  override renew(name: string, options: RenewOptions = {}): Promise<LockRecord> {
    return this.counted(name, 'lock name', leaseError(options.leaseMs), () => {
      const data = this.lockArgs({
        leaseMs: options.leaseMs ?? this.leaseMs,
        as: options.as ?? this.process,
      });
      return this.link.json<LockRecord>(`renew ${name}`, { op: PeerOp.RENEW, target: name, data }, true);
    });
  }

  /**
   * BREAK, done by the peer's blocker of this identity. With `onWait`, the peer answers as soon as
   * the break starts waiting for a holder's lease to run out (file blockers); `onWait` is called
   * and a second BREAK (`join`) collects the report. Never sent again after the peer died: the
   * break may have run, and a lock taken since by someone else must not be broken by a retry.
   */
  override breakLock(name: string, options: BreakOptions = {}): Promise<BreakReport> {
    return this.counted(name, 'lock name', null, async () => {
      const waitMs = options.waitMs ?? this.leaseMs + 1000;
      const send = (a: Partial<LockArgs>) =>
        this.link.json<BreakReply>(
          `breakLock ${name}`,
          { op: PeerOp.BREAK, target: name, data: this.lockArgs(a) },
          false,
        );
      let r = await send({ waitMs, ...(options.onWait ? { progress: true } : {}) });
      if ('waiting' in r) {
        options.onWait?.(r.waiting.what, r.waiting.ms);
        r = await send({ waitMs, join: true });
      }
      if (!('report' in r))
        throw new ArchipelagoError('EIO', `breakLock ${name}: the blocker peer answered no report`);
      return r.report;
    });
  }

  /**
   * REQUEST_RELEASE: the peer's blocker of this identity records the request for the holder
   * (the cooperative hand-over; its next RENEW reports it, wherever it renews). One round trip;
   * retried after a peer restart (asking twice is asking). A backend that cannot ask answers
   * ENOTSUP, as a local one would.
   */
  override requestRelease(name: string, options: RequestReleaseOptions = {}): Promise<LockRecord | null> {
    const by = options.by;
    // A bad "by": AbstractBlocker's check fails the call before it reaches any hook.
    if (by !== undefined && (typeof by !== 'string' || by === '')) return super.requestRelease(name, options);
    return this.counted(name, 'lock name', null, () => {
      const data = this.lockArgs(by === undefined ? {} : { by });
      const o = { op: PeerOp.REQUEST_RELEASE, target: name, data };
      return this.link.json<LockRecord | null>(`requestRelease ${name}`, o, true);
    });
  }

  /**
   * ADD_CLIENT: registers client address `addr` in the record of lock `name`, held by this
   * identity for process `as` (default: any hold of this identity, a host hold too), as a client that writes for the holder:
   * every later break blocklists it too (RADOS, `RadosBlocker.addClient`). `ENOTSUP` from a blocker
   * peer whose store cuts off no clients (files); `ELOCKED`/`ENOTLOCKED` when this identity and
   * process do not hold the lock. Resolves with the record as written.
   */
  addClient(name: string, addr: string, options: { as?: LockProcess } = {}): Promise<LockRecord> {
    return this.counted(name, 'lock name', null, () => {
      const data = this.lockArgs({ ...(options.as !== undefined ? { as: options.as } : {}), addr });
      const o = { op: PeerOp.ADD_CLIENT, target: name, data };
      return this.link.json<LockRecord>(`addClient ${name}`, o, true);
    });
  }

  /**
   * REMOVE_CLIENT: takes client address `addr` off the record of lock `name` while this identity
   * holds it for process `as` (default: any hold of this identity): a client that stopped writing
   * for the holder (RADOS, `RadosBlocker.removeClient`). Resolves with the record as written, or
   * null when there was nothing to take off; `ENOTSUP` from a blocker peer whose store cuts off no
   * clients (files).
   */
  removeClient(name: string, addr: string, options: { as?: LockProcess } = {}): Promise<LockRecord | null> {
    return this.counted(name, 'lock name', null, () => {
      const data = this.lockArgs({ ...(options.as !== undefined ? { as: options.as } : {}), addr });
      const o = { op: PeerOp.REMOVE_CLIENT, target: name, data };
      return this.link.json<LockRecord | null>(`removeClient ${name}`, o, true);
    });
  }

  /** LOCKINFO: the record (owner, holding process, lease), as the peer's blocker reads it. */
  protected _lockHolder(name: string): Promise<LockRecord | null> {
    const o = { op: PeerOp.LOCKINFO, target: name };
    return this.link.json<LockRecord | null>(`lockInfo ${name}`, o, true);
  }

  /** One round trip: the peer's blocker (with this identity) makes the owner check itself. */
  protected override _release(name: string, force: boolean): Promise<void> {
    return this.link.simple(`release ${name}`, {
      op: Op.RELEASE,
      target: name,
      flags: force ? XF.FORCE : 0,
      data: this.lockArgs({}),
    });
  }

  // acquire, renew, breakLock and release run in the peer: AbstractBlocker never calls these.
  protected _lockSession(): LockSession {
    throw decidedByPeer('_lockSession');
  }

  protected _replace(): Promise<boolean> {
    return Promise.reject(decidedByPeer('_replace'));
  }

  protected _unlock(): Promise<boolean> {
    return Promise.reject(decidedByPeer('_unlock'));
  }

  /** The arguments of a lock call: this identity and `a`. */
  private lockArgs(a: Partial<LockArgs>): Buffer {
    return encodeLockArgs({ identity: this.identity, ...a });
  }

  /** Between two attempts of a waiting acquire: `lockPollMs` at most; close() ends it (ECLOSED). */
  private async pollPause(left: number): Promise<void> {
    this.assertOpen();
    await this.sleep(Math.min(this.lockPollMs, left));
    this.assertOpen();
  }

  protected _flush(): Promise<void> {
    return this.link.simple('flush', { op: Op.FLUSH });
  }

  /** Leaves the port (and the segment, when this client joined it). */
  protected _close(): Promise<void> {
    return this.link.disconnect();
  }
}

/** EINVAL unless a lease (ms) is an integer >= 0 (or not given), as every blocker checks it. */
function leaseError(ms: unknown): Error | null {
  return ms === undefined ? null : countError(ms, 'leaseMs');
}

/** A lock hook of AbstractBlocker reached on a SegmentBlocker: a bug (the peer runs the lock logic). */
function decidedByPeer(hook: string): ArchipelagoError {
  return new ArchipelagoError(
    'EIO',
    `SegmentBlocker.${hook}: the blocker peer runs the lock logic; this is a bug`,
  );
}

/** A Buffer over the same bytes (the segment copies them once, into the request). */
function toBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** `p`, or `value` when it fails with ENOENT_OBJECT (the peer's way of saying "there is none"). */
async function absentAs<T, A>(value: A, p: Promise<T>) {
  try {
    return await p;
  } catch (e) {
    if (ArchipelagoError.is(e, 'ENOENT_OBJECT')) return value;
    throw e;
  }
}
