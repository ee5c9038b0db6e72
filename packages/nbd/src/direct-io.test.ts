/**
 * The direct socket paths (NbdServerOptions `directSend` / `directRecv`, on by default with the
 * fastio addon): WRITE payloads that arrive in pieces are received straight into their buffer,
 * replies leave through one non-blocking sendmsg per batch. Each case runs with the paths on and
 * off and checks what a client sees: the bytes written land where they belong, replies arrive
 * whole and in any order but never torn, a slow reader gets everything, and a client vanishing
 * in the middle of a payload gives its pool slot back.
 */
import { recvNowaitAvailable, sendNowaitAvailable } from '@archipelago/fastio';
import { describe, expect, it } from 'vitest';
import { perTest, sleep, startServer, until } from './__fixtures__/harness.js';
import { RawClient, type SimpleReply } from './__fixtures__/raw-client.js';
import { CMD, REQUEST_MAGIC } from './constants.js';
import { MemoryExport } from './exports.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** 8 bytes per 8-byte word: its offset plus a seed (a misplaced or stale byte shows). */
function pattern(offset: number, length: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i += 8) b.writeBigUInt64LE(BigInt(offset + i) * 31n + BigInt(seed), i);
  return b;
}

function header(type: number, cookie: bigint, offset: number, length: number): Buffer {
  const h = Buffer.alloc(28);
  h.writeUInt32BE(REQUEST_MAGIC, 0);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(cookie, 8);
  h.writeBigUInt64BE(BigInt(offset), 16);
  h.writeUInt32BE(length, 24);
  return h;
}

const t = perTest<RawClient>();

describe.each([
  { direct: true, what: 'direct socket I/O' },
  { direct: false, what: 'socket streams only' },
])('$what', ({ direct }) => {
  const opts = { directSend: direct, directRecv: direct };
  /** Serves `exp` with `extra` options and returns a client past the handshake. */
  async function open(exp: MemoryExport, extra: object = {}): Promise<RawClient> {
    const fx = await startServer([exp], { ...opts, ...extra });
    t.fx = fx;
    const c = await RawClient.connect({ path: fx.sock });
    t.clients.push(c);
    await c.handshake('m');
    return c;
  }

  it('uses the addon when asked (the fast paths are really taken on Linux)', () => {
    if (direct && process.platform === 'linux' && process.env.ARCHIP_FASTIO !== '0') {
      expect(sendNowaitAvailable && recvNowaitAvailable).toBe(true);
    }
  });

  it('WRITE payloads trickled in pieces (4 KiB .. 4 MiB) land byte-exact; READs give them back', async () => {
    const exp = new MemoryExport({ name: 'm', size: 32 * MiB });
    const c = await open(exp);
    const writes = [
      { offset: 0, length: 4 * KiB },
      { offset: 8 * KiB, length: 60 * KiB },
      { offset: 1 * MiB, length: 64 * KiB },
      { offset: 2 * MiB, length: 1 * MiB + 4 * KiB },
      { offset: 8 * MiB, length: 4 * MiB },
    ];
    let cookie = 1n;
    for (const [i, w] of writes.entries()) {
      const data = pattern(w.offset, w.length, i);
      // Header alone, then the payload in uneven pieces with pauses: the server sees partial
      // payloads, takes some straight from the socket and some from the stream's chunks.
      c.write(header(CMD.WRITE, cookie, w.offset, w.length));
      await sleep(2);
      for (let at = 0, k = 0; at < data.length; k++) {
        const n = Math.min(data.length - at, [1, 4000, 100_000, 777][k % 4]!);
        c.write(data.subarray(at, at + n));
        at += n;
        if (k % 3 === 0) await sleep(1);
      }
      const r = (await c.readReply()) as SimpleReply;
      expect(r).toMatchObject({ kind: 'simple', error: 0, cookie });
      cookie++;
      expect(exp.peek(w.offset, w.length).equals(data)).toBe(true);
    }
    // Several whole requests in one socket write: a WRITE, then READs of what was written.
    const burst: Buffer[] = [];
    const extra = pattern(20 * MiB, 128 * KiB, 9);
    burst.push(header(CMD.WRITE, 100n, 20 * MiB, extra.length), extra);
    for (const [i, w] of writes.entries()) burst.push(header(CMD.READ, 200n + BigInt(i), w.offset, w.length));
    c.write(Buffer.concat(burst));
    const lengths = new Map(writes.map((w, i) => [200n + BigInt(i), w.length]));
    const seen = new Set<bigint>();
    for (let i = 0; i < writes.length + 1; i++) {
      const r = (await c.readReply((k) => lengths.get(k) ?? 0)) as SimpleReply;
      expect(r.error).toBe(0);
      seen.add(r.cookie);
      const w = writes[Number(r.cookie - 200n)];
      if (w) expect(r.data.equals(pattern(w.offset, w.length, Number(r.cookie - 200n)))).toBe(true);
    }
    expect(seen.size).toBe(writes.length + 1);
    expect(exp.peek(20 * MiB, extra.length).equals(extra)).toBe(true);
    expect(t.fx!.server.readPool?.stats.leased).toBe(0);
  });

  it('a reader that stalls gets every reply whole: 64 x 128 KiB READs over a 64 KiB send buffer', async () => {
    const exp = new MemoryExport({ name: 'm', size: 32 * MiB });
    const content = pattern(0, 8 * MiB, 5);
    await exp.write(0, content, { fua: false });
    const c = await open(exp, { sendBufferBytes: 64 * KiB });
    c.socket.pause();
    const len = 128 * KiB;
    for (let i = 0; i < 64; i++) c.sendRequest(CMD.READ, { cookie: BigInt(i), offset: i * len, length: len });
    await sleep(100); // the socket buffer fills; the rest waits in the server's stream
    c.socket.resume();
    const seen = new Set<bigint>();
    for (let i = 0; i < 64; i++) {
      const r = (await c.readReply(() => len)) as SimpleReply;
      expect(r.error).toBe(0);
      const at = Number(r.cookie) * len;
      expect(r.data.equals(content.subarray(at, at + len))).toBe(true);
      seen.add(r.cookie);
    }
    expect(seen.size).toBe(64);
    await until(() => t.fx!.server.readPool?.stats.leased === 0);
  });

  it('a client vanishing in the middle of a 1 MiB payload gives its slot back; others go on', async () => {
    const exp = new MemoryExport({ name: 'm', size: 8 * MiB });
    const c = await open(exp);
    c.write(header(CMD.WRITE, 1n, 0, MiB));
    c.write(pattern(0, 300 * KiB, 1));
    await sleep(50);
    c.destroy();
    await until(() => t.fx!.server.connections === 0);
    expect(t.fx!.server.readPool?.stats.leased ?? 0).toBe(0);
    expect(exp.stats.writes).toBe(0);
    const d = await RawClient.connect({ path: t.fx!.sock });
    t.clients.push(d);
    await d.handshake('m');
    const data = pattern(0, MiB, 2);
    d.sendRequest(CMD.WRITE, { cookie: 7n, offset: 0, payload: data });
    expect(await d.readReply()).toMatchObject({ kind: 'simple', error: 0, cookie: 7n });
    expect(exp.peek(0, MiB).equals(data)).toBe(true);
  });
});
