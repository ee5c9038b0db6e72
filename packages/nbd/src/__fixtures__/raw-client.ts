/**
 * A deliberately simple NBD client over a raw socket, for sending exactly the bytes a test wants
 * (including garbage) and reading the server's answer byte by byte.
 */
import { connect, type Socket } from 'node:net';
// The magics are the spec's; a wrong one would fail every interop test with real clients.
import {
  IHAVEOPT,
  OPTION_REPLY_MAGIC,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
} from '../constants.js';

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export interface SimpleReply {
  kind: 'simple';
  error: number;
  cookie: bigint;
  data: Buffer;
}

export interface Chunk {
  kind: 'chunk';
  flags: number;
  type: number;
  cookie: bigint;
  payload: Buffer;
}

export class RawClient {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: (() => void) | undefined;
  private ended = false;
  readonly closed: Promise<void>;

  private constructor(readonly socket: Socket) {
    socket.on('data', (c: Buffer) => {
      this.chunks.push(c);
      this.buffered += c.length;
      this.wake();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) => {
      socket.once('close', () => {
        this.ended = true;
        this.wake();
        resolve();
      });
    });
    socket.once('end', () => {
      this.ended = true;
      this.wake();
    });
  }

  static connect(target: { path: string } | { port: number; host?: string }): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s =
        'path' in target ? connect({ path: target.path }) : connect({ port: target.port, host: target.host });
      s.once('connect', () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /** Reads exactly n bytes; rejects if the server closes first or after `timeoutMs`. */
  async read(n: number, timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buffered < n) {
      if (this.ended) throw new Error(`connection closed with ${this.buffered}/${n} bytes read`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} bytes (${this.buffered} buffered)`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = Buffer.from(all.subarray(0, n));
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered -= n;
    return out;
  }

  /** Bytes received but not yet read. */
  get pending(): number {
    return this.buffered;
  }

  write(b: Buffer): void {
    this.socket.write(b);
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Resolves true if the server closes the connection within `ms`. */
  async closesWithin(ms: number): Promise<boolean> {
    let t: NodeJS.Timeout | undefined;
    const r = await Promise.race([
      this.closed.then(() => true),
      new Promise<boolean>((resolve) => {
        t = setTimeout(() => resolve(false), ms);
      }),
    ]);
    clearTimeout(t);
    return r;
  }

  // --- handshake ---------------------------------------------------------------------------------

  /** Reads the 18-byte greeting and returns the handshake flags. */
  async greeting(): Promise<number> {
    const g = await this.read(18);
    if (g.toString('latin1', 0, 8) !== 'NBDMAGIC') throw new Error('bad NBDMAGIC');
    if (g.readBigUInt64BE(8) !== IHAVEOPT) throw new Error('bad IHAVEOPT');
    return g.readUInt16BE(16);
  }

  sendClientFlags(flags: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(flags >>> 0, 0);
    this.write(b);
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0), lengthOverride?: number): void {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(IHAVEOPT, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(lengthOverride ?? data.length, 12);
    this.write(Buffer.concat([h, data]));
  }

  async readOptionReply(): Promise<OptionReply> {
    const h = await this.read(20);
    if (h.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new Error('bad option reply magic');
    const len = h.readUInt32BE(16);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await this.read(len) };
  }

  /** Reads option replies up to and including the final one (ACK or an error). */
  async readOptionReplies(): Promise<OptionReply[]> {
    const out: OptionReply[] = [];
    for (;;) {
      const r = await this.readOptionReply();
      out.push(r);
      if (r.type === 1 || r.type >= 0x80000000) return out;
    }
  }

  /**
   * Fixed newstyle handshake ending in GO. Returns size and transmission flags.
   */
  async handshake(
    name: string,
    opts: { structured?: boolean; meta?: string[]; noZeroes?: boolean } = {},
  ): Promise<{ size: bigint; flags: number }> {
    await this.greeting();
    this.sendClientFlags(opts.noZeroes === false ? 1 : 3);
    if (opts.structured) {
      this.sendOption(8);
      const r = await this.readOptionReply();
      if (r.type !== 1) throw new Error(`STRUCTURED_REPLY refused: ${r.type.toString(16)}`);
    }
    if (opts.meta) {
      this.sendOption(10, metaPayload(name, opts.meta));
      const rs = await this.readOptionReplies();
      if (rs[rs.length - 1]!.type !== 1) throw new Error('SET_META_CONTEXT failed');
    }
    this.sendOption(7, goPayload(name, []));
    const replies = await this.readOptionReplies();
    const last = replies[replies.length - 1]!;
    if (last.type !== 1) throw new Error(`GO failed: ${last.type.toString(16)} ${last.data.toString()}`);
    const info = replies.find((r) => r.type === 3 && r.data.readUInt16BE(0) === 0);
    if (!info) throw new Error('no NBD_INFO_EXPORT');
    return { size: info.data.readBigUInt64BE(2), flags: info.data.readUInt16BE(10) };
  }

  // --- transmission ------------------------------------------------------------------------------

  sendRequest(
    type: number,
    opts: {
      flags?: number;
      cookie?: bigint;
      offset?: bigint | number;
      length?: number;
      payload?: Buffer;
    } = {},
  ): void {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(REQUEST_MAGIC, 0);
    h.writeUInt16BE(opts.flags ?? 0, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(opts.cookie ?? 1n, 8);
    h.writeBigUInt64BE(BigInt(opts.offset ?? 0), 16);
    h.writeUInt32BE(opts.length ?? opts.payload?.length ?? 0, 24);
    this.write(opts.payload ? Buffer.concat([h, opts.payload]) : h);
  }

  /**
   * Reads one reply message. For simple replies, `readLength(cookie)` says how many data bytes
   * follow a successful reply (the length of the READ with that cookie, else 0).
   */
  async readReply(readLength: (cookie: bigint) => number = () => 0): Promise<SimpleReply | Chunk> {
    const m = await this.read(4);
    const magic = m.readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC) {
      const r = await this.read(12);
      const error = r.readUInt32BE(0);
      const cookie = r.readBigUInt64BE(4);
      const data = error === 0 ? await this.read(readLength(cookie)) : Buffer.alloc(0);
      return { kind: 'simple', error, cookie, data };
    }
    if (magic === STRUCTURED_REPLY_MAGIC) {
      const r = await this.read(16);
      const len = r.readUInt32BE(12);
      return {
        kind: 'chunk',
        flags: r.readUInt16BE(0),
        type: r.readUInt16BE(2),
        cookie: r.readBigUInt64BE(4),
        payload: await this.read(len),
      };
    }
    throw new Error(`bad reply magic 0x${magic.toString(16)}`);
  }
}

export function goPayload(name: string, infos: number[]): Buffer {
  const n = Buffer.from(name);
  const b = Buffer.alloc(4 + n.length + 2 + 2 * infos.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((t, i) => {
    b.writeUInt16BE(t, 6 + n.length + 2 * i);
  });
  return b;
}

export function metaPayload(name: string, queries: string[]): Buffer {
  const parts: Buffer[] = [];
  const n = Buffer.from(name);
  const h = Buffer.alloc(4);
  h.writeUInt32BE(n.length, 0);
  parts.push(h, n);
  const c = Buffer.alloc(4);
  c.writeUInt32BE(queries.length, 0);
  parts.push(c);
  for (const q of queries) {
    const qb = Buffer.from(q);
    const l = Buffer.alloc(4);
    l.writeUInt32BE(qb.length, 0);
    parts.push(l, qb);
  }
  return Buffer.concat(parts);
}
