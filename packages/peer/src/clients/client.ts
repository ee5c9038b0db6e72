/**
 * PeerClient: what every client of a peer shares (SegmentBlocker, SegmentMapper, SegmentVolumes).
 * It binds one dynamic port, sends each call as one request, turns failed replies back into the
 * peer's ArchipelagoError (wire.ts), and **retries** idempotent calls that failed because the peer
 * died or stopped: such a request comes back failed with no payload (failed back by `recoverport`
 * or by the restarted peer binding its port) or with `ECLOSED` + `details.stopping` (a clean
 * stop). The retried request waits in the peer's queue until a new peer serves it, so a restart
 * is transparent; after `retryTimeoutMs` without an answer the call fails with `ETIMEDOUT`.
 *
 * **Dead peers** (no call ever hangs): while calls are in flight and none has been answered for a
 * watch period, the client looks at the peer's port in the segment. A live owner is a peer that
 * is just slow (left alone). No live owner: the calls wait for a new peer (a restart keeps the
 * segment, and a restarted peer serves what queued meanwhile), up to `deadPeerTimeoutMs`, then
 * fail with `ETIMEDOUT` (`details.peerDown`). No live owner *and* the segment file is gone or
 * another one (removed: `xseg destroy`, or replaced): nothing can ever answer, so every call
 * fails at once, and later ones too (`EIO`, `details.segmentGone`). `abort()` fails every call in
 * flight at once (a stopping process that will not wait for its peers).
 */
import { statSync } from 'node:fs';
import { ArchipelagoError } from '@archipelago/libxseg';
import { type Port, Segment, type SubmitOptions, type XsegReply } from '@archipelago/libxseg/segment';
import { envPeerDownTimeoutMs } from '../options.js';
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
  /**
   * How long calls may wait while the peer is not running (its port has no live owner), in ms;
   * then they fail with `ETIMEDOUT` (default: `ARCHIPELAGO_PEER_DOWN_TIMEOUT_MS` of the
   * environment, else `retryTimeoutMs`, else 30000; 0: wait for ever). The peers' own clients of
   * other peers (vlmcd and mapperd to blockerb and blockerm) take the default too, so a dead
   * blocker peer fails a `vlmc` or NBD request through vlmcd after that long, not never.
   */
  deadPeerTimeoutMs?: number;
}

// In options.ts (a module without the segment's native code, for the runtime to import eagerly).
export { envPeerDownTimeoutMs, PEER_DOWN_TIMEOUT_ENV } from '../options.js';

/** What a client sees of its peer (`PeerClient.peerState`). */
export type PeerState = 'running' | 'down' | 'segment gone';

/** How often a client with unanswered calls looks at its peer (ms). */
export const PEER_WATCH_MS = 250;

/** A call in flight: how to fail it, and its retry deadline's timer. */
interface Call {
  reject: (e: unknown) => void;
  timer: NodeJS.Timeout | undefined;
}

/** The identity of a segment's file (`/dev/shm/<name>`) when a client first saw it. */
const segmentFiles = new WeakMap<Segment, string | null>();

function fileIdentity(name: string): string | null {
  try {
    const st = statSync(`/dev/shm/${name}`, { bigint: true });
    return `${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}

/** What a call sends: submit options, or a filled prepared request (zero copy). */
export type Send = Omit<SubmitOptions, 'dst'>;

export class PeerClient {
  readonly peerPort: number;
  protected readonly segment: Segment;
  private readonly ownsSegment: boolean;
  protected readonly port: Port;
  private readonly pending = new Set<Call>();
  /** Calls answered (or failed) so far: the watch sees whether any was since its last look. */
  private settled = 0;
  private seen = 0;
  private watchTimer: NodeJS.Timeout | undefined;
  /** Since when (Date.now()) the peer has been seen down with calls waiting; 0: it was not. */
  private downSince = 0;
  /** Set once nothing can answer any more (the segment is gone): every call fails with it. */
  private broken: ArchipelagoError | null = null;
  private idle: (() => void) | undefined;
  protected closed = false;
  private readonly retryTimeoutMs: number;
  private readonly deadPeerTimeoutMs: number;
  /** Calls retried after the peer died or stopped (for tests and logs). */
  retries = 0;

  constructor(
    opts: PeerClientOptions,
    private readonly peerName: string,
  ) {
    this.peerPort = opts.port;
    this.retryTimeoutMs = opts.retryTimeoutMs ?? 30_000;
    this.deadPeerTimeoutMs =
      opts.deadPeerTimeoutMs ?? envPeerDownTimeoutMs() ?? (opts.retryTimeoutMs || 30_000);
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
    if (!segmentFiles.has(this.segment)) segmentFiles.set(this.segment, fileIdentity(this.segment.name));
  }

  /** The dynamic port this client sends from. */
  get clientPort(): number {
    return this.port.number;
  }

  /**
   * The reply of `p`, unless the call is given up first (`giveUp`: a retry deadline, a dead peer,
   * `abort`); a reply that comes after that is released unread.
   */
  private follow(p: Promise<XsegReply>, deadline = 0, what = ''): Promise<XsegReply> {
    return new Promise<XsegReply>((resolve, reject) => {
      const call: Call = { reject, timer: undefined };
      if (this.pending.size === 0) this.port.ref();
      this.pending.add(call);
      this.watchTimer ??= setTimeout(this.watch, PEER_WATCH_MS).unref();
      if (deadline > 0)
        call.timer = setTimeout(
          () => this.giveUp(call, this.retryTimeout(what)),
          Math.max(0, deadline - Date.now()),
        );
      p.then(
        (r) => {
          if (!this.done(call)) releaseQuietly(r);
          else resolve(r);
        },
        (e: unknown) => {
          if (this.done(call)) reject(e);
        },
      );
    });
  }

  /** Ends a call's bookkeeping; false when it was given up already. */
  private done(call: Call): boolean {
    if (!this.pending.delete(call)) return false;
    if (call.timer !== undefined) clearTimeout(call.timer);
    this.settled++;
    if (this.pending.size === 0) {
      if (!this.closed) this.port.unref();
      this.idle?.();
    }
    return true;
  }

  private giveUp(call: Call, e: ArchipelagoError): void {
    if (this.done(call)) call.reject(e);
  }

  private retryTimeout(what: string): ArchipelagoError {
    return new ArchipelagoError(
      'ETIMEDOUT',
      `${what}: the ${this.peerName} peer on port ${this.peerPort} did not come back within ${this.retryTimeoutMs} ms; start it (archipelago start) and retry`,
      { details: { port: this.peerPort, peer: this.peerName } },
    );
  }

  /**
   * Looks at the peer while calls wait and none was answered since the last look (see the file
   * comment); runs every PEER_WATCH_MS while calls are in flight.
   */
  private readonly watch = (): void => {
    this.watchTimer = undefined;
    if (this.pending.size === 0) {
      this.downSince = 0;
      return;
    }
    if (this.settled !== this.seen) {
      this.seen = this.settled;
      this.downSince = 0;
    } else {
      const state = this.peerState();
      if (state === 'segment gone') {
        this.broken = new ArchipelagoError(
          'EIO',
          `the segment "${this.segment.name}" is gone (removed or replaced) and the ${this.peerName} peer on port ${this.peerPort} with it: nothing can answer this process any more; end it (vlmc unmap) and start again`,
          { details: { port: this.peerPort, peer: this.peerName, segmentGone: true } },
        );
        this.failAll(this.broken);
        return;
      }
      if (state === 'running') this.downSince = 0;
      else {
        const now = Date.now();
        if (this.downSince === 0) this.downSince = now;
        else if (this.deadPeerTimeoutMs > 0 && now - this.downSince >= this.deadPeerTimeoutMs) {
          this.failAll(
            new ArchipelagoError(
              'ETIMEDOUT',
              `the ${this.peerName} peer on port ${this.peerPort} has not been running for ${Math.round((now - this.downSince) / 1000)} s; start it (archipelago start) and retry`,
              { details: { port: this.peerPort, peer: this.peerName, peerDown: true } },
            ),
          );
          this.downSince = 0;
          return;
        }
      }
    }
    this.watchTimer = setTimeout(this.watch, PEER_WATCH_MS).unref();
  };

  /**
   * Whether a peer serves the port this client sends to: `running` (its port has a live owner),
   * `down` (no live owner: requests wait for a new peer), or `segment gone` (no live owner, and the
   * segment's file is gone or another one: no peer can ever take them).
   */
  peerState(): PeerState {
    if (this.broken) return 'segment gone';
    let alive: boolean;
    try {
      const p = this.segment.report().ports.find((x) => x.port === this.peerPort);
      alive = p?.bound === true && p.ownerAlive;
    } catch {
      return 'segment gone';
    }
    if (alive) return 'running';
    const file = fileIdentity(this.segment.name);
    return file === null || file !== segmentFiles.get(this.segment) ? 'segment gone' : 'down';
  }

  /** Fails every call in flight with `e` (their late replies, if any, are released unread). */
  private failAll(e: ArchipelagoError): void {
    for (const call of [...this.pending]) this.giveUp(call, e);
  }

  /**
   * Fails every call in flight at once (`ECLOSED`, `details.aborted`, never retried) and refuses
   * new ones: for a process that is stopping and will not wait for its peers any longer.
   */
  abort(reason = 'aborted'): void {
    this.broken ??= new ArchipelagoError('ECLOSED', `the ${this.peerName} client: ${reason}`, {
      details: { port: this.peerPort, peer: this.peerName, aborted: true },
    });
    this.failAll(this.broken);
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
    if (this.broken) throw this.broken;
    const once = () =>
      typeof o === 'function' ? o(this.peerPort) : this.port.call({ ...o, dst: this.peerPort }, UNTRACKED);
    let deadline = 0;
    for (;;) {
      const reply = await this.follow(once(), deadline, what);
      if (reply.error) {
        reply.release();
        throw reply.error;
      }
      if (reply.ok) return reply;
      const err = decodeError(reply.data, what, this.peerName);
      reply.release();
      if (!retry || this.retryTimeoutMs === 0 || this.closed || this.broken || !isPeerGone(err)) throw err;
      if (deadline === 0) deadline = Date.now() + this.retryTimeoutMs;
      else if (Date.now() >= deadline) throw err;
      this.retries++;
    }
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

  /**
   * Waits for calls in flight, then leaves the port (and the segment, when it joined it). Bounded:
   * calls to a peer that is gone fail (see the file comment), and `abort()` ends them at once.
   */
  async disconnect(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.pending.size > 0)
      await new Promise<void>((r) => {
        this.idle = r;
      });
    if (this.watchTimer !== undefined) clearTimeout(this.watchTimer);
    try {
      this.port.close();
    } finally {
      if (this.ownsSegment) this.segment.close();
    }
  }
}

function releaseQuietly(r: XsegReply): void {
  try {
    r.release();
  } catch {
    // the segment is closed: nothing to give back
  }
}
