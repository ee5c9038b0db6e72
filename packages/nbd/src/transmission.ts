/**
 * The transmission phase of one connection: request parsing, checks, dispatch to the export,
 * replies (as each request completes, so out of order), and back-pressure on in-flight bytes.
 * This is the data path: no `await`, closure or allocation here that a request does not need.
 */
import type { Socket } from 'node:net';
import { recvNowait, SEND_MAX_BUFFERS, sendNowait } from '@archipelago/fastio';
import type { ByteQueue } from './byte-queue.js';
import {
  CMD,
  CMD_FLAG,
  HARD_PAYLOAD_CAP,
  MAX_EXTENTS,
  MAX_PAYLOAD,
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOSPC,
  NBD_EOVERFLOW,
  NBD_EPERM,
  REQUEST_HEADER_SIZE,
  REQUEST_MAGIC,
  STATE_HOLE,
  STATE_ZERO,
} from './constants.js';
import { errnoFor, messageOf, NbdRequestError } from './errno.js';
import type { ConnectionContext, ConnectionCore, Negotiated } from './phase.js';
import type { ReadLease } from './read-pool.js';
import { encodeReply, OK, type Outcome, type Request, writeBuffers, writeReply } from './replies.js';
import type { NbdExport, NbdExtent, NbdLogger } from './types.js';

const toOk = (): Outcome => OK;

const CMD_NAMES: Record<number, string> = {
  [CMD.READ]: 'READ',
  [CMD.WRITE]: 'WRITE',
  [CMD.DISC]: 'DISC',
  [CMD.FLUSH]: 'FLUSH',
  [CMD.TRIM]: 'TRIM',
  [CMD.CACHE]: 'CACHE',
  [CMD.WRITE_ZEROES]: 'WRITE_ZEROES',
  [CMD.BLOCK_STATUS]: 'BLOCK_STATUS',
};

/**
 * The transmission phase. It parses the connection's queue in the states `reqHeader`,
 * `reqPayload` and `discard`; requests run concurrently, and each reply is written in one
 * synchronous burst as soon as its request completes.
 */
export class Transmission {
  private readonly socket: Socket;
  private readonly queue: ByteQueue;
  private readonly ctx: ConnectionContext;
  private readonly log: NbdLogger;
  private readonly id: number;
  private readonly exp: NbdExport;
  private readonly minBlock: number;
  private readonly structured: boolean;
  private readonly baseAllocation: boolean;

  /** A request whose WRITE payload is being received (`reqPayload`) or discarded (`discard`). */
  private pending: Request | undefined;
  /** The buffer a WRITE payload is being received into, once it is read straight from the socket. */
  private payload: { buf: Buffer; lease: ReadLease | undefined; filled: number } | undefined;
  /** The socket's fd for direct receives of WRITE payloads (`recvNowait`), or -1. */
  private readonly rfd: number;
  private discardLeft = 0;
  /** Requests dispatched and not answered yet. */
  inflight = 0;
  /** Back-pressure: header + WRITE payload + READ length of every request not flushed yet. */
  private inflightBytes = 0;
  private readPaused = false;
  /** True while replies of this event-loop turn are being gathered into one socket write. */
  private batching = false;
  /** The socket's fd for direct sends (`sendNowait`), or -1: replies go through the stream. */
  private readonly fd: number;
  /** Direct sends: reply buffers gathered in this tick, and what runs once each batch is sent. */
  private out: Buffer[] = [];
  private outDone: Array<() => void> = [];
  private flushQueued = false;
  private readonly flushTick = (): void => {
    this.flushQueued = false;
    this.flushReplies();
  };

  constructor(
    private readonly conn: ConnectionCore,
    n: Negotiated,
  ) {
    this.socket = conn.socket;
    this.queue = conn.queue;
    this.ctx = conn.ctx;
    this.log = conn.log;
    this.id = conn.id;
    this.exp = n.exp;
    this.minBlock = n.minBlock;
    this.structured = n.structured;
    this.baseAllocation = n.baseAllocation;
    // libuv's TCP and pipe handles expose their fd on Unix.
    const fd = (this.socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
    this.fd = this.ctx.directSend && typeof fd === 'number' && fd >= 0 ? fd : -1;
    this.rfd = this.ctx.directRecv && typeof fd === 'number' && fd >= 0 ? fd : -1;
  }

  /** Parses as far as the queue goes; returns once it needs more bytes or the state left transmission. */
  parse(): void {
    const conn = this.conn;
    const queue = this.queue;
    for (;;) {
      switch (conn.state) {
        case 'reqHeader': {
          if (this.inflightBytes > this.ctx.maxInflightBytes) {
            this.pauseReading();
            return;
          }
          if (queue.length < REQUEST_HEADER_SIZE) return;
          this.parseRequestHeader(queue.take(REQUEST_HEADER_SIZE));
          break;
        }
        case 'reqPayload': {
          const req = this.pending!;
          let dst = this.payload;
          if (dst === undefined) {
            if (queue.length >= req.length) {
              // A payload spread over several socket chunks is copied once anyway: into a pooled
              // slot (64 KiB..4 MiB) rather than a fresh Buffer, whose external memory would drive
              // V8 into a full GC every few dozen MiB of writes.
              const lease =
                queue.length > 0 && !queue.headHolds(req.length)
                  ? this.ctx.readPool?.acquire(req.length)
                  : undefined;
              const payload = lease ? queue.takeInto(lease.buf) : queue.take(req.length);
              this.pending = undefined;
              conn.state = 'reqHeader';
              this.dispatch(req, payload, undefined, lease);
              break;
            }
            if (!this.canRecv()) return;
            // Not all here: the payload's own buffer (a pooled slot from 64 KiB) takes what is
            // queued, then the rest straight from the socket, without a fresh 64 KiB chunk per
            // socket read and a second copy.
            const lease = this.ctx.readPool?.acquire(req.length);
            dst = { buf: lease ? lease.buf : Buffer.allocUnsafe(req.length), lease, filled: 0 };
            this.payload = dst;
          }
          const want = dst.buf.length;
          if (queue.length > 0) {
            const m = Math.min(queue.length, want - dst.filled);
            queue.takeInto(dst.buf.subarray(dst.filled, dst.filled + m));
            dst.filled += m;
          }
          while (dst.filled < want && this.canRecv()) {
            // Nothing there yet (EAGAIN), or the end of the stream or an error, which the
            // socket's stream reads and reports itself: wait for its next chunk.
            const n = recvNowait(this.rfd, dst.buf, dst.filled, want - dst.filled);
            if (n <= 0) return;
            dst.filled += n;
          }
          if (dst.filled < want) return;
          this.payload = undefined;
          this.pending = undefined;
          conn.state = 'reqHeader';
          this.dispatch(req, dst.buf, undefined, dst.lease);
          break;
        }
        case 'discard': {
          this.discardLeft -= queue.skip(this.discardLeft);
          if (this.discardLeft > 0) return;
          const req = this.pending!;
          this.pending = undefined;
          conn.state = 'reqHeader';
          this.dispatch(req, undefined, {
            kind: 'error',
            errno: NBD_EINVAL,
            message: `write payload of ${req.length} bytes exceeds the maximum payload ${MAX_PAYLOAD}`,
          });
          break;
        }
        default:
          return;
      }
    }
  }

  /** The connection stops parsing (soft disconnect): forget a partial request, keep draining the socket. */
  stop(): void {
    this.pending = undefined;
    this.abandonPayload();
    // Keep draining (and ignoring) the socket so the kernel buffers hold no unread data at close.
    this.resumeReading();
  }

  /**
   * Whether the next bytes may be taken straight from the socket: only while its stream is
   * flowing (not paused for back-pressure) and holds nothing it read ahead, or bytes would be
   * taken out of order.
   */
  private canRecv(): boolean {
    return (
      this.rfd >= 0 &&
      !this.readPaused &&
      this.socket.readableLength === 0 &&
      this.socket.readableFlowing === true
    );
  }

  /** A payload being received is abandoned (disconnect, close): its pool slot goes back. */
  abandonPayload(): void {
    this.payload?.lease?.release();
    this.payload = undefined;
  }

  private parseRequestHeader(h: Buffer): void {
    const magic = h.readUInt32BE(0);
    if (magic !== REQUEST_MAGIC) {
      this.conn.drop('bad request magic', { magic: magic.toString(16) });
      return;
    }
    const offHi = h.readUInt32BE(16);
    const req: Request = {
      flags: h.readUInt16BE(4),
      type: h.readUInt16BE(6),
      cookieHi: h.readUInt32BE(8),
      cookieLo: h.readUInt32BE(12),
      // Offsets beyond 2^53 cannot be exact; they are past any export's end anyway.
      offset: offHi > 0x1fffff ? Number.MAX_SAFE_INTEGER : offHi * 0x100000000 + h.readUInt32BE(20),
      length: h.readUInt32BE(24),
    };
    switch (req.type) {
      case CMD.WRITE:
        if (req.length > HARD_PAYLOAD_CAP) {
          this.conn.drop('write payload beyond the hard cap', { length: req.length });
        } else if (req.length > MAX_PAYLOAD) {
          this.log.warn({ conn: this.id, length: req.length }, 'nbd: oversized write payload discarded');
          this.pending = req;
          this.discardLeft = req.length;
          this.conn.state = 'discard';
        } else if (req.length === 0) {
          this.dispatch(req, Buffer.alloc(0));
        } else {
          this.pending = req;
          this.conn.state = 'reqPayload';
        }
        return;
      case CMD.DISC:
        this.log.debug({ conn: this.id, inflight: this.inflight }, 'nbd: client sent DISC');
        this.conn.beginDisconnect();
        return;
      default:
        this.dispatch(req);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Back-pressure

  private pauseReading(): void {
    if (!this.readPaused) {
      this.readPaused = true;
      this.socket.pause();
    }
  }

  private resumeReading(): void {
    if (this.readPaused) {
      this.readPaused = false;
      this.socket.resume();
    }
  }

  /** A reply was flushed: its bytes no longer count; parse again if that lifts the pause. */
  private release(cost: number): void {
    this.inflightBytes -= cost;
    if (this.inflightBytes < 0) this.inflightBytes = 0;
    if (
      this.readPaused &&
      this.conn.state === 'reqHeader' &&
      this.inflightBytes <= this.ctx.maxInflightBytes
    ) {
      this.resumeReading();
      this.conn.pump();
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Requests

  /** Checks a request; returns an error outcome, OK for an immediate success, or undefined. */
  private validate(req: Request, exp: NbdExport): Outcome | undefined {
    let allowed: number = CMD_FLAG.FUA;
    switch (req.type) {
      case CMD.READ:
        if (this.structured) allowed |= CMD_FLAG.DF;
        break;
      case CMD.WRITE_ZEROES:
        allowed |= CMD_FLAG.NO_HOLE | CMD_FLAG.FAST_ZERO;
        break;
      case CMD.BLOCK_STATUS:
        allowed |= CMD_FLAG.REQ_ONE;
        break;
      case CMD.WRITE:
      case CMD.FLUSH:
      case CMD.TRIM:
      case CMD.CACHE:
        break;
      default:
        return { kind: 'error', errno: NBD_EINVAL, message: `unknown command ${req.type}` };
    }
    const name = CMD_NAMES[req.type] ?? String(req.type);
    if ((req.flags & ~allowed) !== 0) {
      return {
        kind: 'error',
        errno: NBD_EINVAL,
        message: `flags 0x${req.flags.toString(16)} are not valid for ${name}`,
      };
    }
    const writes = req.type === CMD.WRITE || req.type === CMD.WRITE_ZEROES || req.type === CMD.TRIM;
    if (writes && exp.readonly) {
      return { kind: 'error', errno: NBD_EPERM, message: `${name} on a read-only export` };
    }
    if (req.type === CMD.FLUSH) return undefined;
    if (req.type === CMD.BLOCK_STATUS && !this.baseAllocation) {
      return { kind: 'error', errno: NBD_EINVAL, message: 'BLOCK_STATUS without a negotiated meta context' };
    }
    if (req.length === 0) return OK;
    if (req.type === CMD.READ && req.length > MAX_PAYLOAD) {
      return {
        kind: 'error',
        errno: NBD_EOVERFLOW,
        message: `read of ${req.length} bytes exceeds the maximum payload ${MAX_PAYLOAD}`,
      };
    }
    const min = this.minBlock;
    if (min > 1 && (req.offset % min !== 0 || req.length % min !== 0)) {
      return {
        kind: 'error',
        errno: NBD_EINVAL,
        message: `${name} at ${req.offset}+${req.length} is not aligned to the minimum block size ${min}`,
      };
    }
    const size = exp.size();
    if (req.offset + req.length > size) {
      return {
        kind: 'error',
        errno: req.type === CMD.WRITE || req.type === CMD.WRITE_ZEROES ? NBD_ENOSPC : NBD_EINVAL,
        message: `${name} at ${req.offset}+${req.length} is past the end of the export (${size} bytes)`,
      };
    }
    return undefined;
  }

  private dispatch(req: Request, payload?: Buffer, preset?: Outcome, payloadLease?: ReadLease): void {
    const exp = this.exp;
    const cost =
      REQUEST_HEADER_SIZE + (payload ? payload.length : 0) + (req.type === CMD.READ ? req.length : 0);
    this.inflight++;
    this.inflightBytes += cost;
    if (this.inflightBytes > this.ctx.maxInflightBytes) this.pauseReading();

    let early: Outcome | undefined;
    try {
      early = preset ?? this.validate(req, exp);
    } catch (e) {
      early = { kind: 'error', errno: errnoFor(e), message: messageOf(e) }; // e.g. size() threw
    }
    const run: Promise<Outcome> = early ? Promise.resolve(early) : this.start(req, exp, payload);
    run.then(
      (outcome) => this.settle(req, cost, early, payloadLease, outcome),
      (e: unknown) => this.settle(req, cost, early, payloadLease, this.failed(req, e)),
    );
  }

  /** The error outcome of a request whose export call failed (logged: EIO at error level). */
  private failed(req: Request, e: unknown): Outcome {
    const errno = errnoFor(e, (req.flags & CMD_FLAG.FAST_ZERO) !== 0);
    const level = errno === NBD_EIO ? 'error' : 'debug';
    this.log[level](
      {
        conn: this.id,
        cmd: CMD_NAMES[req.type],
        offset: req.offset,
        length: req.length,
        err: messageOf(e),
      },
      'nbd: request failed',
    );
    return { kind: 'error', errno, message: messageOf(e) };
  }

  /** A request came to `outcome`: frees its payload slot, replies, and lets a disconnect finish. */
  private settle(
    req: Request,
    cost: number,
    early: Outcome | undefined,
    payloadLease: ReadLease | undefined,
    outcome: Outcome,
  ): void {
    try {
      this.inflight--;
      // The payload's slot is free once the write succeeded (or was refused before it ran).
      // After a failed write a part of a multi-object write may still be reading it: the slot
      // is left out of the pool.
      if (payloadLease && (early !== undefined || outcome.kind !== 'error')) payloadLease.release();
      const lease = outcome.kind === 'data' ? outcome.lease : undefined;
      this.reply(req, outcome, () => {
        // The write that carried the slot is done (or was abandoned): the slot may be reused.
        lease?.release();
        this.release(cost);
      });
      this.conn.maybeFinishDisconnect();
    } catch (e) {
      this.conn.drop('internal error while replying', { err: messageOf(e) });
    }
  }

  /**
   * Runs a request on the export. WRITE and pooled READs (the data path) chain one callback on
   * the export's promise; the other commands go through `execute`. A synchronous throw becomes a
   * rejection.
   */
  private start(req: Request, exp: NbdExport, payload: Buffer | undefined): Promise<Outcome> {
    try {
      if (req.type === CMD.WRITE) {
        return exp.write(req.offset, payload!, { fua: (req.flags & CMD_FLAG.FUA) !== 0 }).then(toOk);
      }
      if (req.type === CMD.READ && exp.readInto) {
        const lease = this.ctx.readPool?.acquire(req.length);
        if (lease) {
          return exp.readInto(req.offset, lease.buf).then(
            (): Outcome => ({ kind: 'data', data: lease.buf, lease }),
            (e: unknown) => {
              // readInto settles only once nothing writes into the slot any more.
              lease.release();
              throw e;
            },
          );
        }
      }
      return this.execute(req, exp, payload);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  private async execute(req: Request, exp: NbdExport, payload: Buffer | undefined): Promise<Outcome> {
    const fua = (req.flags & CMD_FLAG.FUA) !== 0;
    switch (req.type) {
      case CMD.READ: {
        // (A pooled READ was started by `start`.)
        const data = await exp.read(req.offset, req.length);
        if (data.length !== req.length) {
          throw new NbdRequestError(
            NBD_EIO,
            `export returned ${data.length} bytes for a ${req.length}-byte read`,
          );
        }
        return { kind: 'data', data };
      }
      case CMD.WRITE:
        await exp.write(req.offset, payload!, { fua });
        return OK;
      case CMD.FLUSH:
        await exp.flush();
        return OK;
      case CMD.TRIM:
        await exp.trim(req.offset, req.length, { fua });
        return OK;
      case CMD.CACHE:
        if (exp.cache) await exp.cache(req.offset, req.length);
        return OK;
      case CMD.WRITE_ZEROES:
        await exp.writeZeroes(req.offset, req.length, {
          fua,
          noHole: (req.flags & CMD_FLAG.NO_HOLE) !== 0,
          fastZero: (req.flags & CMD_FLAG.FAST_ZERO) !== 0,
        });
        return OK;
      case CMD.BLOCK_STATUS: {
        const raw: NbdExtent[] = exp.blockStatus
          ? await exp.blockStatus(req.offset, req.length)
          : [{ length: req.length, hole: false, zero: false }];
        return { kind: 'extents', extents: normalizeExtents(raw, req) };
      }
      default:
        throw new NbdRequestError(NBD_EINVAL, `unknown command ${req.type}`);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Replies

  /**
   * Corks the socket for the rest of this event-loop turn: replies to requests that complete
   * together (one poll phase of I/O completions) leave in one writev instead of one syscall each.
   * Nested cork/uncork pairs inside a reply keep working (corking counts).
   */
  private batchReplies(): void {
    if (this.batching) return;
    this.batching = true;
    this.socket.cork();
    setImmediate(() => {
      this.batching = false;
      if (!this.socket.destroyed) this.socket.uncork();
    });
  }

  /** Writes one complete reply in a single synchronous burst; `done` runs once it is flushed. */
  private reply(req: Request, outcome: Outcome, done: () => void): void {
    const socket = this.socket;
    if (socket.destroyed || socket.writableEnded) {
      done();
      return;
    }
    if (this.fd >= 0) {
      // Gathered for one sendmsg: a lone reply (nothing else in flight: QD1) leaves at once,
      // the others when this tick's promise callbacks are done (replies to requests parsed from
      // one socket read complete in the same tick).
      encodeReply(this.out, this.structured, req, outcome);
      this.outDone.push(done);
      if (this.inflight === 0) this.flushReplies();
      else if (!this.flushQueued) {
        this.flushQueued = true;
        process.nextTick(this.flushTick);
      }
      return;
    }
    // A lone reply (nothing else in flight: QD1) leaves at once; with more in flight, replies of
    // this turn are gathered (`inflight` already excludes this request).
    if (this.inflight > 0) this.batchReplies();
    writeReply(socket, this.structured, req, outcome, done);
  }

  /**
   * Sends the gathered replies: straight to the socket while its stream has nothing queued (the
   * kernel copies the bytes, so the buffers and their pool slots are free at once); whatever the
   * socket does not take goes through the stream, in order, and those replies are done once the
   * stream flushed them. Always sends (or hands to the stream) everything gathered so far, so a
   * socket.end() after it cannot overtake a reply.
   */
  flushReplies(): void {
    const bufs = this.out;
    const dones = this.outDone;
    if (bufs.length === 0) return;
    this.out = [];
    this.outDone = [];
    const socket = this.socket;
    if (socket.destroyed || socket.writableEnded) {
      for (const d of dones) d();
      return;
    }
    let i = 0;
    if (socket.writableLength === 0) {
      while (i < bufs.length) {
        const batch = i === 0 && bufs.length <= SEND_MAX_BUFFERS ? bufs : bufs.slice(i, i + SEND_MAX_BUFFERS);
        let want = 0;
        for (const b of batch) want += b.length;
        const n = sendNowait(this.fd, batch);
        if (n <= 0) break; // full (EAGAIN) or an error: the stream sends the rest and reports it
        let left = n;
        while (left > 0) {
          const len = bufs[i]!.length;
          if (left >= len) {
            left -= len;
            i++;
          } else {
            bufs[i] = bufs[i]!.subarray(left); // the rest of a partly sent buffer
            left = 0;
          }
        }
        if (n < want) break;
      }
      // Skip empty buffers left at the end (zero-length data of an empty READ).
      while (i < bufs.length && bufs[i]!.length === 0) i++;
    }
    if (i === bufs.length) {
      for (const d of dones) d();
      return;
    }
    writeBuffers(socket, bufs, i, () => {
      for (const d of dones) d();
    });
  }
}

/** Clips to the request, drops empty extents, merges equal neighbours, applies REQ_ONE. */
function normalizeExtents(raw: NbdExtent[], req: Request): number[] {
  const out: number[] = [];
  let covered = 0;
  const max = (req.flags & CMD_FLAG.REQ_ONE) !== 0 ? 1 : MAX_EXTENTS;
  for (const e of raw) {
    if (!(e.length > 0)) continue;
    const len = Math.min(Math.floor(e.length), req.length - covered);
    if (len <= 0) break;
    const flags = (e.hole ? STATE_HOLE : 0) | (e.zero ? STATE_ZERO : 0);
    const n = out.length;
    if (n > 0 && out[n - 1] === flags) {
      out[n - 2]! += len;
    } else {
      if (n / 2 >= max) break;
      out.push(len, flags);
    }
    covered += len;
    if (covered >= req.length) break;
  }
  if (out.length === 0) throw new NbdRequestError(NBD_EIO, 'export reported no extents');
  return out;
}
