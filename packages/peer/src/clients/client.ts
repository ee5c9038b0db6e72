/**
 * PeerClient: what every client of a peer shares (SegmentBlocker, SegmentMapper, SegmentVolumes).
 * It binds one dynamic port, sends each call as one request, turns failed replies back into the
 * peer's ArchipelagoError (wire.ts), and **retries** idempotent calls that failed because the peer
 * died or stopped: such a request comes back failed with no payload (failed back by `recoverport`
 * or by the restarted peer binding its port) or with `ECLOSED` + `details.stopping` (a clean
 * stop). The retried request waits in the peer's queue until a new peer serves it, so a restart
 * is transparent; after `retryTimeoutMs` without an answer the call fails with `ETIMEDOUT`.
 */
import { ArchipelagoError } from '@archipelago/libxseg';
import { type Port, Segment, type SubmitOptions, type XsegReply } from '@archipelago/libxseg/segment';
import { daemonSpin, decodeError, isPeerGone } from '../protocol/wire.js';

/**
 * Every reply a client gets is released in a `finally` (or, late, by withTimeout), so it skips
 * the segment's FinalizationRegistry safety net: 2–5 µs less per round trip (bench/xseg).
 */
export const UNTRACKED = { tracked: false } as const;

export interface PeerClientOptions {
  /** A joined segment (shared, not closed by us), or a spec/name to join (closed on close()). */
  segment: Segment | string;
  /** The peer's port. */
  port: number;
  /**
   * How long a call that failed because the peer died or stopped is retried, in ms (default
   * 30000; 0 disables retries).
   */
  retryTimeoutMs?: number;
}

/** What a call sends: submit options, or a filled prepared request (zero copy). */
export type Send = Omit<SubmitOptions, 'dst'>;

export class PeerClient {
  readonly peerPort: number;
  protected readonly segment: Segment;
  private readonly ownsSegment: boolean;
  protected readonly port: Port;
  private readonly inflight = new Set<Promise<unknown>>();
  protected closed = false;
  private readonly retryTimeoutMs: number;
  /** Calls retried after the peer died or stopped (for tests and logs). */
  retries = 0;

  constructor(
    opts: PeerClientOptions,
    private readonly peerName: string,
  ) {
    this.peerPort = opts.port;
    this.retryTimeoutMs = opts.retryTimeoutMs ?? 30_000;
    if (typeof opts.segment === 'string') {
      this.segment = Segment.join(opts.segment);
      this.ownsSegment = true;
    } else {
      this.segment = opts.segment;
      this.ownsSegment = false;
    }
    try {
      this.port = this.segment.bindDynamicPort();
      this.port.setSpin(daemonSpin());
    } catch (e) {
      if (this.ownsSegment) this.segment.close();
      throw e;
    }
    this.port.unref();
  }

  /** The dynamic port this client sends from. */
  get clientPort(): number {
    return this.port.number;
  }

  private follow<T>(p: Promise<T>): Promise<T> {
    if (this.inflight.size === 0) this.port.ref();
    this.inflight.add(p);
    const done = () => {
      this.inflight.delete(p);
      if (this.inflight.size === 0 && !this.closed) this.port.unref();
    };
    p.then(done, done);
    return p;
  }

  /**
   * Sends one request and resolves with the reply (the caller releases it), or rejects with the
   * peer's error. `retry`: the call is idempotent and may be sent again after the peer died.
   * `send` may fill a prepared request itself (it is called again for a retry).
   */
  protected async request(
    what: string,
    o: Send | ((dst: number) => Promise<XsegReply>),
    retry = false,
  ): Promise<XsegReply> {
    if (this.closed) throw new ArchipelagoError('ECLOSED', `${what}: the ${this.peerName} client was closed`);
    const once = () =>
      typeof o === 'function' ? o(this.peerPort) : this.port.call({ ...o, dst: this.peerPort }, UNTRACKED);
    let deadline = 0;
    for (;;) {
      let reply: XsegReply;
      if (deadline === 0) reply = await this.follow(once());
      else reply = await this.withTimeout(what, once(), deadline);
      if (reply.error) {
        reply.release();
        throw reply.error;
      }
      if (reply.ok) return reply;
      const err = decodeError(reply.data, what, this.peerName);
      reply.release();
      if (!retry || this.retryTimeoutMs === 0 || this.closed || !isPeerGone(err)) throw err;
      if (deadline === 0) deadline = Date.now() + this.retryTimeoutMs;
      else if (Date.now() >= deadline) throw err;
      this.retries++;
    }
  }

  /** A retried call: it may wait in a dead peer's queue, so it has a deadline. */
  private withTimeout(what: string, p: Promise<XsegReply>, deadline: number): Promise<XsegReply> {
    const tracked = this.follow(p);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => {
          // The late reply, if it ever comes, is released unread; close() does not wait for it.
          this.inflight.delete(p);
          if (this.inflight.size === 0 && !this.closed) this.port.unref();
          tracked.then((r) => r.release()).catch(() => {});
          reject(
            new ArchipelagoError(
              'ETIMEDOUT',
              `${what}: the ${this.peerName} peer on port ${this.peerPort} did not come back within ${this.retryTimeoutMs} ms; start it (archipelago start) and retry`,
              { details: { port: this.peerPort, peer: this.peerName } },
            ),
          );
        },
        Math.max(0, deadline - Date.now()),
      );
      tracked.then(
        (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        (e) => {
          clearTimeout(timer);
          reject(e);
        },
      );
    });
  }

  /**
   * A read: the reply's first `length` bytes, copied out of the segment into a new buffer; the
   * reply is released. `Buffer.allocUnsafe` + `copy`, not `Buffer.from(view)`: the latter costs
   * ~60 ms per MiB here (it builds the copy through the typed-array constructor and faults fresh
   * pages in), the former one memcpy into the fresh pages (see README, "Where the time went").
   */
  protected async readReply(what: string, o: Send): Promise<Buffer> {
    const size = o.size ?? 0;
    const r = await this.request(what, { reserve: size, ...o }, true);
    try {
      if (r.data.length < size)
        throw new ArchipelagoError('EIO', `${what}: short reply (${r.data.length} < ${size})`);
      const out = Buffer.allocUnsafe(size);
      r.data.copy(out, 0, 0, size);
      return out;
    } finally {
      r.release();
    }
  }

  /** A read into the caller's buffer (`target.length` bytes): no fresh memory at all. */
  protected async readReplyInto(what: string, o: Send, target: Buffer): Promise<void> {
    const size = target.length;
    const r = await this.request(what, { reserve: size, ...o, size }, true);
    try {
      if (r.data.length < size)
        throw new ArchipelagoError('EIO', `${what}: short reply (${r.data.length} < ${size})`);
      r.data.copy(target, 0, 0, size);
    } finally {
      r.release();
    }
  }

  protected async simple(what: string, o: Send, retry = false): Promise<void> {
    (await this.request(what, o, retry)).release();
  }

  /** Round trip to the peer (op PING). */
  async ping(): Promise<void> {
    await this.simple('ping', { op: 0 });
  }

  /** Waits for calls in flight, then leaves the port (and the segment, when it joined it). */
  async disconnect(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.inflight]);
    try {
      this.port.close();
    } finally {
      if (this.ownsSegment) this.segment.close();
    }
  }
}
