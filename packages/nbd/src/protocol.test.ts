/**
 * Protocol conformance and hostile-input tests with a raw socket client: the exact bytes of the
 * handshake and the transmission phase, concurrency, back-pressure, and garbage of every kind.
 */
import { ArchipelagoError } from '@archipelago/libxseg';
import { afterEach, describe, expect, it } from 'vitest';
import { defer, memoryExports, serveDuringSuite, sleep, startServer } from './__fixtures__/harness.js';
import {
  type Chunk,
  goPayload,
  metaPayload,
  RawClient,
  type SimpleReply,
} from './__fixtures__/raw-client.js';
import {
  CMD,
  CMD_FLAG,
  EXTENDED_REQUEST_MAGIC,
  INFO,
  OPT,
  REP,
  REPLY_TYPE,
  REQUEST_MAGIC,
  TFLAG,
} from './constants.js';
import { MemoryExport } from './exports.js';
import type { NbdExtent } from './types.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const EPERM = 1;
const EIO = 5;
const EINVAL = 22;
const ENOSPC = 28;
const ENOTSUP = 95;

/** A MemoryExport whose reads and writes can be held at a gate, with call counters. */
class GatedExport extends MemoryExport {
  private gate: Promise<void> | undefined;
  /** Only requests at this offset wait for the gate (undefined: all). */
  private gateOffset: number | undefined;
  readCalls = 0;
  writeCalls = 0;

  /** Holds reads and writes (at `offset`, or all) until the returned function is called. */
  hold(offset?: number): () => void {
    const g = defer();
    this.gate = g.promise;
    this.gateOffset = offset;
    return () => g.resolve();
  }

  /** Lets every request through from now on (requests already held wait for their release). */
  open(): void {
    this.gate = undefined;
    this.gateOffset = undefined;
  }

  override async read(offset: number, length: number): Promise<Buffer> {
    this.readCalls++;
    if (this.gate && (this.gateOffset === undefined || this.gateOffset === offset)) await this.gate;
    return super.read(offset, length);
  }

  override async write(offset: number, data: Buffer, opts: { fua: boolean }): Promise<void> {
    this.writeCalls++;
    if (this.gate && (this.gateOffset === undefined || this.gateOffset === offset)) await this.gate;
    return super.write(offset, data, opts);
  }
}

/** Fails by offset: 0 → ENOSPC, 4096 → EREADONLY, 8192 → ERANGE, 12288 → plain Error. */
class FailingExport extends MemoryExport {
  private fail(offset: number): void {
    if (offset === 0) throw new ArchipelagoError('ENOSPC', 'backend full');
    if (offset === 4096) throw new ArchipelagoError('EREADONLY', 'snapshot is read-only');
    if (offset === 8192) throw new ArchipelagoError('ERANGE', 'past the end of the volume');
    if (offset === 12288) throw new Error('disk on fire');
  }
  override async read(offset: number, length: number): Promise<Buffer> {
    this.fail(offset);
    return super.read(offset, length);
  }
  override async write(offset: number, data: Buffer, opts: { fua: boolean }): Promise<void> {
    this.fail(offset);
    return super.write(offset, data, opts);
  }
}

/** Reports many small alternating extents. */
class FragmentedExport extends MemoryExport {
  override async blockStatus(offset: number, length: number): Promise<NbdExtent[]> {
    const out: NbdExtent[] = [];
    for (let pos = offset, i = 0; pos < offset + length; pos += 4096, i++) {
      out.push({ length: Math.min(4096, offset + length - pos), hole: i % 2 === 1, zero: i % 2 === 1 });
    }
    return out;
  }
}

function pattern(len: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed * 7) & 0xff;
  return b;
}

/** Deterministic PRNG for the fuzz test. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 0x100000000;
  };
}

describe('NBD protocol (raw socket)', () => {
  const { mem, other, nofast, ro } = memoryExports({
    mem: { size: 8 * MiB, description: 'raw tests' },
    other: { size: 1 * MiB },
    nofast: { size: 1 * MiB, fastZero: false },
    ro: { size: 1 * MiB, readonly: true },
  });
  const gated = new GatedExport({ name: 'gated', size: 8 * MiB });
  const failing = new FailingExport({ name: 'failing', size: 1 * MiB });
  const fragmented = new FragmentedExport({ name: 'frag', size: 1 * MiB });
  const fx = serveDuringSuite([mem, other, gated, failing, fragmented, nofast, ro]);
  const clients: RawClient[] = [];

  async function open(): Promise<RawClient> {
    const c = await RawClient.connect({ path: fx.sock });
    clients.push(c);
    return c;
  }

  async function openGo(
    name = 'mem',
    opts: { structured?: boolean; meta?: string[] } = {},
  ): Promise<{ c: RawClient; flags: number; size: bigint }> {
    const c = await open();
    const r = await c.handshake(name, opts);
    return { c, ...r };
  }

  /** Sends one request and reads its (single-message) reply. */
  async function roundTrip(
    c: RawClient,
    type: number,
    opts: {
      flags?: number;
      cookie?: bigint;
      offset?: number | bigint;
      length?: number;
      payload?: Buffer;
    } = {},
  ): Promise<SimpleReply | Chunk> {
    c.sendRequest(type, opts);
    return c.readReply(() => (type === CMD.READ ? (opts.length ?? 0) : 0));
  }

  async function waitConnections(n: number): Promise<void> {
    for (let i = 0; i < 200 && fx.server.connections !== n; i++) await sleep(10);
    expect(fx.server.connections).toBe(n);
  }

  /** Proves a connection still works: write a pattern and read it back. */
  async function checkAlive(c: RawClient, seed: number): Promise<void> {
    const data = pattern(8192, seed);
    const offset = 65536 * (seed % 64);
    const w = await roundTrip(c, CMD.WRITE, { cookie: 100n, offset, payload: data });
    expect(w).toMatchObject({ kind: 'simple', error: 0, cookie: 100n });
    const r = await roundTrip(c, CMD.READ, { cookie: 101n, offset, length: 8192 });
    expect(r.kind).toBe('simple');
    expect((r as SimpleReply).data.equals(data)).toBe(true);
  }

  afterEach(() => {
    for (const c of clients.splice(0)) c.destroy();
    gated.open();
  });

  describe('handshake', () => {
    it('greets with FIXED_NEWSTYLE|NO_ZEROES and drops unknown client flags', async () => {
      const c = await open();
      expect(await c.greeting()).toBe(3);
      c.sendClientFlags(0x4);
      expect(await c.closesWithin(2000)).toBe(true);
      expect(fx.logs.some((l) => String(l.msg).includes('unknown client flags'))).toBe(true);
    });

    it('EXPORT_NAME: size + flags, 124 zero bytes unless NO_ZEROES; unknown name hard-disconnects', async () => {
      const a = await open();
      await a.greeting();
      a.sendClientFlags(3);
      a.sendOption(OPT.EXPORT_NAME, Buffer.from('mem'));
      const r = await a.read(10);
      expect(r.readBigUInt64BE(0)).toBe(BigInt(8 * MiB));
      const flags = r.readUInt16BE(8);
      expect(flags & TFLAG.HAS_FLAGS).toBeTruthy();
      expect(flags & TFLAG.SEND_DF).toBe(0); // no structured replies negotiated
      await checkAlive(a, 1);

      const b = await open();
      await b.greeting();
      b.sendClientFlags(1);
      b.sendOption(OPT.EXPORT_NAME, Buffer.from('mem'));
      const r2 = await b.read(134);
      expect(r2.subarray(10).equals(Buffer.alloc(124))).toBe(true);
      await checkAlive(b, 2);

      const u = await open();
      await u.greeting();
      u.sendClientFlags(3);
      u.sendOption(OPT.EXPORT_NAME, Buffer.from('no-such-export'));
      expect(await u.closesWithin(2000)).toBe(true);
      expect(u.pending).toBe(0);
    });

    it('answers unsupported options (STARTTLS, EXTENDED_HEADERS, unknown) with ERR_UNSUP and keeps going', async () => {
      const c = await open();
      await c.greeting();
      c.sendClientFlags(3);
      for (const opt of [OPT.STARTTLS, OPT.EXTENDED_HEADERS, OPT.PEEK_EXPORT, 99, 0xdeadbeef]) {
        c.sendOption(opt, Buffer.from('ignored payload'));
        const r = await c.readOptionReply();
        expect(r.option).toBe(opt);
        expect(r.type).toBe(REP.ERR_UNSUP);
      }
      c.sendOption(OPT.GO, goPayload('mem', []));
      const rs = await c.readOptionReplies();
      expect(rs[rs.length - 1]!.type).toBe(REP.ACK);
      await checkAlive(c, 3);
    });

    it('INFO replies EXPORT, NAME, DESCRIPTION, BLOCK_SIZE; unknown → ERR_UNKNOWN; malformed → ERR_INVALID', async () => {
      const c = await open();
      await c.greeting();
      c.sendClientFlags(3);
      c.sendOption(OPT.INFO, goPayload('mem', [INFO.NAME, INFO.DESCRIPTION, INFO.BLOCK_SIZE]));
      const rs = await c.readOptionReplies();
      expect(rs[rs.length - 1]!.type).toBe(REP.ACK);
      const infos = new Map(
        rs.filter((r) => r.type === REP.INFO).map((r) => [r.data.readUInt16BE(0), r.data]),
      );
      const e = infos.get(INFO.EXPORT)!;
      expect(e.length).toBe(12);
      expect(e.readBigUInt64BE(2)).toBe(BigInt(8 * MiB));
      const f = e.readUInt16BE(10);
      for (const bit of [
        TFLAG.HAS_FLAGS,
        TFLAG.SEND_FLUSH,
        TFLAG.SEND_FUA,
        TFLAG.SEND_TRIM,
        TFLAG.SEND_WRITE_ZEROES,
        TFLAG.CAN_MULTI_CONN,
        TFLAG.SEND_CACHE,
        TFLAG.SEND_FAST_ZERO,
      ]) {
        expect(f & bit, `flag ${bit}`).toBe(bit);
      }
      expect(f & TFLAG.READ_ONLY).toBe(0);
      expect(infos.get(INFO.NAME)!.subarray(2).toString()).toBe('mem');
      expect(infos.get(INFO.DESCRIPTION)!.subarray(2).toString()).toBe('raw tests');
      const bs = infos.get(INFO.BLOCK_SIZE)!;
      expect(bs.length).toBe(14);
      expect([bs.readUInt32BE(2), bs.readUInt32BE(6), bs.readUInt32BE(10)]).toEqual([1, 4096, 32 * MiB]);

      c.sendOption(OPT.INFO, goPayload('nope', []));
      const u = await c.readOptionReply();
      expect(u.type).toBe(REP.ERR_UNKNOWN);
      expect(u.data.toString()).toContain('nope');
      c.sendOption(OPT.GO, goPayload('nope', []));
      expect((await c.readOptionReply()).type).toBe(REP.ERR_UNKNOWN);

      const bad = goPayload('mem', [1]);
      bad.writeUInt32BE(1000, 0); // name length beyond the payload
      c.sendOption(OPT.INFO, bad);
      expect((await c.readOptionReply()).type).toBe(REP.ERR_INVALID);
      c.sendOption(OPT.GO, Buffer.concat([goPayload('mem', [1]), Buffer.from([0])])); // count mismatch
      expect((await c.readOptionReply()).type).toBe(REP.ERR_INVALID);
      c.sendOption(OPT.GO, Buffer.from([0, 0]));
      expect((await c.readOptionReply()).type).toBe(REP.ERR_INVALID);

      c.sendOption(OPT.GO, goPayload('ro', []));
      const go = await c.readOptionReplies();
      const ef = go.find((r) => r.type === REP.INFO && r.data.readUInt16BE(0) === INFO.EXPORT)!;
      expect(ef.data.readUInt16BE(10) & TFLAG.READ_ONLY).toBe(TFLAG.READ_ONLY);
      const w = await roundTrip(c, CMD.WRITE, { offset: 0, payload: Buffer.alloc(512) });
      expect(w).toMatchObject({ kind: 'simple', error: EPERM });
    });

    it('LIST returns every export then ACK; LIST with data → ERR_INVALID', async () => {
      const c = await open();
      await c.greeting();
      c.sendClientFlags(3);
      c.sendOption(OPT.LIST);
      const rs = await c.readOptionReplies();
      expect(rs[rs.length - 1]!.type).toBe(REP.ACK);
      const names = rs.filter((r) => r.type === REP.SERVER).map((r) => r.data.subarray(4).toString());
      expect(names.sort()).toEqual(['failing', 'frag', 'gated', 'mem', 'nofast', 'other', 'ro']);
      c.sendOption(OPT.LIST, Buffer.from('x'));
      expect((await c.readOptionReply()).type).toBe(REP.ERR_INVALID);
    });

    it('STRUCTURED_REPLY: ACK once, ERR_INVALID when repeated or with data', async () => {
      const c = await open();
      await c.greeting();
      c.sendClientFlags(3);
      c.sendOption(OPT.STRUCTURED_REPLY, Buffer.from('x'));
      expect((await c.readOptionReply()).type).toBe(REP.ERR_INVALID);
      c.sendOption(OPT.STRUCTURED_REPLY);
      expect((await c.readOptionReply()).type).toBe(REP.ACK);
      c.sendOption(OPT.STRUCTURED_REPLY);
      expect((await c.readOptionReply()).type).toBe(REP.ERR_INVALID);
    });

    it('LIST_META_CONTEXT / SET_META_CONTEXT with base:allocation and the base: wildcard', async () => {
      const c = await open();
      await c.greeting();
      c.sendClientFlags(3);
      c.sendOption(OPT.LIST_META_CONTEXT, metaPayload('mem', []));
      expect((await c.readOptionReply()).type).toBe(REP.ERR_INVALID); // needs structured replies
      c.sendOption(OPT.STRUCTURED_REPLY);
      await c.readOptionReply();

      const ctxNames = async (opt: number, name: string, qs: string[]) => {
        c.sendOption(opt, metaPayload(name, qs));
        const rs = await c.readOptionReplies();
        return {
          final: rs[rs.length - 1]!.type,
          ctx: rs
            .filter((r) => r.type === REP.META_CONTEXT)
            .map((r) => [r.data.readUInt32BE(0), r.data.subarray(4).toString()]),
        };
      };
      expect(await ctxNames(OPT.LIST_META_CONTEXT, 'mem', [])).toEqual({
        final: REP.ACK,
        ctx: [[0, 'base:allocation']],
      });
      expect(await ctxNames(OPT.LIST_META_CONTEXT, 'mem', ['base:'])).toEqual({
        final: REP.ACK,
        ctx: [[0, 'base:allocation']],
      });
      expect(await ctxNames(OPT.LIST_META_CONTEXT, 'mem', ['qemu:dirty-bitmap:x', 'base:nope'])).toEqual({
        final: REP.ACK,
        ctx: [],
      });
      expect((await ctxNames(OPT.LIST_META_CONTEXT, 'nope', [])).final).toBe(REP.ERR_UNKNOWN);
      c.sendOption(
        OPT.SET_META_CONTEXT,
        Buffer.concat([metaPayload('mem', ['base:allocation']), Buffer.from([1])]),
      );
      expect((await c.readOptionReply()).type).toBe(REP.ERR_INVALID);
      const q = metaPayload('mem', ['base:allocation']);
      q.writeUInt32BE(5, 7); // query count larger than the payload holds
      c.sendOption(OPT.SET_META_CONTEXT, q);
      expect((await c.readOptionReply()).type).toBe(REP.ERR_INVALID);
      expect(await ctxNames(OPT.SET_META_CONTEXT, 'mem', ['base:', 'x-foo:bar'])).toEqual({
        final: REP.ACK,
        ctx: [],
      });
      expect(await ctxNames(OPT.SET_META_CONTEXT, 'mem', ['base:allocation'])).toEqual({
        final: REP.ACK,
        ctx: [[1, 'base:allocation']],
      });
      c.sendOption(OPT.GO, goPayload('mem', []));
      const go = await c.readOptionReplies();
      expect(go[go.length - 1]!.type).toBe(REP.ACK);
      const r = await roundTrip(c, CMD.BLOCK_STATUS, { cookie: 7n, offset: 0, length: 65536 });
      expect(r).toMatchObject({ kind: 'chunk', type: REPLY_TYPE.BLOCK_STATUS, flags: 1, cookie: 7n });
      expect((r as Chunk).payload.readUInt32BE(0)).toBe(1);
    });

    it('contexts selected for one export do not carry over to GO on another', async () => {
      const c = await open();
      await c.greeting();
      c.sendClientFlags(3);
      c.sendOption(OPT.STRUCTURED_REPLY);
      await c.readOptionReply();
      c.sendOption(OPT.SET_META_CONTEXT, metaPayload('mem', ['base:allocation']));
      await c.readOptionReplies();
      c.sendOption(OPT.GO, goPayload('other', []));
      await c.readOptionReplies();
      const r = await roundTrip(c, CMD.BLOCK_STATUS, { offset: 0, length: 4096 });
      expect(r).toMatchObject({ kind: 'chunk', type: REPLY_TYPE.ERROR });
      expect((r as Chunk).payload.readUInt32BE(0)).toBe(EINVAL);
    });

    it('CAN_MULTI_CONN is advertised only when multiConn is on', async () => {
      const exp = new MemoryExport({ name: 'single', size: MiB });
      const single = await startServer([exp], { multiConn: false });
      try {
        const c = await RawClient.connect({ path: single.sock });
        clients.push(c);
        const { flags } = await c.handshake('single');
        expect(flags & TFLAG.CAN_MULTI_CONN).toBe(0);
      } finally {
        await single.close();
      }
      const { flags } = await openGo('mem');
      expect(flags & TFLAG.CAN_MULTI_CONN).toBe(TFLAG.CAN_MULTI_CONN);
    });

    it('ABORT is acknowledged, then the server closes', async () => {
      const c = await open();
      await c.greeting();
      c.sendClientFlags(3);
      c.sendOption(OPT.ABORT);
      expect((await c.readOptionReply()).type).toBe(REP.ACK);
      expect(await c.closesWithin(2000)).toBe(true);
    });

    it('an option longer than 64 KiB drops the connection', async () => {
      const c = await open();
      await c.greeting();
      c.sendClientFlags(3);
      c.sendOption(OPT.GO, Buffer.alloc(0), 1 << 20);
      expect(await c.closesWithin(2000)).toBe(true);
    });
  });

  describe('transmission', () => {
    it('simple replies for every command; unknown command → EINVAL and the connection continues', async () => {
      const { c, flags } = await openGo('mem');
      expect(flags & TFLAG.SEND_DF).toBe(0);
      const data = pattern(4096, 9);
      expect(
        await roundTrip(c, CMD.WRITE, { cookie: 1n, offset: 4096, payload: data, flags: CMD_FLAG.FUA }),
      ).toEqual({
        kind: 'simple',
        error: 0,
        cookie: 1n,
        data: Buffer.alloc(0),
      });
      const r = (await roundTrip(c, CMD.READ, {
        cookie: 0xfedcba9876543210n,
        offset: 4096,
        length: 4096,
      })) as SimpleReply;
      expect(r.cookie).toBe(0xfedcba9876543210n);
      expect(r.data.equals(data)).toBe(true);
      for (const [type, extra] of [
        [CMD.FLUSH, {}],
        [CMD.TRIM, { offset: 0, length: 65536 }],
        [CMD.WRITE_ZEROES, { offset: 65536, length: 65536, flags: CMD_FLAG.NO_HOLE }],
        [CMD.WRITE_ZEROES, { offset: 65536, length: 65536, flags: CMD_FLAG.FAST_ZERO }],
        [CMD.CACHE, { offset: 0, length: 8192 }],
      ] as const) {
        expect(await roundTrip(c, type, { cookie: 5n, ...extra })).toMatchObject({ error: 0, cookie: 5n });
      }
      expect(await roundTrip(c, 99, { cookie: 6n })).toMatchObject({
        kind: 'simple',
        error: EINVAL,
        cookie: 6n,
      });
      expect(await roundTrip(c, CMD.READ, { cookie: 7n, length: 512, flags: CMD_FLAG.DF })).toMatchObject({
        error: EINVAL,
      });
      expect(await roundTrip(c, CMD.BLOCK_STATUS, { cookie: 8n, length: 512 })).toMatchObject({
        error: EINVAL,
      });
      expect(await roundTrip(c, CMD.READ, { cookie: 9n, offset: 8 * MiB, length: 512 })).toMatchObject({
        error: EINVAL,
      });
      expect(
        await roundTrip(c, CMD.WRITE, { cookie: 10n, offset: 8 * MiB, payload: Buffer.alloc(512) }),
      ).toMatchObject({ error: ENOSPC });
      await checkAlive(c, 4);
    });

    it('structured replies: OFFSET_DATA reads, ERROR chunks with messages, NONE for empty reads', async () => {
      const { c, flags } = await openGo('mem', { structured: true });
      expect(flags & TFLAG.SEND_DF).toBe(TFLAG.SEND_DF);
      const data = pattern(65536, 3);
      await roundTrip(c, CMD.WRITE, { offset: 3 * MiB, payload: data });
      const r = (await roundTrip(c, CMD.READ, {
        cookie: 2n,
        offset: 3 * MiB,
        length: 65536,
        flags: CMD_FLAG.DF,
      })) as Chunk;
      expect(r).toMatchObject({ kind: 'chunk', type: REPLY_TYPE.OFFSET_DATA, flags: 1, cookie: 2n });
      expect(r.payload.readBigUInt64BE(0)).toBe(BigInt(3 * MiB));
      expect(r.payload.subarray(8).equals(data)).toBe(true);

      const e = (await roundTrip(c, CMD.READ, { cookie: 3n, offset: 8 * MiB, length: 4096 })) as Chunk;
      expect(e).toMatchObject({ kind: 'chunk', type: REPLY_TYPE.ERROR, flags: 1, cookie: 3n });
      expect(e.payload.readUInt32BE(0)).toBe(EINVAL);
      const msgLen = e.payload.readUInt16BE(4);
      expect(e.payload.length).toBe(6 + msgLen);
      expect(e.payload.subarray(6).toString()).toMatch(/past the end/);

      const z = (await roundTrip(c, CMD.READ, { cookie: 4n, offset: 0, length: 0 })) as Chunk;
      expect(z).toMatchObject({ kind: 'chunk', type: REPLY_TYPE.NONE, flags: 1, payload: Buffer.alloc(0) });
      const u = (await roundTrip(c, 42, { cookie: 5n })) as Chunk;
      expect(u).toMatchObject({ kind: 'chunk', type: REPLY_TYPE.ERROR });
      expect(u.payload.subarray(6).toString()).toMatch(/unknown command/);
      expect(await roundTrip(c, CMD.FLUSH, { cookie: 6n })).toMatchObject({ kind: 'simple', error: 0 });
    });

    it('BLOCK_STATUS: one chunk for the context, REQ_ONE gives one extent, extents clipped to the request', async () => {
      const { c } = await openGo('frag', { structured: true, meta: ['base:allocation'] });
      const full = (await roundTrip(c, CMD.BLOCK_STATUS, { offset: 4096, length: 5 * 4096 + 100 })) as Chunk;
      expect(full).toMatchObject({ kind: 'chunk', type: REPLY_TYPE.BLOCK_STATUS, flags: 1 });
      const ext: number[][] = [];
      for (let p = 4; p < full.payload.length; p += 8) {
        ext.push([full.payload.readUInt32BE(p), full.payload.readUInt32BE(p + 4)]);
      }
      expect(ext).toEqual([
        [4096, 0],
        [4096, 3],
        [4096, 0],
        [4096, 3],
        [4096, 0],
        [100, 3],
      ]);
      const one = (await roundTrip(c, CMD.BLOCK_STATUS, {
        offset: 0,
        length: 65536,
        flags: CMD_FLAG.REQ_ONE,
      })) as Chunk;
      expect(one.payload.length).toBe(12);
      expect([one.payload.readUInt32BE(4), one.payload.readUInt32BE(8)]).toEqual([4096, 0]);
      const past = (await roundTrip(c, CMD.BLOCK_STATUS, { offset: MiB - 4096, length: 8192 })) as Chunk;
      expect(past.type).toBe(REPLY_TYPE.ERROR);
      expect(past.payload.readUInt32BE(0)).toBe(EINVAL);
    });

    it('maps export errors: ENOSPC, EREADONLY→EPERM, ERANGE→EINVAL, anything else→EIO', async () => {
      const { c } = await openGo('failing', { structured: true });
      const cases: Array<[number, number, RegExp]> = [
        [0, ENOSPC, /backend full/],
        [4096, EPERM, /read-only/],
        [8192, EINVAL, /past the end/],
        [12288, EIO, /disk on fire/],
      ];
      for (const [offset, errno, msg] of cases) {
        const w = (await roundTrip(c, CMD.WRITE, { offset, payload: Buffer.alloc(512) })) as Chunk;
        expect(w.type).toBe(REPLY_TYPE.ERROR);
        expect(w.payload.readUInt32BE(0)).toBe(errno);
        expect(w.payload.subarray(6).toString()).toMatch(msg);
        const r = (await roundTrip(c, CMD.READ, { offset, length: 512 })) as Chunk;
        expect(r.payload.readUInt32BE(0)).toBe(errno);
      }
      const simple = await openGo('failing');
      expect(await roundTrip(simple.c, CMD.READ, { offset: 0, length: 512 })).toMatchObject({
        error: ENOSPC,
      });
      await checkAlive(simple.c, 5);
    });

    it('FAST_ZERO on an export that cannot zero fast → ENOTSUP; plain zeroing works', async () => {
      const { c } = await openGo('nofast');
      expect(
        await roundTrip(c, CMD.WRITE_ZEROES, { offset: 0, length: 65536, flags: CMD_FLAG.FAST_ZERO }),
      ).toMatchObject({
        error: ENOTSUP,
      });
      expect(await roundTrip(c, CMD.WRITE_ZEROES, { offset: 0, length: 65536 })).toMatchObject({ error: 0 });
    });

    it('handles requests concurrently and replies out of order', async () => {
      const { c } = await openGo('gated');
      const release = gated.hold(0);
      c.sendRequest(CMD.READ, { cookie: 1n, offset: 0, length: 4096 });
      c.sendRequest(CMD.READ, { cookie: 2n, offset: 4096, length: 4096 });
      c.sendRequest(CMD.FLUSH, { cookie: 3n });
      const lengths = (k: bigint) => (k === 3n ? 0 : 4096);
      const first = await c.readReply(lengths);
      const second = await c.readReply(lengths);
      expect([first.cookie, second.cookie].sort()).toEqual([2n, 3n]);
      release();
      expect((await c.readReply(lengths)).cookie).toBe(1n);
    });

    it('never interleaves replies: 300 concurrent mixed requests all parse', async () => {
      const { c } = await openGo('mem', { structured: true });
      const rand = prng(42);
      const expected = new Map<bigint, { type: number; length: number; data?: Buffer }>();
      for (let i = 1; i <= 300; i++) {
        const cookie = BigInt(i);
        const length = 512 * (1 + Math.floor(rand() * 256));
        const offset = 4 * MiB + 512 * Math.floor(rand() * 4096);
        if (i % 3 === 0) {
          const payload = pattern(length, i);
          c.sendRequest(CMD.WRITE, { cookie, offset, payload });
          expected.set(cookie, { type: CMD.WRITE, length: 0 });
        } else {
          c.sendRequest(CMD.READ, { cookie, offset, length });
          expected.set(cookie, { type: CMD.READ, length });
        }
      }
      for (let i = 0; i < 300; i++) {
        const r = await c.readReply();
        const e = expected.get(r.cookie);
        expect(e, `cookie ${r.cookie}`).toBeDefined();
        if (e!.type === CMD.READ) {
          expect(r).toMatchObject({ kind: 'chunk', type: REPLY_TYPE.OFFSET_DATA });
          expect((r as Chunk).payload.length).toBe(8 + e!.length);
        } else {
          expect(r).toMatchObject({ kind: 'simple', error: 0 });
        }
        expected.delete(r.cookie);
      }
      expect(expected.size).toBe(0);
    });

    it('back-pressure: stops reading while in-flight bytes exceed maxInflightBytes, resumes after', async () => {
      const exp = new GatedExport({ name: 'bp', size: 8 * MiB });
      const release = exp.hold();
      const bp = await startServer([exp], { maxInflightBytes: 256 * KiB });
      try {
        const c = await RawClient.connect({ path: bp.sock });
        clients.push(c);
        await c.handshake('bp');
        const n = 48;
        for (let i = 0; i < n; i++) {
          c.sendRequest(CMD.WRITE, {
            cookie: BigInt(i),
            offset: i * 64 * KiB,
            payload: pattern(64 * KiB, i),
          });
        }
        await sleep(300);
        // 256 KiB budget / (64 KiB + header) per write: the 5th write crosses it, then reading stops.
        expect(exp.writeCalls).toBeGreaterThanOrEqual(4);
        expect(exp.writeCalls).toBeLessThanOrEqual(5);
        release();
        exp.open();
        const seen = new Set<bigint>();
        for (let i = 0; i < n; i++) {
          const r = await c.readReply();
          expect(r).toMatchObject({ kind: 'simple', error: 0 });
          seen.add(r.cookie);
        }
        expect(seen.size).toBe(n);
        expect(exp.writeCalls).toBe(n);
        expect(exp.peek(47 * 64 * KiB, 64 * KiB).equals(pattern(64 * KiB, 47))).toBe(true);
      } finally {
        release();
        await bp.close();
      }
    });

    it('DISC: finishes in-flight requests, sends their replies, then closes', async () => {
      const { c } = await openGo('gated');
      const release = gated.hold(8192);
      c.sendRequest(CMD.READ, { cookie: 11n, offset: 8192, length: 4096 });
      c.sendRequest(CMD.DISC, { cookie: 12n });
      await sleep(50);
      expect(await c.closesWithin(50)).toBe(false);
      release();
      const r = await c.readReply(() => 4096);
      expect(r).toMatchObject({ kind: 'simple', error: 0, cookie: 11n });
      expect(await c.closesWithin(2000)).toBe(true);
    });

    it('an oversized WRITE payload is discarded and answered EINVAL; beyond the hard cap → disconnect', async () => {
      const { c } = await openGo('mem');
      c.sendRequest(CMD.WRITE, { cookie: 21n, offset: 0, payload: Buffer.alloc(33 * MiB, 0x61) });
      expect(await c.readReply()).toMatchObject({ kind: 'simple', error: EINVAL, cookie: 21n });
      await checkAlive(c, 6);
      expect(mem.peek(0, 16).equals(Buffer.alloc(16, 0x61))).toBe(false);

      const h = await openGo('mem');
      h.c.sendRequest(CMD.WRITE, { cookie: 22n, offset: 0, length: 0xffffffff });
      expect(await h.c.closesWithin(2000)).toBe(true);
    });

    it('read-only export: WRITE, TRIM and WRITE_ZEROES → EPERM, reads fine', async () => {
      const { c, flags } = await openGo('ro');
      expect(flags & TFLAG.READ_ONLY).toBe(TFLAG.READ_ONLY);
      expect(await roundTrip(c, CMD.WRITE, { offset: 0, payload: Buffer.alloc(4096) })).toMatchObject({
        error: EPERM,
      });
      expect(await roundTrip(c, CMD.TRIM, { offset: 0, length: 4096 })).toMatchObject({ error: EPERM });
      expect(await roundTrip(c, CMD.WRITE_ZEROES, { offset: 0, length: 4096 })).toMatchObject({
        error: EPERM,
      });
      expect(await roundTrip(c, CMD.READ, { offset: 0, length: 4096 })).toMatchObject({ error: 0 });
    });
  });

  describe('hostile input: the offending connection is dropped, others keep working', () => {
    /** How far a hostile client gets before it misbehaves. */
    type Stage = 'connected' | 'greeted' | 'haggling' | 'transmission' | 'structured transmission';
    async function reach(c: RawClient, stage: Stage): Promise<void> {
      if (stage === 'connected') return;
      if (stage === 'transmission' || stage === 'structured transmission') {
        await c.handshake('mem', { structured: stage !== 'transmission' });
        return;
      }
      await c.greeting();
      if (stage === 'haggling') c.sendClientFlags(3);
    }
    /** The stages of the random-bytes connections, in turn. */
    const STAGES: Stage[] = ['connected', 'haggling', 'transmission'];
    /** `size` zero bytes that start with `magic`. */
    const header = (magic: number, size: number) => {
      const h = Buffer.alloc(size);
      h.writeUInt32BE(magic, 0);
      return h;
    };
    // [case, stage reached, what the client does then, who closes the connection]
    const scenarios: Array<[string, Stage, (c: RawClient) => void | Promise<void>, 'server' | 'client']> = [
      ['garbage instead of client flags', 'greeted', (c) => c.write(Buffer.alloc(200, 0xff)), 'server'],
      [
        'garbage during option haggling',
        'haggling',
        (c) => c.write(Buffer.from('GET / HTTP/1.1\r\nHost: example\r\n\r\n')),
        'server',
      ],
      ['garbage after the handshake', 'transmission', (c) => c.write(pattern(300, 77)), 'server'],
      [
        'a request with a bad magic (extended header magic, not negotiated)',
        'transmission',
        (c) => c.write(header(EXTENDED_REQUEST_MAGIC, 32)),
        'server',
      ],
      [
        'a truncated request header, then close',
        'transmission',
        (c) => {
          c.write(header(REQUEST_MAGIC, 28).subarray(0, 13));
          c.end();
        },
        'server',
      ],
      [
        'a truncated option, then close',
        'haggling',
        (c) => {
          c.sendOption(OPT.GO, goPayload('mem', []), 500);
          c.end();
        },
        'server',
      ],
      [
        'a client vanishing in the middle of a WRITE payload',
        'transmission',
        async (c) => {
          c.sendRequest(CMD.WRITE, { cookie: 1n, offset: 0, length: MiB });
          c.write(Buffer.alloc(100 * KiB, 0x42));
          await sleep(20);
          c.destroy();
        },
        'client',
      ],
      [
        'a client vanishing with reads in flight',
        'structured transmission',
        async (c) => {
          for (let i = 0; i < 64; i++)
            c.sendRequest(CMD.READ, { cookie: BigInt(i), offset: 0, length: 256 * KiB });
          await sleep(5);
          c.destroy();
        },
        'client',
      ],
    ];

    for (const [name, stage, act, closer] of scenarios) {
      it(name, async () => {
        const good = await openGo('mem');
        await checkAlive(good.c, 10);
        await waitConnections(1); // only `good` (earlier tests' clients are gone)
        const warnsBefore = fx.logs.filter((l) => l.level === 'warn').length;
        const bad = await open();
        await reach(bad, stage);
        await act(bad);
        if (closer === 'server') expect(await bad.closesWithin(3000)).toBe(true);
        else await bad.closed;
        await checkAlive(good.c, 11);
        const fresh = await openGo('mem');
        await checkAlive(fresh.c, 12);
        await waitConnections(2); // `good` and `fresh`; `bad` is gone
        if (closer === 'server') {
          expect(fx.logs.filter((l) => l.level === 'warn').length).toBeGreaterThan(warnsBefore);
        }
      });
    }

    it('survives 60 connections of random bytes at random protocol stages', async () => {
      const rand = prng(7);
      const good = await openGo('mem', { structured: true });
      const runs: Promise<void>[] = [];
      for (let i = 0; i < 60; i++) {
        runs.push(
          (async () => {
            const c = await open();
            const stage = STAGES[i % 3]!;
            await reach(c, stage);
            const junk = Buffer.allocUnsafe(1 + Math.floor(rand() * 2000));
            for (let k = 0; k < junk.length; k++) junk[k] = Math.floor(rand() * 256);
            if (stage === 'transmission') junk.writeUInt32BE(REQUEST_MAGIC, 0); // a real request magic, random rest
            c.write(junk);
            await sleep(20);
            c.destroy();
            await c.closed;
          })(),
        );
      }
      await Promise.all(runs);
      const r = (await roundTrip(good.c, CMD.READ, { offset: 0, length: 4096 })) as Chunk;
      expect(r.type).toBe(REPLY_TYPE.OFFSET_DATA);
      const fresh = await openGo('mem');
      await checkAlive(fresh.c, 13);
    });
  });

  it('close() drains in-flight requests, closes every connection and refuses new ones', async () => {
    const exp = new GatedExport({ name: 'closing', size: MiB });
    const srv = await startServer([exp]);
    const release = exp.hold();
    const a = await RawClient.connect({ path: srv.sock });
    clients.push(a);
    await a.handshake('closing');
    const b = await RawClient.connect({ path: srv.sock }); // still in the handshake
    clients.push(b);
    await b.greeting();
    a.sendRequest(CMD.READ, { cookie: 1n, offset: 0, length: 4096 });
    await sleep(20);
    const closing = srv.close();
    await sleep(20);
    release();
    expect(await a.readReply(() => 4096)).toMatchObject({ error: 0, cookie: 1n });
    await closing;
    expect(await a.closesWithin(1000)).toBe(true);
    expect(await b.closesWithin(1000)).toBe(true);
    expect(srv.server.connections).toBe(0);
    await expect(RawClient.connect({ path: srv.sock })).rejects.toThrow();
  });
});
