/**
 * The fixed newstyle handshake of one connection: the greeting, the client flags, then options
 * (EXPORT_NAME, INFO/GO with export info, LIST, ABORT, STRUCTURED_REPLY, LIST/SET_META_CONTEXT)
 * until the client picks an export; then the connection enters transmission.
 */
import type { Socket } from 'node:net';
import type { ByteQueue } from './byte-queue.js';
import {
  BASE_ALLOCATION,
  BASE_ALLOCATION_ID,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  INFO,
  KNOWN_CLIENT_FLAGS,
  MAX_OPTION_LENGTH,
  MAX_PAYLOAD,
  MAX_STRING,
  NBD_MAGIC,
  OPT,
  OPTION_REPLY_MAGIC,
  REP,
  TFLAG,
} from './constants.js';
import { messageOf } from './errno.js';
import type { ConnectionContext, ConnectionCore } from './phase.js';
import type { NbdExport, NbdLogger } from './types.js';

const ZEROES_124 = Buffer.alloc(124);
const utf8 = new TextDecoder('utf-8', { fatal: true });
/** Bytes a client may send ahead while an option is being answered before we call it abuse. */
const MAX_HANDSHAKE_BACKLOG = 1024 * 1024;

/** A malformed option: answered with ERR_INVALID, and the handshake goes on. */
class BadOption extends Error {}

/** Checks the fields of an export that the protocol constrains; returns its minimum block size. */
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
 * The handshake phase. It parses the connection's queue in the states `flags`, `optHeader`,
 * `optData` and `optBusy`, and answers each option before it reads the next one.
 */
export class Handshake {
  private readonly socket: Socket;
  private readonly queue: ByteQueue;
  private readonly ctx: ConnectionContext;
  private readonly log: NbdLogger;
  private noZeroes = false;
  private structured = false;
  private optCode = 0;
  private optLength = 0;
  /** Export name the last SET_META_CONTEXT was for, and whether it selected base:allocation. */
  private metaExport: string | undefined;
  private metaBaseAllocation = false;

  constructor(private readonly conn: ConnectionCore) {
    this.socket = conn.socket;
    this.queue = conn.queue;
    this.ctx = conn.ctx;
    this.log = conn.log;
  }

  /** Sends the server's greeting (magic, IHAVEOPT, handshake flags). */
  greet(): void {
    const greeting = Buffer.allocUnsafe(18);
    greeting.writeBigUInt64BE(NBD_MAGIC, 0);
    greeting.writeBigUInt64BE(IHAVEOPT, 8);
    greeting.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
    this.socket.write(greeting);
  }

  /** Parses as far as the queue goes; returns once it needs more bytes or the state left the handshake. */
  parse(): void {
    const conn = this.conn;
    for (;;) {
      switch (conn.state) {
        case 'flags': {
          if (this.queue.length < 4) return;
          const flags = this.queue.take(4).readUInt32BE(0);
          if ((flags & ~KNOWN_CLIENT_FLAGS) !== 0) {
            conn.drop('unknown client flags', { flags });
            return;
          }
          this.noZeroes = (flags & FLAG_C_NO_ZEROES) !== 0;
          conn.state = 'optHeader';
          break;
        }
        case 'optHeader': {
          if (this.queue.length < 16) return;
          const h = this.queue.take(16);
          if (h.readBigUInt64BE(0) !== IHAVEOPT) {
            conn.drop('bad option magic');
            return;
          }
          this.optCode = h.readUInt32BE(8);
          this.optLength = h.readUInt32BE(12);
          if (this.optLength > MAX_OPTION_LENGTH) {
            conn.drop('option too long', { option: this.optCode, length: this.optLength });
            return;
          }
          conn.state = 'optData';
          break;
        }
        case 'optData': {
          if (this.queue.length < this.optLength) return;
          const data = this.queue.take(this.optLength);
          const code = this.optCode;
          conn.state = 'optBusy';
          this.handleOption(code, data).then(
            () => {
              if (conn.state === 'optBusy') {
                conn.state = 'optHeader';
                conn.pump();
              }
            },
            (e: unknown) => conn.drop('option handling failed', { option: code, err: messageOf(e) }),
          );
          return;
        }
        case 'optBusy':
          if (this.queue.length > MAX_HANDSHAKE_BACKLOG) {
            conn.drop('client sent too much data before the option reply');
          }
          return;
        default:
          return;
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Option replies

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
    this.log.debug({ conn: this.conn.id, option, type: type.toString(16), message }, 'nbd: option refused');
    this.sendOptionReply(option, type, Buffer.from(message.slice(0, MAX_STRING), 'utf8'));
  }

  /** True once the connection is closing, so a late option answer must not be written. */
  private gone(): boolean {
    const s = this.conn.state;
    return s === 'closed' || s === 'disc';
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

  private enterTransmission(exp: NbdExport, minBlock: number): void {
    this.conn.enterTransmission({
      exp,
      minBlock,
      structured: this.structured,
      baseAllocation: this.structured && this.metaBaseAllocation && this.metaExport === exp.name,
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Options

  private async handleOption(code: number, data: Buffer): Promise<void> {
    try {
      switch (code) {
        case OPT.EXPORT_NAME:
          return await this.optExportName(data);
        case OPT.ABORT:
          this.sendOptionReply(code, REP.ACK);
          this.log.debug({ conn: this.conn.id }, 'nbd: client aborted the handshake');
          this.conn.state = 'disc';
          this.conn.maybeFinishDisconnect();
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

  /**
   * Looks an export up for INFO, GO or a meta context option. When there is none (or the lookup
   * failed) it answers ERR_UNKNOWN itself; it answers nothing once the connection is closing.
   * Resolves undefined in all those cases.
   */
  private async findExport(code: number, name: string): Promise<NbdExport | undefined> {
    let exp: NbdExport | undefined;
    try {
      exp = await this.ctx.lookup(name);
    } catch (e) {
      this.log.warn({ conn: this.conn.id, name, err: messageOf(e) }, 'nbd: export lookup failed');
      if (!this.gone()) {
        this.sendOptionError(code, REP.ERR_UNKNOWN, `export '${name}' is not available: ${messageOf(e)}`);
      }
      return undefined;
    }
    if (this.gone()) return undefined;
    if (!exp) this.sendOptionError(code, REP.ERR_UNKNOWN, `no export named '${name}'`);
    return exp;
  }

  private async optExportName(data: Buffer): Promise<void> {
    let exp: NbdExport | undefined;
    try {
      exp = await this.ctx.lookup(this.decodeName(data));
    } catch (e) {
      this.conn.drop('EXPORT_NAME lookup failed', { err: messageOf(e) });
      return;
    }
    if (this.gone()) return;
    if (!exp) {
      this.conn.drop('EXPORT_NAME for an unknown export', { name: data.toString('utf8', 0, 256) });
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
      this.log.error({ conn: this.conn.id, err: messageOf(e) }, 'nbd: listing exports failed');
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

    const exp = await this.findExport(code, name);
    if (!exp || this.gone()) return;
    let min: number;
    try {
      min = checkExport(exp);
    } catch (e) {
      this.log.error({ conn: this.conn.id, name, err: messageOf(e) }, 'nbd: export is misconfigured');
      this.sendOptionError(code, REP.ERR_PLATFORM, messageOf(e));
      return;
    }

    this.socket.cork();
    const info = Buffer.allocUnsafe(12);
    info.writeUInt16BE(INFO.EXPORT, 0);
    info.writeBigUInt64BE(BigInt(exp.size()), 2);
    info.writeUInt16BE(this.transmissionFlags(exp), 10);
    this.sendOptionReply(code, REP.INFO, info);
    if (wanted.has(INFO.NAME)) this.sendInfoString(code, INFO.NAME, exp.name);
    if (wanted.has(INFO.DESCRIPTION) && exp.description !== undefined) {
      this.sendInfoString(code, INFO.DESCRIPTION, exp.description.slice(0, MAX_STRING));
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

  /** One NBD_REP_INFO carrying a string (NBD_INFO_NAME, NBD_INFO_DESCRIPTION). */
  private sendInfoString(code: number, info: number, s: string): void {
    const n = Buffer.from(s, 'utf8');
    const d = Buffer.allocUnsafe(2 + n.length);
    d.writeUInt16BE(info, 0);
    n.copy(d, 2);
    this.sendOptionReply(code, REP.INFO, d);
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

    const exp = await this.findExport(code, name);
    if (!exp || this.gone()) return;
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
}
