import type { Socket } from 'node:net';
import { ByteQueue } from './byte-queue.js';
import {
  BASE_ALLOCATION,
  BASE_ALLOCATION_ID,
  CMD,
  CMD_FLAG,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  HARD_PAYLOAD_CAP,
  IHAVEOPT,
  INFO,
  KNOWN_CLIENT_FLAGS,
  MAX_EXTENTS,
  MAX_OPTION_LENGTH,
  MAX_PAYLOAD,
  MAX_STRING,
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOSPC,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_MAGIC,
  OPT,
  OPTION_REPLY_MAGIC,
  REP,
  REPLY_FLAG_DONE,
  REPLY_TYPE,
  REQUEST_HEADER_SIZE,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  STATE_HOLE,
  STATE_ZERO,
  STRUCTURED_REPLY_MAGIC,
  TFLAG,
} from './constants.js';
import { errnoFor, messageOf, NbdRequestError } from './errno.js';
import type { ReadBufferPool, ReadLease } from './read-pool.js';
import type { NbdExport, NbdExtent, NbdLogger } from './types.js';

/** Server-wide settings a connection needs. */
export interface ConnectionContext {
  readonly lookup: (name: string) => Promise<NbdExport | undefined>;
  readonly list: () => string[];
  readonly logger: NbdLogger;
  readonly maxInflightBytes: number;
  readonly multiConn: boolean;
  /** Reused buffers for large READ replies (exports with `readInto`); undefined: none. */
  readonly readPool: ReadBufferPool | undefined;
}

type State =
  | 'flags' // waiting for the 4-byte client flags
  | 'optHeader' // waiting for a 16-byte option header
  | 'optData' // waiting for the option payload
  | 'optBusy' // an option is being answered (export lookup may be async)
  | 'reqHeader' // transmission: waiting for a 28-byte request header
  | 'reqPayload' // transmission: waiting for a WRITE payload
  | 'discard' // transmission: throwing away an oversized WRITE payload
  | 'disc' // NBD_CMD_DISC (or server shutdown) seen: finishing in-flight requests
  | 'closed';

interface Request {
  flags: number;
  type: number;
  cookieHi: number;
  cookieLo: number;
  offset: number;
  length: number;
}

type Outcome =
  | { kind: 'ok' }
  // `lease`: `data` is a pool slot, released once the socket write carrying it completed.
  | { kind: 'data'; data: Buffer; lease?: ReadLease }
  | { kind: 'extents'; extents: number[] } // flattened [length, flags, length, flags, ...]
  | { kind: 'error'; errno: number; message: string };

const OK: Outcome = { kind: 'ok' };
const ZEROES_124 = Buffer.alloc(124);
const utf8 = new TextDecoder('utf-8', { fatal: true });
/** How long a soft disconnect may wait for the client to take the last replies. */
const DISCONNECT_FLUSH_MS = 30_000;
/** Bytes a client may send ahead while an option is being answered before we call it abuse. */
const MAX_HANDSHAKE_BACKLOG = 1024 * 1024;

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

class BadOption extends Error {}

/** Checks the fields of an export that the protocol constrains. */
function checkExport(exp: NbdExport): number {
  const min = exp.minBlockSize ?? 1;
  if (!Number.isInteger(min) || min < 1 || min > 65536 || (min & (min - 1)) !== 0) {
    throw new TypeError(`export ${exp.name}: minBlockSize ${min} is not a power of two in 1..65536`);
  }
  const size = exp.size();
  if (!Number.isSafeInteger(size) || size < 0) throw new TypeError(`export ${exp.name}: bad size ${size}`);
  return min;
}

/**
 * One client connection: the fixed newstyle handshake, then the transmission phase. Incoming bytes
 * are parsed by a small state machine (`pump`); requests run concurrently and each reply is
 * written in one synchronous burst, so replies never interleave.
 */
export class NbdConnection {
  private state: State = 'flags';
  private readonly queue = new ByteQueue();
  private readonly log: NbdLogger;

  // Handshake state.
  private noZeroes = false;
  private structured = false;
  private optCode = 0;
  private optLength = 0;
  /** Export name the last SET_META_CONTEXT was for, and whether it selected base:allocation. */
  private metaExport: string | undefined;
  private metaBaseAllocation = false;

  // Transmission state.
  private exp: NbdExport | undefined;
  private minBlock = 1;
  private baseAllocation = false;
  private pending: Request | undefined;
  private discardLeft = 0;
  private inflight = 0;
  private inflightBytes = 0;
  private readPaused = false;
  private graceTimer: NodeJS.Timeout | undefined;
  private readonly closed: Promise<void>;

  constructor(
    private readonly socket: Socket,
    private readonly ctx: ConnectionContext,
    readonly id: number,
    onClose: () => void,
  ) {
    this.log = ctx.logger;
    socket.setNoDelay(true);
    this.closed = new Promise<void>((resolve) => {
      socket.once('close', (hadError: boolean) => {
        if (this.state === 'reqPayload' || this.state === 'discard') {
          this.log.warn(
            { conn: this.id, state: this.state, hadError },
            'nbd: client vanished in the middle of a request',
          );
        }
        this.state = 'closed';
        this.queue.clear();
        this.inflightBytes = 0;
        if (this.graceTimer) clearTimeout(this.graceTimer);
        this.log.debug({ conn: this.id }, 'nbd: connection closed');
        onClose();
        resolve();
      });
    });
    socket.on('error', (e) => {
      this.log.debug({ conn: this.id, err: messageOf(e) }, 'nbd: socket error');
    });
    socket.on('data', (chunk: Buffer) => {
      if (this.state === 'closed' || this.state === 'disc') return; // drained and ignored
      this.queue.push(chunk);
      this.pump();
    });
    socket.on('end', () => {
      if (this.state === 'closed') return;
      if (this.state === 'reqPayload' || this.state === 'discard') {
        this.log.warn(
          { conn: this.id, state: this.state },
          'nbd: client vanished in the middle of a request',
        );
      } else if (this.queue.length > 0) {
        this.log.warn({ conn: this.id, state: this.state }, 'nbd: client closed after a truncated message');
      }
      this.queue.clear();
      // Finish whatever is in flight; a half-closed client can still read those replies.
      this.beginDisconnect();
    });
    const greeting = Buffer.allocUnsafe(18);
    greeting.writeBigUInt64BE(NBD_MAGIC, 0);
    greeting.writeBigUInt64BE(IHAVEOPT, 8);
    greeting.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
    socket.write(greeting);
  }

  /** Stops taking requests, lets in-flight ones finish (up to `graceMs`), then closes. */
  shutdown(graceMs: number): Promise<void> {
    if (this.state === 'closed') return this.closed;
    if (this.exp === undefined) {
      this.socket.destroy();
      return this.closed;
    }
    this.beginDisconnect();
    if ((this.state as State) !== 'closed' && !this.graceTimer) {
      this.graceTimer = setTimeout(() => {
        this.log.warn({ conn: this.id, inflight: this.inflight }, 'nbd: shutdown grace expired; dropping');
        this.socket.destroy();
      }, graceMs);
      this.graceTimer.unref();
    }
    return this.closed;
  }

  // ---------------------------------------------------------------------------------------------
  // Parsing

  private pump(): void {
    try {
      for (;;) {
        switch (this.state) {
          case 'closed':
          case 'disc':
            this.queue.clear();
            return;
          case 'flags': {
            if (this.queue.length < 4) return;
            const flags = this.queue.take(4).readUInt32BE(0);
            if ((flags & ~KNOWN_CLIENT_FLAGS) !== 0) {
              this.drop('unknown client flags', { flags });
              return;
            }
            this.noZeroes = (flags & FLAG_C_NO_ZEROES) !== 0;
            this.state = 'optHeader';
            break;
          }
          case 'optHeader': {
            if (this.queue.length < 16) return;
            const h = this.queue.take(16);
            if (h.readBigUInt64BE(0) !== IHAVEOPT) {
              this.drop('bad option magic');
              return;
            }
            this.optCode = h.readUInt32BE(8);
            this.optLength = h.readUInt32BE(12);
            if (this.optLength > MAX_OPTION_LENGTH) {
              this.drop('option too long', { option: this.optCode, length: this.optLength });
              return;
            }
            this.state = 'optData';
            break;
          }
          case 'optData': {
            if (this.queue.length < this.optLength) return;
            const data = this.queue.take(this.optLength);
            const code = this.optCode;
            this.state = 'optBusy';
            this.handleOption(code, data).then(
              () => {
                if (this.state === 'optBusy') {
                  this.state = 'optHeader';
                  this.pump();
                }
              },
              (e: unknown) => this.drop('option handling failed', { option: code, err: messageOf(e) }),
            );
            return;
          }
          case 'optBusy':
            if (this.queue.length > MAX_HANDSHAKE_BACKLOG) {
              this.drop('client sent too much data before the option reply');
              return;
            }
            return;
          case 'reqHeader': {
            if (this.inflightBytes > this.ctx.maxInflightBytes) {
              this.pauseReading();
              return;
            }
            if (this.queue.length < REQUEST_HEADER_SIZE) return;
            this.parseRequestHeader(this.queue.take(REQUEST_HEADER_SIZE));
            break;
          }
          case 'reqPayload': {
            const req = this.pending!;
            if (this.queue.length < req.length) return;
            const payload = this.queue.take(req.length);
            this.pending = undefined;
            this.state = 'reqHeader';
            this.dispatch(req, payload);
            break;
          }
          case 'discard': {
            this.discardLeft -= this.queue.skip(this.discardLeft);
            if (this.discardLeft > 0) return;
            const req = this.pending!;
            this.pending = undefined;
            this.state = 'reqHeader';
            this.dispatch(req, undefined, {
              kind: 'error',
              errno: NBD_EINVAL,
              message: `write payload of ${req.length} bytes exceeds the maximum payload ${MAX_PAYLOAD}`,
            });
            break;
          }
        }
      }
    } catch (e) {
      this.drop('internal error while parsing', { err: messageOf(e) });
    }
  }

  private parseRequestHeader(h: Buffer): void {
    const magic = h.readUInt32BE(0);
    if (magic !== REQUEST_MAGIC) {
      this.drop('bad request magic', { magic: magic.toString(16) });
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
          this.drop('write payload beyond the hard cap', { length: req.length });
        } else if (req.length > MAX_PAYLOAD) {
          this.log.warn({ conn: this.id, length: req.length }, 'nbd: oversized write payload discarded');
          this.pending = req;
          this.discardLeft = req.length;
          this.state = 'discard';
        } else if (req.length === 0) {
          this.dispatch(req, Buffer.alloc(0));
        } else {
          this.pending = req;
          this.state = 'reqPayload';
        }
        return;
      case CMD.DISC:
        this.log.debug({ conn: this.id, inflight: this.inflight }, 'nbd: client sent DISC');
        this.beginDisconnect();
        return;
      default:
        this.dispatch(req);
    }
  }

  /** Protocol violation or fatal error: log it and hard-disconnect this connection only. */
  private drop(reason: string, details: object = {}): void {
    if (this.state === 'closed') return;
    this.log.warn({ conn: this.id, state: this.state, ...details }, `nbd: dropping connection: ${reason}`);
    this.state = 'closed';
    this.queue.clear();
    this.socket.destroy();
  }

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

  /**
   * Soft disconnect (client DISC, client EOF, server shutdown): parse nothing more, finish the
   * in-flight requests, then flush the replies and close.
   */
  private beginDisconnect(): void {
    if (this.state === 'closed') return;
    if (this.state !== 'disc') {
      this.state = 'disc';
      this.queue.clear();
      this.pending = undefined;
      // Keep draining (and ignoring) the socket so the kernel buffers hold no unread data at close.
      this.resumeReading();
    }
    this.maybeFinishDisconnect();
  }

  private maybeFinishDisconnect(): void {
    if (this.state !== 'disc' || this.inflight > 0) return;
    if (this.socket.destroyed || this.socket.writableEnded) return;
    this.socket.once('finish', () => this.socket.destroy());
    this.socket.end();
    // A client that never reads its last replies must not keep the connection forever.
    setTimeout(() => this.socket.destroy(), DISCONNECT_FLUSH_MS).unref();
  }

  // ---------------------------------------------------------------------------------------------
  // Handshake

  private sendOptionReply(option: number, type: number, data?: Buffer): void {
    const h = Buffer.allocUnsafe(20);
    h.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(type, 12);
    h.writeUInt32BE(data ? data.length : 0, 16);
    if (data && data.length > 0) {
      this.socket.cork();
      this.socket.write(h);
      this.socket.write(data);
      this.socket.uncork();
    } else {
      this.socket.write(h);
    }
  }

  private sendOptionError(option: number, type: number, message: string): void {
    this.log.debug({ conn: this.id, option, type: type.toString(16), message }, 'nbd: option refused');
    this.sendOptionReply(option, type, Buffer.from(message.slice(0, MAX_STRING), 'utf8'));
  }

  /** True once the connection is closing, so a late option answer must not be written. */
  private gone(): boolean {
    return this.state === 'closed' || this.state === 'disc';
  }

  private async lookup(name: string): Promise<NbdExport | undefined> {
    return this.ctx.lookup(name);
  }

  private transmissionFlags(exp: NbdExport): number {
    let f =
      TFLAG.HAS_FLAGS |
      TFLAG.SEND_FLUSH |
      TFLAG.SEND_FUA |
      TFLAG.SEND_TRIM |
      TFLAG.SEND_WRITE_ZEROES |
      TFLAG.SEND_CACHE |
      TFLAG.SEND_FAST_ZERO;
    if (exp.readonly) f |= TFLAG.READ_ONLY;
    if (this.structured) f |= TFLAG.SEND_DF;
    if (this.ctx.multiConn) f |= TFLAG.CAN_MULTI_CONN;
    return f;
  }

  private async handleOption(code: number, data: Buffer): Promise<void> {
    try {
      switch (code) {
        case OPT.EXPORT_NAME:
          return await this.optExportName(data);
        case OPT.ABORT:
          this.sendOptionReply(code, REP.ACK);
          this.log.debug({ conn: this.id }, 'nbd: client aborted the handshake');
          this.state = 'disc';
          this.maybeFinishDisconnect();
          return;
        case OPT.LIST:
          return this.optList(data);
        case OPT.INFO:
        case OPT.GO:
          return await this.optInfoGo(code, data);
        case OPT.STRUCTURED_REPLY:
          if (data.length !== 0) throw new BadOption('STRUCTURED_REPLY takes no data');
          if (this.structured) throw new BadOption('structured replies already negotiated');
          this.structured = true;
          this.sendOptionReply(code, REP.ACK);
          return;
        case OPT.LIST_META_CONTEXT:
        case OPT.SET_META_CONTEXT:
          return await this.optMetaContext(code, data);
        case OPT.STARTTLS:
          this.sendOptionError(code, REP.ERR_UNSUP, 'TLS is not supported by this server');
          return;
        case OPT.EXTENDED_HEADERS:
          this.sendOptionError(code, REP.ERR_UNSUP, 'extended headers are not supported');
          return;
        default:
          this.sendOptionError(code, REP.ERR_UNSUP, `option ${code} is not supported`);
          return;
      }
    } catch (e) {
      if (e instanceof BadOption) {
        this.sendOptionError(code, REP.ERR_INVALID, e.message);
        return;
      }
      throw e;
    }
  }

  private decodeName(buf: Buffer): string {
    if (buf.length > MAX_STRING) throw new BadOption('name longer than 4096 bytes');
    let s: string;
    try {
      s = utf8.decode(buf);
    } catch {
      throw new BadOption('name is not valid UTF-8');
    }
    if (s.includes('\0')) throw new BadOption('name contains NUL');
    return s;
  }

  private async optExportName(data: Buffer): Promise<void> {
    let exp: NbdExport | undefined;
    try {
      exp = await this.lookup(this.decodeName(data));
    } catch (e) {
      this.drop('EXPORT_NAME lookup failed', { err: messageOf(e) });
      return;
    }
    if (this.gone()) return;
    if (!exp) {
      this.drop('EXPORT_NAME for an unknown export', { name: data.toString('utf8', 0, 256) });
      return;
    }
    const min = checkExport(exp);
    const reply = Buffer.allocUnsafe(10);
    reply.writeBigUInt64BE(BigInt(exp.size()), 0);
    reply.writeUInt16BE(this.transmissionFlags(exp), 8);
    this.socket.cork();
    this.socket.write(reply);
    if (!this.noZeroes) this.socket.write(ZEROES_124);
    this.socket.uncork();
    this.enterTransmission(exp, min);
  }

  private optList(data: Buffer): void {
    if (data.length !== 0) throw new BadOption('LIST takes no data');
    let names: string[];
    try {
      names = this.ctx.list();
    } catch (e) {
      this.log.error({ conn: this.id, err: messageOf(e) }, 'nbd: listing exports failed');
      this.sendOptionError(OPT.LIST, REP.ERR_POLICY, 'listing exports failed');
      return;
    }
    this.socket.cork();
    for (const name of names) {
      const n = Buffer.from(name, 'utf8');
      const d = Buffer.allocUnsafe(4 + n.length);
      d.writeUInt32BE(n.length, 0);
      n.copy(d, 4);
      this.sendOptionReply(OPT.LIST, REP.SERVER, d);
    }
    this.sendOptionReply(OPT.LIST, REP.ACK);
    this.socket.uncork();
  }

  private async optInfoGo(code: number, data: Buffer): Promise<void> {
    if (data.length < 6) throw new BadOption('INFO/GO payload too short');
    const nameLen = data.readUInt32BE(0);
    if (nameLen > data.length - 6) throw new BadOption('INFO/GO name length exceeds the payload');
    const name = this.decodeName(data.subarray(4, 4 + nameLen));
    const nInfo = data.readUInt16BE(4 + nameLen);
    if (data.length !== 6 + nameLen + 2 * nInfo) throw new BadOption('INFO/GO request count mismatch');
    const wanted = new Set<number>();
    for (let i = 0; i < nInfo; i++) wanted.add(data.readUInt16BE(6 + nameLen + 2 * i));

    let exp: NbdExport | undefined;
    try {
      exp = await this.lookup(name);
    } catch (e) {
      this.log.warn({ conn: this.id, name, err: messageOf(e) }, 'nbd: export lookup failed');
      if (this.gone()) return;
      this.sendOptionError(code, REP.ERR_UNKNOWN, `export '${name}' is not available: ${messageOf(e)}`);
      return;
    }
    if (this.gone()) return;
    if (!exp) {
      this.sendOptionError(code, REP.ERR_UNKNOWN, `no export named '${name}'`);
      return;
    }
    let min: number;
    try {
      min = checkExport(exp);
    } catch (e) {
      this.log.error({ conn: this.id, name, err: messageOf(e) }, 'nbd: export is misconfigured');
      this.sendOptionError(code, REP.ERR_PLATFORM, messageOf(e));
      return;
    }

    this.socket.cork();
    const info = Buffer.allocUnsafe(12);
    info.writeUInt16BE(INFO.EXPORT, 0);
    info.writeBigUInt64BE(BigInt(exp.size()), 2);
    info.writeUInt16BE(this.transmissionFlags(exp), 10);
    this.sendOptionReply(code, REP.INFO, info);
    if (wanted.has(INFO.NAME)) {
      const n = Buffer.from(exp.name, 'utf8');
      const d = Buffer.allocUnsafe(2 + n.length);
      d.writeUInt16BE(INFO.NAME, 0);
      n.copy(d, 2);
      this.sendOptionReply(code, REP.INFO, d);
    }
    if (wanted.has(INFO.DESCRIPTION) && exp.description !== undefined) {
      const n = Buffer.from(exp.description.slice(0, MAX_STRING), 'utf8');
      const d = Buffer.allocUnsafe(2 + n.length);
      d.writeUInt16BE(INFO.DESCRIPTION, 0);
      n.copy(d, 2);
      this.sendOptionReply(code, REP.INFO, d);
    }
    const bs = Buffer.allocUnsafe(14);
    bs.writeUInt16BE(INFO.BLOCK_SIZE, 0);
    bs.writeUInt32BE(min, 2);
    bs.writeUInt32BE(Math.max(4096, min), 6);
    bs.writeUInt32BE(MAX_PAYLOAD, 10);
    this.sendOptionReply(code, REP.INFO, bs);
    this.sendOptionReply(code, REP.ACK);
    this.socket.uncork();
    if (code === OPT.GO) this.enterTransmission(exp, min);
  }

  private async optMetaContext(code: number, data: Buffer): Promise<void> {
    if (!this.structured) throw new BadOption('meta contexts need structured replies first');
    if (data.length < 8) throw new BadOption('meta context payload too short');
    const nameLen = data.readUInt32BE(0);
    if (nameLen > data.length - 8) throw new BadOption('meta context export name exceeds the payload');
    const name = this.decodeName(data.subarray(4, 4 + nameLen));
    const nQueries = data.readUInt32BE(4 + nameLen);
    let p = 8 + nameLen;
    const queries: string[] = [];
    for (let i = 0; i < nQueries; i++) {
      if (p + 4 > data.length) throw new BadOption('meta context query count exceeds the payload');
      const qLen = data.readUInt32BE(p);
      p += 4;
      if (qLen > data.length - p) throw new BadOption('meta context query exceeds the payload');
      queries.push(this.decodeName(data.subarray(p, p + qLen)));
      p += qLen;
    }
    if (p !== data.length) throw new BadOption('trailing bytes after the meta context queries');

    let exp: NbdExport | undefined;
    try {
      exp = await this.lookup(name);
    } catch (e) {
      if (this.gone()) return;
      this.sendOptionError(code, REP.ERR_UNKNOWN, `export '${name}' is not available: ${messageOf(e)}`);
      return;
    }
    if (this.gone()) return;
    if (!exp) {
      this.sendOptionError(code, REP.ERR_UNKNOWN, `no export named '${name}'`);
      return;
    }

    const list = code === OPT.LIST_META_CONTEXT;
    let match: boolean;
    if (list) {
      match = queries.length === 0 || queries.some((q) => q === 'base:' || q === BASE_ALLOCATION);
    } else {
      match = queries.some((q) => q === BASE_ALLOCATION);
      this.metaExport = exp.name;
      this.metaBaseAllocation = match;
    }
    this.socket.cork();
    if (match) {
      const n = Buffer.from(BASE_ALLOCATION, 'utf8');
      const d = Buffer.allocUnsafe(4 + n.length);
      d.writeUInt32BE(list ? 0 : BASE_ALLOCATION_ID, 0);
      n.copy(d, 4);
      this.sendOptionReply(code, REP.META_CONTEXT, d);
    }
    this.sendOptionReply(code, REP.ACK);
    this.socket.uncork();
  }

  private enterTransmission(exp: NbdExport, min: number): void {
    this.exp = exp;
    this.minBlock = min;
    this.baseAllocation = this.structured && this.metaBaseAllocation && this.metaExport === exp.name;
    this.state = 'reqHeader';
    this.log.debug(
      { conn: this.id, export: exp.name, structured: this.structured, baseAllocation: this.baseAllocation },
      'nbd: transmission phase',
    );
  }

  // ---------------------------------------------------------------------------------------------
  // Transmission

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

  private dispatch(req: Request, payload?: Buffer, preset?: Outcome): void {
    const exp = this.exp!;
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
    const run: Promise<Outcome> = early ? Promise.resolve(early) : this.execute(req, exp, payload);
    run
      .catch((e: unknown): Outcome => {
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
      })
      .then((outcome) => {
        this.inflight--;
        const lease = outcome.kind === 'data' ? outcome.lease : undefined;
        this.reply(req, outcome, () => {
          // The write that carried the slot is done (or was abandoned): the slot may be reused.
          lease?.release();
          this.release(cost);
        });
        this.maybeFinishDisconnect();
      })
      .catch((e: unknown) => this.drop('internal error while replying', { err: messageOf(e) }));
  }

  private release(cost: number): void {
    this.inflightBytes -= cost;
    if (this.inflightBytes < 0) this.inflightBytes = 0;
    if (this.readPaused && this.state === 'reqHeader' && this.inflightBytes <= this.ctx.maxInflightBytes) {
      this.resumeReading();
      this.pump();
    }
  }

  private async execute(req: Request, exp: NbdExport, payload: Buffer | undefined): Promise<Outcome> {
    const fua = (req.flags & CMD_FLAG.FUA) !== 0;
    switch (req.type) {
      case CMD.READ: {
        const lease = exp.readInto ? this.ctx.readPool?.acquire(req.length) : undefined;
        if (lease) {
          try {
            await exp.readInto!(req.offset, lease.buf);
          } catch (e) {
            // readInto settles only once nothing writes into the slot any more.
            lease.release();
            throw e;
          }
          return { kind: 'data', data: lease.buf, lease };
        }
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
        return { kind: 'extents', extents: this.normalizeExtents(raw, req) };
      }
      default:
        throw new NbdRequestError(NBD_EINVAL, `unknown command ${req.type}`);
    }
  }

  /** Clips to the request, drops empty extents, merges equal neighbours, applies REQ_ONE. */
  private normalizeExtents(raw: NbdExtent[], req: Request): number[] {
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

  // ---------------------------------------------------------------------------------------------
  // Replies

  /** True while replies of this event-loop turn are being gathered into one socket write. */
  private batching = false;

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
    // A lone reply (nothing else in flight: QD1) leaves at once; with more in flight, replies of
    // this turn are gathered (`inflight` already excludes this request).
    if (this.inflight > 0) this.batchReplies();
    if (!this.structured) {
      const h = Buffer.allocUnsafe(16);
      h.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
      h.writeUInt32BE(outcome.kind === 'error' ? outcome.errno : 0, 4);
      h.writeUInt32BE(req.cookieHi, 8);
      h.writeUInt32BE(req.cookieLo, 12);
      if (outcome.kind === 'data') {
        socket.cork();
        socket.write(h);
        socket.write(outcome.data, () => done());
        socket.uncork();
      } else {
        socket.write(h, () => done());
      }
      return;
    }
    switch (outcome.kind) {
      case 'ok': {
        if (req.type === CMD.READ) {
          // Zero-length structured read: a lone NONE chunk.
          socket.write(this.chunkHeader(req, REPLY_FLAG_DONE, REPLY_TYPE.NONE, 0), () => done());
          return;
        }
        const h = Buffer.allocUnsafe(16);
        h.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
        h.writeUInt32BE(0, 4);
        h.writeUInt32BE(req.cookieHi, 8);
        h.writeUInt32BE(req.cookieLo, 12);
        socket.write(h, () => done());
        return;
      }
      case 'data': {
        const h = this.chunkHeader(req, REPLY_FLAG_DONE, REPLY_TYPE.OFFSET_DATA, 8 + outcome.data.length, 8);
        h.writeUInt32BE(Math.floor(req.offset / 0x100000000), 20);
        h.writeUInt32BE(req.offset >>> 0, 24);
        socket.cork();
        socket.write(h);
        socket.write(outcome.data, () => done());
        socket.uncork();
        return;
      }
      case 'extents': {
        const ext = outcome.extents;
        const payload = 4 + ext.length * 4;
        const h = this.chunkHeader(req, REPLY_FLAG_DONE, REPLY_TYPE.BLOCK_STATUS, payload, payload);
        h.writeUInt32BE(BASE_ALLOCATION_ID, 20);
        for (let i = 0; i < ext.length; i++) h.writeUInt32BE(ext[i]!, 24 + i * 4);
        socket.write(h, () => done());
        return;
      }
      case 'error': {
        const msg = Buffer.from(outcome.message.slice(0, 1024), 'utf8');
        const payload = 6 + msg.length;
        const h = this.chunkHeader(req, REPLY_FLAG_DONE, REPLY_TYPE.ERROR, payload, payload);
        h.writeUInt32BE(outcome.errno, 20);
        h.writeUInt16BE(msg.length, 24);
        msg.copy(h, 26);
        socket.write(h, () => done());
        return;
      }
    }
  }

  /** A 20-byte structured chunk header followed by `extra` bytes of room for the payload. */
  private chunkHeader(req: Request, flags: number, type: number, length: number, extra = 0): Buffer {
    const h = Buffer.allocUnsafe(20 + extra);
    h.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    h.writeUInt32BE(req.cookieHi, 8);
    h.writeUInt32BE(req.cookieLo, 12);
    h.writeUInt32BE(length, 16);
    return h;
  }
}
