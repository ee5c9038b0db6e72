/**
 * Transmission replies: what a request came to (`Outcome`) and its encoding as a simple reply or a
 * structured reply chunk. Each reply is written in one synchronous burst, so the bytes of two
 * replies never interleave on the socket.
 */
import type { Socket } from 'node:net';
import {
  BASE_ALLOCATION_ID,
  CMD,
  REPLY_FLAG_DONE,
  REPLY_TYPE,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
} from './constants.js';
import type { ReadLease } from './read-pool.js';

/** A parsed request header. */
export interface Request {
  flags: number;
  type: number;
  cookieHi: number;
  cookieLo: number;
  offset: number;
  length: number;
}

/** What a request came to: the reply to send. */
export type Outcome =
  | { kind: 'ok' }
  // `lease`: `data` is a pool slot, released once the socket write carrying it completed.
  | { kind: 'data'; data: Buffer; lease?: ReadLease }
  | { kind: 'extents'; extents: number[] } // flattened [length, flags, length, flags, ...]
  | { kind: 'error'; errno: number; message: string };

/** The one success without data. */
export const OK: Outcome = { kind: 'ok' };

/**
 * Appends the buffers of the complete reply to `req` to `out` (one or two: a header, and the data
 * of a READ): a simple reply, or (when `structured`) one chunk with the DONE flag; successes
 * without data get a simple reply either way, which the spec allows. The data buffer is
 * `outcome.data` itself (no copy).
 */
export function encodeReply(out: Buffer[], structured: boolean, req: Request, outcome: Outcome): void {
  if (!structured) {
    out.push(simpleHeader(req, outcome.kind === 'error' ? outcome.errno : 0));
    if (outcome.kind === 'data') out.push(outcome.data);
    return;
  }
  switch (outcome.kind) {
    case 'ok': {
      // Zero-length structured read: a lone NONE chunk.
      out.push(
        req.type === CMD.READ ? chunkHeader(req, REPLY_FLAG_DONE, REPLY_TYPE.NONE, 0) : simpleHeader(req, 0),
      );
      return;
    }
    case 'data': {
      const h = chunkHeader(req, REPLY_FLAG_DONE, REPLY_TYPE.OFFSET_DATA, 8 + outcome.data.length, 8);
      h.writeUInt32BE(Math.floor(req.offset / 0x100000000), 20);
      h.writeUInt32BE(req.offset >>> 0, 24);
      out.push(h, outcome.data);
      return;
    }
    case 'extents': {
      const ext = outcome.extents;
      const payload = 4 + ext.length * 4;
      const h = chunkHeader(req, REPLY_FLAG_DONE, REPLY_TYPE.BLOCK_STATUS, payload, payload);
      h.writeUInt32BE(BASE_ALLOCATION_ID, 20);
      for (let i = 0; i < ext.length; i++) h.writeUInt32BE(ext[i]!, 24 + i * 4);
      out.push(h);
      return;
    }
    case 'error': {
      const msg = Buffer.from(outcome.message.slice(0, 1024), 'utf8');
      const payload = 6 + msg.length;
      const h = chunkHeader(req, REPLY_FLAG_DONE, REPLY_TYPE.ERROR, payload, payload);
      h.writeUInt32BE(outcome.errno, 20);
      h.writeUInt16BE(msg.length, 24);
      msg.copy(h, 26);
      out.push(h);
      return;
    }
  }
}

/**
 * Writes `bufs` to the socket's stream in one synchronous burst (one writev when there are
 * several); `done` runs once the socket write carrying the last of them completed (or failed).
 */
export function writeBuffers(socket: Socket, bufs: readonly Buffer[], from: number, done: () => void): void {
  const last = bufs.length - 1;
  if (from === last) {
    socket.write(bufs[last]!, () => done());
    return;
  }
  socket.cork();
  for (let i = from; i < last; i++) socket.write(bufs[i]!);
  socket.write(bufs[last]!, () => done());
  socket.uncork();
}

/**
 * Writes the complete reply to `req` in a single synchronous burst through the socket's stream;
 * `done` runs once the socket write carrying it completed (or at once if the socket is gone).
 */
export function writeReply(
  socket: Socket,
  structured: boolean,
  req: Request,
  outcome: Outcome,
  done: () => void,
): void {
  const bufs: Buffer[] = [];
  encodeReply(bufs, structured, req, outcome);
  writeBuffers(socket, bufs, 0, done);
}

/** The 16-byte simple reply header. */
function simpleHeader(req: Request, errno: number): Buffer {
  const h = Buffer.allocUnsafe(16);
  h.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  h.writeUInt32BE(errno, 4);
  h.writeUInt32BE(req.cookieHi, 8);
  h.writeUInt32BE(req.cookieLo, 12);
  return h;
}

/** A 20-byte structured chunk header followed by `extra` bytes of room for the payload. */
function chunkHeader(req: Request, flags: number, type: number, length: number, extra = 0): Buffer {
  const h = Buffer.allocUnsafe(20 + extra);
  h.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  h.writeUInt16BE(flags, 4);
  h.writeUInt16BE(type, 6);
  h.writeUInt32BE(req.cookieHi, 8);
  h.writeUInt32BE(req.cookieLo, 12);
  h.writeUInt32BE(length, 16);
  return h;
}
