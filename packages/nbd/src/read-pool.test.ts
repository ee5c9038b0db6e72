/**
 * The READ reply pool: the pool itself (reuse, exhaustion, re-carving), and the server with it on
 * real sockets: slots are not reused before the write that carries them completed (a slow client
 * with many outstanding 1 MiB reads gets the right bytes), a client that disconnects mid-reply
 * gives its slots back, failed reads give theirs back, and real clients read byte-exact.
 */
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { addressAlignment } from '@archipelago/fastio';
import { describe, expect, it } from 'vitest';
import { type Fixture, perTest, runOk, sleep, startServer, until } from './__fixtures__/harness.js';
import { type Chunk, RawClient, type SimpleReply } from './__fixtures__/raw-client.js';
import { CMD, REPLY_TYPE } from './constants.js';
import { MemoryExport } from './exports.js';
import { ReadBufferPool } from './read-pool.js';
import type { NbdExport } from './types.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** 8 bytes per 8-byte word: its own offset (so any misplaced or stale byte shows). */
function pattern(offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i += 8) b.writeBigUInt64LE(BigInt(offset + i), i);
  return b;
}

/**
 * A read-only export whose content is `pattern`, served through `readInto` only (read() throws, so
 * every pooled-size READ must take the pool path; small reads fall back to read and would fail).
 */
class PatternExport implements NbdExport {
  readonly readonly = true;
  readIntoCalls = 0;
  reads = 0;
  /** When set, readInto of this offset fails (after filling part of the target). */
  failAt: number | undefined;
  /** Extra delay per readInto, in ms. */
  delayMs = 0;
  constructor(
    readonly name: string,
    private readonly bytes: number,
  ) {}
  size(): number {
    return this.bytes;
  }
  async read(offset: number, length: number): Promise<Buffer> {
    this.reads++;
    return pattern(offset, length);
  }
  async readInto(offset: number, target: Buffer): Promise<void> {
    this.readIntoCalls++;
    if (this.delayMs > 0) await sleep(this.delayMs);
    pattern(offset, target.length).copy(target);
    if (offset === this.failAt) throw new Error('media error');
  }
  async write(): Promise<void> {
    throw new Error('read-only');
  }
  async flush(): Promise<void> {}
  async trim(): Promise<void> {
    throw new Error('read-only');
  }
  async writeZeroes(): Promise<void> {
    throw new Error('read-only');
  }
}

describe('ReadBufferPool', () => {
  it('hands out slots of the size class, reuses a released slot, and is bounded', () => {
    let slabs = 0;
    const pool = new ReadBufferPool({
      maxBytes: 8 * MiB,
      slabBytes: 4 * MiB,
      allocate: (n) => {
        slabs++;
        return Buffer.alloc(n);
      },
    });
    expect(pool.serves(64 * KiB - 1)).toBe(false);
    expect(pool.serves(4 * MiB + 1)).toBe(false);
    expect(pool.acquire(4 * KiB)).toBeUndefined();

    const a = pool.acquire(MiB)!;
    expect(a.buf.length).toBe(MiB);
    a.buf.fill(7);
    a.release();
    a.release(); // idempotent
    const b = pool.acquire(MiB - 4096)!;
    // The same (warm) memory again: the most recently released slot is handed out first.
    expect(b.buf.buffer).toBe(a.buf.buffer);
    expect(b.buf.byteOffset).toBe(a.buf.byteOffset);
    expect(b.buf.length).toBe(MiB - 4096);
    b.release();

    // 8 MiB of budget: eight 1 MiB slots, then misses (the caller allocates).
    const held = Array.from({ length: 8 }, () => pool.acquire(MiB));
    expect(held.every((l) => l !== undefined)).toBe(true);
    expect(pool.acquire(MiB)).toBeUndefined();
    expect(pool.acquire(2 * MiB)).toBeUndefined();
    const st = pool.stats;
    expect(st.slabs).toBe(2);
    expect(slabs).toBe(2);
    expect(st.leased).toBe(8);
    expect(st.misses).toBe(2);
    // No two leases overlap.
    const starts = held.map((l) => l!.buf.byteOffset + (l!.buf.buffer === held[0]!.buf.buffer ? 0 : 1e9));
    expect(new Set(starts).size).toBe(8);
    for (const l of held) l!.release();
    expect(pool.stats.leased).toBe(0);
  });

  it('re-carves a fully free slab for another size class when the budget is used', () => {
    const pool = new ReadBufferPool({ maxBytes: 4 * MiB, slabBytes: 4 * MiB, allocate: Buffer.alloc });
    const small = pool.acquire(256 * KiB)!;
    expect(pool.acquire(4 * MiB)).toBeUndefined(); // the only slab has a slot leased
    small.release();
    const big = pool.acquire(4 * MiB)!;
    expect(big.buf.length).toBe(4 * MiB);
    expect(pool.stats).toMatchObject({ slabs: 1, recarves: 1, leased: 1 });
    expect(pool.acquire(256 * KiB)).toBeUndefined();
    big.release();
    expect(pool.acquire(256 * KiB)).toBeDefined();
    expect(pool.stats.recarves).toBe(2);
  });

  it('slots from largeBuffer slabs are page-aligned (O_DIRECT targets need no bounce buffer)', () => {
    const pool = new ReadBufferPool({ maxBytes: 4 * MiB });
    const leases = Array.from({ length: 4 }, () => pool.acquire(MiB)!);
    for (const l of leases) {
      const a = addressAlignment(l.buf);
      if (a !== 0) expect(a).toBeGreaterThanOrEqual(4096); // 0: no addon, nothing to check
    }
    for (const l of leases) l.release();
  });

  it('rejects bad options', () => {
    expect(() => new ReadBufferPool({ slabBytes: 3 * MiB })).toThrow(TypeError);
    expect(() => new ReadBufferPool({ minBytes: 8 * MiB })).toThrow(TypeError);
    expect(() => new ReadBufferPool({ maxBytes: -1 })).toThrow(TypeError);
    expect(new ReadBufferPool({ maxBytes: 0 }).acquire(MiB)).toBeUndefined();
  });
});

describe('NbdServer read pool on real sockets', () => {
  const t = perTest<RawClient>();
  let fx: Fixture | undefined;

  async function connect(name: string, structured: boolean): Promise<RawClient> {
    const c = await RawClient.connect({ path: fx!.sock });
    t.clients.push(c);
    await c.handshake(name, { structured });
    return c;
  }

  for (const structured of [false, true]) {
    it(`a slow client with 48 outstanding 1 MiB reads gets the right bytes (${structured ? 'structured' : 'simple'} replies)`, async () => {
      const exp = new PatternExport('pat', 64 * MiB);
      // A small pool (8 slots) and a small send buffer: most replies wait in the socket while later
      // reads need slots, so a slot released before its write completed would be overwritten.
      fx = t.fx = await startServer([exp], { readPoolBytes: 8 * MiB, sendBufferBytes: 64 * KiB });
      const pool = fx.server.readPool!;
      const c = await connect('pat', structured);
      c.socket.pause(); // the client reads nothing for now
      const n = 48;
      // Out of order offsets, so neighbouring replies differ everywhere.
      const offsets = Array.from({ length: n }, (_, i) => ((i * 29) % 64) * MiB);
      offsets.forEach((off, i) => {
        c.sendRequest(CMD.READ, { cookie: BigInt(i + 1), offset: off, length: MiB });
      });
      await until(() => exp.readIntoCalls + exp.reads >= n);
      await sleep(50);
      // Replies are stuck in the socket: their slots are still leased, the rest fell back.
      expect(pool.stats.leased).toBe(8);
      expect(pool.stats.misses).toBeGreaterThan(0);
      c.socket.resume();
      const seen = new Set<bigint>();
      for (let k = 0; k < n; k++) {
        const r = await c.readReply(() => MiB);
        let data: Buffer;
        if (r.kind === 'simple') {
          expect((r as SimpleReply).error).toBe(0);
          data = r.data;
        } else {
          const ch = r as Chunk;
          expect(ch.type).toBe(REPLY_TYPE.OFFSET_DATA);
          expect(Number(ch.payload.readBigUInt64BE(0))).toBe(offsets[Number(ch.cookie) - 1]);
          data = ch.payload.subarray(8);
        }
        const off = offsets[Number(r.cookie) - 1]!;
        expect(data.length).toBe(MiB);
        if (!data.equals(pattern(off, MiB))) throw new Error(`reply ${r.cookie} (offset ${off}) is corrupt`);
        seen.add(r.cookie);
        if (k % 8 === 0) await sleep(5); // and keep reading slowly
      }
      expect(seen.size).toBe(n);
      await until(() => pool.stats.leased === 0);
      // Every pooled-size read went through readInto (pool or fallback allocation).
      expect(exp.reads).toBe(pool.stats.misses);
    });
  }

  it('a client that disconnects mid-reply gives every slot back; later reads reuse them', async () => {
    const exp = new PatternExport('pat', 64 * MiB);
    fx = t.fx = await startServer([exp], { readPoolBytes: 16 * MiB, sendBufferBytes: 64 * KiB });
    const pool = fx.server.readPool!;
    const c = await connect('pat', true);
    c.socket.pause();
    for (let i = 0; i < 32; i++)
      c.sendRequest(CMD.READ, { cookie: BigInt(i + 1), offset: i * MiB, length: MiB });
    await until(() => exp.readIntoCalls + exp.reads >= 32);
    await sleep(50);
    expect(pool.stats.leased).toBeGreaterThan(0);
    c.destroy();
    await until(() => fx!.server.connections === 0);
    await until(() => pool.stats.leased === 0);
    const slabs = pool.stats.slabs;

    // A fresh client reads correct bytes out of the same slabs.
    const d = await connect('pat', false);
    for (let i = 0; i < 8; i++)
      d.sendRequest(CMD.READ, { cookie: BigInt(i + 1), offset: (63 - i) * MiB, length: MiB });
    for (let i = 0; i < 8; i++) {
      const r = (await d.readReply(() => MiB)) as SimpleReply;
      expect(r.error).toBe(0);
      expect(r.data.equals(pattern((64 - Number(r.cookie)) * MiB, MiB))).toBe(true);
    }
    expect(pool.stats.slabs).toBe(slabs);
    await until(() => pool.stats.leased === 0);
  });

  it('a READ that fails gives its slot back and is answered with an error', async () => {
    const exp = new PatternExport('pat', 8 * MiB);
    exp.failAt = 2 * MiB;
    fx = t.fx = await startServer([exp], { readPoolBytes: 4 * MiB });
    const pool = fx.server.readPool!;
    const c = await connect('pat', true);
    c.sendRequest(CMD.READ, { cookie: 1n, offset: 2 * MiB, length: MiB });
    const r = (await c.readReply()) as Chunk;
    expect(r.type).toBe(REPLY_TYPE.ERROR);
    expect(pool.stats.leased).toBe(0);
    c.sendRequest(CMD.READ, { cookie: 2n, offset: 3 * MiB, length: MiB });
    const ok = (await c.readReply()) as Chunk;
    expect(ok.type).toBe(REPLY_TYPE.OFFSET_DATA);
    expect(ok.payload.subarray(8).equals(pattern(3 * MiB, MiB))).toBe(true);
  });

  it('readPoolBytes 0: no pool, every READ gets a fresh buffer from read()', async () => {
    const exp = new PatternExport('pat', 8 * MiB);
    fx = t.fx = await startServer([exp], { readPoolBytes: 0 });
    expect(fx.server.readPool).toBeUndefined();
    const c = await connect('pat', false);
    c.sendRequest(CMD.READ, { cookie: 1n, offset: MiB, length: MiB });
    const r = (await c.readReply(() => MiB)) as SimpleReply;
    expect(r.data.equals(pattern(MiB, MiB))).toBe(true);
    expect(exp.readIntoCalls).toBe(0);
    expect(exp.reads).toBe(1);
  });

  it('nbdcopy (4 connections, 1-4 MiB requests) and qemu-io read byte-exact through the pool', async () => {
    const mem = new MemoryExport({ name: 'mem', size: 48 * MiB });
    const content = Buffer.allocUnsafe(48 * MiB);
    for (let i = 0; i < content.length; i += 4) content.writeUInt32LE((i * 2654435761) >>> 0, i);
    // Leave holes, so base:allocation has something to say (nbdcopy skips them).
    content.fill(0, 8 * MiB, 12 * MiB);
    content.fill(0xa5, 20 * MiB, 22 * MiB);
    await mem.write(0, content.subarray(0, 8 * MiB), { fua: false });
    await mem.write(12 * MiB, content.subarray(12 * MiB), { fua: false });
    fx = t.fx = await startServer([mem], { readPoolBytes: 8 * MiB });
    const pool = fx.server.readPool!;
    const out = `${fx.dir}/out.raw`;
    await runOk('nbdcopy', ['--connections=4', '--request-size=4194304', fx.uri('mem'), out]);
    const got = await readFile(out);
    expect(createHash('sha256').update(got).digest('hex')).toBe(
      createHash('sha256').update(content).digest('hex'),
    );
    await runOk('nbdcopy', ['--connections=4', '--request-size=1048576', fx.uri('mem'), `${out}.2`]);
    expect((await readFile(`${out}.2`)).equals(content)).toBe(true);
    // qemu-io: 2 MiB reads checked against a byte pattern (qemu-io reports a mismatch on stdout).
    for (const cmd of ['read -P 0xa5 20M 2M', 'read -P 0 8M 4M', 'read -P 0xa5 21M 1M']) {
      const r = await runOk('qemu-io', ['-f', 'raw', '-c', cmd, fx.uri('mem')]);
      expect(r.stdout, cmd).not.toMatch(/fail/i);
      expect(r.stdout, cmd).toMatch(/read \d+\/\d+ bytes/);
    }
    expect(pool.stats.hits).toBeGreaterThan(0);
    await until(() => pool.stats.leased === 0);
  });

  it('WRITE payloads spread over socket chunks land byte-exact through pooled slots, which come back', async () => {
    const mem = new MemoryExport({ name: 'mem', size: 16 * MiB });
    fx = t.fx = await startServer([mem], { readPoolBytes: 8 * MiB });
    const pool = fx.server.readPool!;
    const src = `${fx.dir}/src.raw`;
    const content = Buffer.allocUnsafe(16 * MiB);
    for (let i = 0; i < content.length; i += 4) content.writeUInt32LE((i * 2246822519) >>> 0, i);
    await writeFile(src, content);
    await runOk('nbdcopy', ['--connections=4', '--request-size=1048576', src, fx.uri('mem')]);
    expect((await mem.read(0, content.length)).equals(content)).toBe(true);
    expect(pool.stats.hits).toBeGreaterThan(0);
    await until(() => pool.stats.leased === 0);
    // A WRITE refused before it runs (past the end) gives its slot back too.
    const c = await connect('mem', false);
    const hits = pool.stats.hits;
    c.sendRequest(CMD.WRITE, { cookie: 7n, offset: 16 * MiB - 4096, payload: Buffer.alloc(256 * KiB, 1) });
    const r = (await c.readReply()) as SimpleReply;
    expect(r.error).not.toBe(0);
    expect(pool.stats.hits).toBe(hits + 1);
    await until(() => pool.stats.leased === 0);
  });
});
