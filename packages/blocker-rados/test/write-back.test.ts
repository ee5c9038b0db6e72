/**
 * Write-back mode (`sync: 'flush'`) on a real cluster. To hold writes uncommitted the tests pause
 * the cluster (`ceph osd pause`: librados keeps every op until `ceph osd unpause`). That stalls
 * every client of the cluster, and vitest runs test files side by side, so these tests run on a
 * cluster of their own (`ensureCluster('writeback')`), never on the shared one.
 */
import { createHash, randomFillSync } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { acquireConnection } from '../src/connection.js';
import { RadosBlocker, type RadosBlockerOptions } from '../src/index.js';
import { ensureCluster, freshNamespace, type TestCluster } from './cluster.js';
import { runOk } from './run.js';

const KiB = 1024;
let cluster: TestCluster;
const opened: RadosBlocker[] = [];
let paused = false;

beforeAll(async () => {
  cluster = await ensureCluster('writeback');
}, 120_000);

afterEach(async () => {
  await unpause();
  await Promise.all(opened.splice(0).map((b) => b.close().catch(() => {})));
});

async function open(o: Partial<RadosBlockerOptions> = {}): Promise<RadosBlocker> {
  const b = await RadosBlocker.open({
    cephConf: cluster.conf,
    pool: 'blocks',
    namespace: freshNamespace('wb'),
    ...o,
  });
  opened.push(b);
  return b;
}

/**
 * `ceph osd pause`, then waits until the librados client of `b` (opened with `opTimeoutMs`) has the
 * paused OSD map, so that librados holds every op `b` submits from now on (and those of every
 * blocker on that client).
 */
async function pause(b: RadosBlocker, opTimeoutMs = 0): Promise<void> {
  paused = true;
  await runOk('ceph', ['-c', cluster.conf, 'osd', 'pause']);
  // The same options as b's connection: the same shared librados client.
  const conn = await acquireConnection({
    cephConf: cluster.conf,
    cephxId: 'admin',
    connectTimeoutMs: 10_000,
    opTimeoutMs,
  });
  try {
    expect(conn.cluster.instanceId()).toBe(b.clientName);
    await conn.cluster.waitForLatestOsdmap();
  } finally {
    await conn.release();
  }
}

async function unpause(): Promise<void> {
  if (!paused) return;
  await runOk('ceph', ['-c', cluster.conf, 'osd', 'unpause']);
  paused = false;
}

/** `p`, or a failure naming `what` when it is still pending after `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** True when `p` has not settled within `ms`. */
async function pendingAfter(p: Promise<unknown>, ms: number): Promise<boolean> {
  let settled = false;
  p.then(
    () => (settled = true),
    () => (settled = true),
  );
  await sleep(ms);
  return !settled;
}

/** The OSD's count of client write ops so far (`op_w`). */
async function osdWriteOps(): Promise<number> {
  const { stdout } = await runOk('ceph', ['-c', cluster.conf, 'tell', 'osd.0', 'perf', 'dump', 'osd']);
  return (JSON.parse(stdout) as { osd: { op_w: number } }).osd.op_w;
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(20);
  }
}

describe('RadosBlocker sync: flush (write-back)', () => {
  it('acknowledges a write while the cluster is paused; flush() waits for the commit; the bytes read back; the caller may reuse its buffer', async () => {
    const b = await open({ sync: 'flush' });
    expect([b.sync, b.maxDirtyBytes]).toEqual(['flush', 24 * 1024 * KiB]);
    const data = randomFillSync(Buffer.alloc(64 * KiB));
    const want = Buffer.from(data);
    await pause(b);
    await within(b.write('obj', 4 * KiB, data), 5000, 'a write-back write while paused');
    data.fill(0xee); // the caller reuses its buffer once write() resolved
    expect([b.dirtyBytes, b.dirtyWrites]).toEqual([64 * KiB, 1]);
    const flushed = b.flush();
    expect(await pendingAfter(flushed, 1000)).toBe(true);
    await unpause();
    await within(flushed, 30_000, 'flush() after the unpause');
    expect([b.dirtyBytes, b.dirtyWrites]).toEqual([0, 0]);
    const got = await b.read('obj', 0, 68 * KiB);
    expect(got.subarray(0, 4 * KiB).equals(Buffer.alloc(4 * KiB))).toBe(true);
    expect(got.subarray(4 * KiB).equals(want)).toBe(true);
  });

  it('with sync always, and for a durable (FUA) write with sync flush, a write resolves only on commit', async () => {
    const always = await open();
    const wb = await open({ sync: 'flush' });
    expect(always.sync).toBe('always');
    expect(wb.clientName).toBe(always.clientName); // one librados client: one pause holds both
    await pause(always);
    const a = always.write('a', 0, Buffer.from('always'));
    const fua = wb.write('fua', 0, Buffer.from('durable'), { durable: true });
    expect(await pendingAfter(a, 1000)).toBe(true);
    expect(await pendingAfter(fua, 0)).toBe(true);
    expect(wb.dirtyBytes).toBe(0); // a durable write is not a write-back one
    await unpause();
    await within(Promise.all([a, fua]), 30_000, 'the writes after the unpause');
    expect((await always.read('a', 0, 6)).toString()).toBe('always');
    expect((await wb.read('fua', 0, 7)).toString()).toBe('durable');
  });

  it('keeps at most maxDirtyBytes (and 256 writes) acknowledged and uncommitted: the write beyond waits for the unpause', async () => {
    const b = await open({ sync: 'flush', maxDirtyBytes: 64 * KiB });
    const c = await open({ sync: 'flush' });
    const block = (i: number) => Buffer.alloc(4 * KiB, i + 1);
    await pause(b);
    for (let i = 0; i < 16; i++) {
      await within(b.write(`bound-${i % 4}`, (i >> 2) * 4 * KiB, block(i)), 5000, `write ${i + 1} of 16`);
    }
    expect([b.dirtyBytes, b.dirtyWrites]).toEqual([64 * KiB, 16]);
    const seventeenth = b.write('bound-x', 0, block(16));
    // The same for the number of writes: 256 one-byte writes fit in 24 MiB, the 257th waits.
    for (let i = 0; i < 256; i++) {
      await within(c.write(`ops-${i % 8}`, i, Buffer.from([i])), 5000, `one-byte write ${i + 1} of 256`);
    }
    const op257 = c.write('ops-x', 0, Buffer.from([1]));
    expect(await pendingAfter(seventeenth, 1000)).toBe(true);
    expect(await pendingAfter(op257, 0)).toBe(true);
    expect([b.dirtyBytes, b.dirtyWrites, c.dirtyWrites]).toEqual([64 * KiB, 16, 256]);
    await unpause();
    await within(Promise.all([seventeenth, op257]), 30_000, 'the writes beyond the bound after the unpause');
    await Promise.all([b.flush(), c.flush()]);
    for (let i = 0; i < 16; i++) {
      const got = await b.read(`bound-${i % 4}`, (i >> 2) * 4 * KiB, 4 * KiB);
      expect(got.equals(block(i)), `block ${i}`).toBe(true);
    }
    expect((await b.read('bound-x', 0, 4 * KiB)).equals(block(16))).toBe(true);
    const bytes = await c.read('ops-3', 0, 256);
    for (let i = 3; i < 256; i += 8) expect(bytes[i]).toBe(i);
  });

  it('reports an acknowledged write that failed at the next flush (its code, the object named), to every flush waiting then and no later one; close() reports one no flush did', async () => {
    // rados_osd_op_timeout 1 s: a write held by the pause times out after it was acknowledged.
    const b = await open({ sync: 'flush', opTimeoutMs: 1000 });
    const c = await open({ sync: 'flush', opTimeoutMs: 1000 });
    await pause(b, 1000);
    await within(b.write('lost', 0, Buffer.from('never committed')), 5000, 'a write-back write while paused');
    await within(c.write('lost-at-close', 0, Buffer.from('x')), 5000, 'a write-back write while paused');
    const [e1, e2] = await Promise.all(
      [b.flush(), b.flush()].map((f) =>
        f.then(
          () => null,
          (e) => e,
        ),
      ),
    );
    for (const e of [e1, e2]) {
      expect(e).toMatchObject({ code: 'ETIMEDOUT', details: { name: 'lost', failed: 1 } });
      expect((e as Error).message).toMatch(/^flush: .*write lost: /);
    }
    await until(() => c.dirtyWrites === 0, 10_000, "c's write timing out"); // before the unpause sends it
    await unpause();
    await b.write('fine', 0, Buffer.from('ok'));
    await expect(b.flush()).resolves.toBeUndefined(); // reported once: the next flush is clean
    expect((await b.read('fine', 0, 2)).toString()).toBe('ok');
    expect(await b.exists('lost')).toBe(false); // timed out before librados sent it: really lost
    const closed = await c.close().then(
      () => null,
      (e) => e,
    );
    expect(closed).toMatchObject({ code: 'ETIMEDOUT', details: { name: 'lost-at-close' } });
  });

  it('reads what the acknowledged writes wrote: many overlapping writes from one reused buffer, each read back at once, byte-exact', async () => {
    const b = await open({ sync: 'flush', maxDirtyBytes: 256 * KiB });
    const SIZE = 256 * KiB;
    const model = [Buffer.alloc(SIZE), Buffer.alloc(SIZE)];
    const scratch = Buffer.alloc(32 * KiB);
    let seed = 12345;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let i = 0; i < 400; i++) {
      const o = rnd(2);
      const len = 1 + rnd(scratch.length);
      const off = rnd(SIZE - len + 1);
      randomFillSync(scratch, 0, len);
      scratch.copy(model[o]!, off, 0, len);
      await b.write(`raw-${o}`, off, scratch.subarray(0, len));
      if (i % 2 === 0) {
        // The range just written, and a wider overlapping one.
        expect(
          (await b.read(`raw-${o}`, off, len)).equals(model[o]!.subarray(off, off + len)),
          `read ${i}`,
        ).toBe(true);
        const from = Math.max(0, off - 4 * KiB);
        const to = Math.min(SIZE, off + len + 4 * KiB);
        const into = Buffer.alloc(to - from);
        await b.readInto(`raw-${o}`, from, into);
        expect(into.equals(model[o]!.subarray(from, to)), `readInto ${i}`).toBe(true);
      }
    }
    // Overlapping writes in flight at once (each resolved before the next overlapping one starts,
    // as the composer orders them), then everything read back, before and after a flush.
    for (let round = 0; round < 4; round++) {
      const waits: Promise<void>[] = [];
      for (let k = 0; k < 32; k++) {
        const len = 1 + rnd(8 * KiB);
        const off = k * 8 * KiB + rnd(8 * KiB - len + 1);
        const data = randomFillSync(Buffer.alloc(len));
        data.copy(model[0]!, off);
        waits.push(b.write('raw-0', off, data));
      }
      await Promise.all(waits);
      expect((await b.read('raw-0', 0, SIZE)).equals(model[0]!), `round ${round}`).toBe(true);
    }
    for (const o of [0, 1]) expect((await b.read(`raw-${o}`, 0, SIZE)).equals(model[o]!)).toBe(true);
    await b.flush();
    for (const o of [0, 1]) expect((await b.read(`raw-${o}`, 0, SIZE)).equals(model[o]!)).toBe(true);
  });

  it('holds every other call on an object with acknowledged writes until they commit (and only those calls); then they see the writes', async () => {
    const b = await open({ sync: 'flush' });
    await b.writeFull('other', Buffer.from('other'));
    await b.write('x', 0, Buffer.from('old!'));
    await b.flush();
    await pause(b);
    for (const [name, text] of [
      ['x', 'new!'],
      ['fresh', 'fresh'],
      ['gone', 'bye'],
      ['wf', 'a longer write-back write'],
    ] as const) {
      await within(b.write(name, 0, Buffer.from(text)), 5000, `write-back write of ${name} while paused`);
    }
    expect(b.aioInFlight).toBe(4);
    const into = Buffer.alloc(4);
    const listed = (async () => {
      const names: string[] = [];
      for await (const n of b.list('fre')) names.push(n);
      return names;
    })();
    const calls = {
      read: b.read('x', 0, 4),
      readInto: b.readInto('x', 0, into),
      info: b.info('fresh'),
      exists: b.exists('fresh'),
      copy: b.copy('x', 'x-copy'),
      hash: b.hash('x', 4),
      delete: b.delete('gone'),
      writeFull: b.writeFull('wf', Buffer.from('FULL')),
      listed,
    };
    const unrelated = b.read('other', 0, 5); // no pending write: goes to librados at once
    await sleep(500);
    expect(b.aioInFlight).toBe(5); // the 4 writes and the unrelated read; the rest wait for the writes
    for (const [k, p] of Object.entries(calls)) expect(await pendingAfter(p, 0), k).toBe(true);
    await unpause();
    const r = await within(
      (async () => {
        const out: Record<string, unknown> = {};
        for (const [k, p] of Object.entries(calls)) out[k] = await p;
        return out;
      })(),
      30_000,
      'the held calls after the unpause',
    );
    expect((r.read as Buffer).toString()).toBe('new!');
    expect(into.toString()).toBe('new!');
    expect(r.info).toMatchObject({ size: 5 });
    expect(r.exists).toBe(true);
    expect((await b.read('x-copy', 0, 4)).toString()).toBe('new!');
    expect(r.hash).toBe(createHash('sha256').update('new!').digest('hex'));
    expect(r.delete).toBe(true);
    expect(await b.exists('gone')).toBe(false);
    expect(await b.info('wf')).toMatchObject({ size: 4 });
    expect(r.listed).toEqual(['fresh']);
    expect((await unrelated).toString()).toBe('other');
    await b.flush();
  });

  it('packs small writes held behind one in flight to the same object into one OSD op; a durable write goes after them; the bytes read back', async () => {
    const b = await open({ sync: 'flush' });
    const before = await osdWriteOps();
    await pause(b);
    const model = Buffer.alloc(64 * KiB);
    const first = randomFillSync(Buffer.alloc(4 * KiB));
    first.copy(model, 0);
    await within(b.write('pack', 0, first), 5000, 'the first write while paused'); // in flight
    const scratch = Buffer.alloc(4 * KiB); // reused: a held write must keep its own bytes
    for (let k = 0; k < 8; k++) {
      const off = ((k * 5) % 16) * 4 * KiB; // 0, 20, 40, 60, 16, 36, 56, 12 KiB: the first overlaps
      randomFillSync(scratch);
      scratch.copy(model, off);
      await within(b.write('pack', off, scratch), 5000, `held write ${k}`);
    }
    const fua = randomFillSync(Buffer.alloc(4 * KiB));
    fua.copy(model, 20 * KiB); // over a held write: it must land after it
    const durable = b.write('pack', 20 * KiB, fua, { durable: true });
    expect(await pendingAfter(durable, 500)).toBe(true);
    expect(b.dirtyWrites).toBe(9);
    await unpause();
    await within(durable, 30_000, 'the durable write after the unpause');
    await within(b.flush(), 30_000, 'flush() after the unpause');
    expect((await b.read('pack', 0, 64 * KiB)).equals(model)).toBe(true);
    // The first write, the eight held ones as one op, the durable write.
    expect((await osdWriteOps()) - before).toBe(3);
  });

  it('validates sync and maxDirtyBytes', () => {
    const base = { cephConf: '/nonexistent/ceph.conf', pool: 'blocks' };
    expect(() => new RadosBlocker({ ...base, sync: 'sometimes' as 'flush' })).toThrow(
      /"sync" must be "always" or "flush"/,
    );
    for (const maxDirtyBytes of [0, -1, 1.5, 64 * 1024 * KiB + 1, Number.NaN]) {
      expect(
        () => new RadosBlocker({ ...base, sync: 'flush', maxDirtyBytes }),
        String(maxDirtyBytes),
      ).toThrow(/"maxDirtyBytes" must be an integer from 1 to 67108864 \(64 MiB\)/);
    }
  });
});
