import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FaultyBlocker } from '@archipelago/blocker';
import { FileBlocker } from '@archipelago/blocker-file';
import { Mapper } from '@archipelago/mapper';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Composer } from './composer.js';
import { RangeOrder } from './range-order.js';

const BS = 64 * 1024;
let dir: string;
let blocks: FaultyBlocker;
let mapper: Mapper;
let c: Composer;
let reads = 0;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'archip-composer-'));
  const maps = new FileBlocker({ dir: join(dir, 'maps'), identity: 'h_test' });
  blocks = new FaultyBlocker(new FileBlocker({ dir: join(dir, 'blocks'), identity: 'h_test' }));
  reads = 0;
  const inner = blocks.read.bind(blocks);
  blocks.read = (n, o, l, opt) => {
    reads++;
    return inner(n, o, l, opt);
  };
  mapper = new Mapper({ blockerm: maps, blockerb: blocks });
  c = new Composer({ mapper, blockerb: blocks });
});

afterEach(async () => {
  await mapper.close();
  await rm(dir, { recursive: true, force: true });
});

describe('composer I/O', () => {
  it('reads and writes at any offset and length, split across objects', async () => {
    await mapper.create('v', { size: 5 * BS + 123, blocksize: BS });
    const model = Buffer.alloc(5 * BS + 123);
    for (const [off, len] of [
      [0, 1],
      [BS - 3, 7],
      [2 * BS + 5, 2 * BS + 9],
      [5 * BS, 123],
      [1, 5 * BS + 122],
    ] as const) {
      const data = randomBytes(len);
      await c.write('v', off, data);
      data.copy(model, off);
      expect((await c.read('v', off, len)).equals(data)).toBe(true);
    }
    expect((await c.read('v', 0, model.length)).equals(model)).toBe(true);
    expect(await c.read('v', 5, 0)).toHaveLength(0);
  });

  it('serves zero blocks without any object I/O', async () => {
    await mapper.create('thin', { size: 8 * BS, blocksize: BS });
    reads = 0;
    const z = await c.read('thin', 0, 8 * BS);
    expect(z.every((x) => x === 0)).toBe(true);
    expect(reads).toBe(0);
  });

  it('rejects I/O past the end with ERANGE and writes to snapshots with EREADONLY', async () => {
    await mapper.create('r', { size: BS, blocksize: BS });
    await expect(c.read('r', BS - 1, 2)).rejects.toMatchObject({ code: 'ERANGE' });
    await expect(c.write('r', BS, Buffer.from('x'))).rejects.toMatchObject({ code: 'ERANGE' });
    await c.snapshot('r', 'r-snap');
    await expect(c.write('r-snap', 0, Buffer.from('x'))).rejects.toMatchObject({ code: 'EREADONLY' });
    await expect(c.trim('r-snap', 0, BS)).rejects.toMatchObject({ code: 'EREADONLY' });
  });

  it('applies many overlapping writes in flight in submission order', async () => {
    await mapper.create('ord', { size: 4 * BS, blocksize: BS });
    const writes: Promise<void>[] = [];
    const model = Buffer.alloc(4 * BS);
    for (let i = 0; i < 200; i++) {
      const off = (i * 7919) % (3 * BS);
      const len = 1 + ((i * 104729) % BS);
      const data = Buffer.alloc(len, i % 256);
      data.copy(model, off);
      writes.push(c.write('ord', off, data));
    }
    await Promise.all(writes);
    expect((await c.read('ord', 0, 4 * BS)).equals(model)).toBe(true);
  });

  it('write-zeroes frees whole blocks and zeros partial ones; trim reads back zeros', async () => {
    await mapper.create('z', { size: 3 * BS, blocksize: BS });
    await c.write('z', 0, Buffer.alloc(3 * BS, 0xee));
    await c.writeZeroes('z', BS / 2, 2 * BS);
    const got = await c.read('z', 0, 3 * BS);
    expect(got.subarray(0, BS / 2).every((x) => x === 0xee)).toBe(true);
    expect(got.subarray(BS / 2, BS / 2 + 2 * BS).every((x) => x === 0)).toBe(true);
    expect(got.subarray(BS / 2 + 2 * BS).every((x) => x === 0xee)).toBe(true);
    expect((await mapper.info('z')).allocated).toBe(2); // the middle block is a zero block again
    const extents = await c.blockStatus('z', 0, 3 * BS);
    expect(extents).toEqual([
      { offset: 0, length: BS, zero: false },
      { offset: BS, length: BS, zero: true },
      { offset: 2 * BS, length: BS, zero: false },
    ]);
    await c.trim('z', 0, 3 * BS);
    expect((await c.read('z', 0, 3 * BS)).every((x) => x === 0)).toBe(true);
    expect((await mapper.info('z')).allocated).toBe(0);
  });

  it('snapshot freezes the volume and drains in-flight I/O first', async () => {
    await mapper.create('fz', { size: 8 * BS, blocksize: BS });
    const inflight: Promise<void>[] = [];
    for (let i = 0; i < 8; i++) inflight.push(c.write('fz', i * BS, Buffer.alloc(BS, i + 1)));
    const snap = c.snapshot('fz', 'fz-snap');
    // Submitted after the snapshot: must not be in it.
    const late = c.write('fz', 0, Buffer.alloc(BS, 0xff));
    await Promise.all([...inflight, snap, late]);
    const s = await c.read('fz-snap', 0, 8 * BS);
    for (let i = 0; i < 8; i++) expect(s[i * BS]).toBe(i + 1);
    expect((await c.read('fz', 0, 1))[0]).toBe(0xff);
  });

  it('with a write-back blockerb, snapshot and close make the data written so far durable first', async () => {
    const wbDir = join(dir, 'wb');
    const wb = new FileBlocker({ dir: join(wbDir, 'blocks'), identity: 'h_test', sync: 'flush' });
    const m = new Mapper({
      blockerm: new FileBlocker({ dir: join(wbDir, 'maps'), identity: 'h_test' }),
      blockerb: wb,
    });
    const wc = new Composer({ mapper: m, blockerb: wb });
    try {
      await m.create('wb', { size: 4 * BS, blocksize: BS });
      await wc.write('wb', 0, Buffer.alloc(BS, 1));
      await wc.write('wb', BS, Buffer.alloc(10, 2));
      expect(wb.unsynced).toBe(2); // acknowledged from the page cache
      await wc.snapshot('wb', 'wb-snap');
      expect(wb.unsynced).toBe(0);
      expect((await wc.read('wb-snap', BS, 10)).equals(Buffer.alloc(10, 2))).toBe(true);
      await wc.write('wb', 2 * BS, Buffer.alloc(10, 3));
      expect(wb.unsynced).toBe(1);
      await wc.close('wb');
      expect(wb.unsynced).toBe(0);
    } finally {
      await m.close();
    }
  });

  it('a failed object write fails the volume write with the storage error', async () => {
    await mapper.create('f', { size: 2 * BS, blocksize: BS });
    blocks.fail({ method: 'write', times: 1 });
    await expect(c.write('f', 0, Buffer.alloc(10, 1))).rejects.toMatchObject({ code: 'EIO' });
    await c.write('f', 0, Buffer.alloc(10, 2));
    expect((await c.read('f', 0, 10)).equals(Buffer.alloc(10, 2))).toBe(true);
  });
});

describe('RangeOrder', () => {
  it('lets disjoint I/O run together and orders overlapping I/O', async () => {
    const o = new RangeOrder();
    const a = o.admit(0, 10, true);
    const b = o.admit(10, 10, true);
    const r = o.admit(5, 1, false);
    const events: string[] = [];
    void r.ready.then(() => events.push('r'));
    await a.ready;
    await b.ready;
    await Promise.resolve();
    expect(events).toEqual([]);
    a.done();
    await r.ready;
    expect(events).toEqual(['r']);
    b.done();
    r.done();
    expect(o.size).toBe(0);
  });
});

describe('FUA and a write-back blockerm', () => {
  it('a FUA write resolves only after the map blocker flushed; a plain write does not wait for it', async () => {
    const wbDir = await mkdtemp(join(tmpdir(), 'archip-composer-fua-'));
    const maps = new FaultyBlocker(
      new FileBlocker({ dir: join(wbDir, 'maps'), identity: 'h_test', sync: 'flush' }),
    );
    const data = new FileBlocker({ dir: join(wbDir, 'blocks'), identity: 'h_test' });
    const m = new Mapper({ blockerm: maps, blockerb: data });
    const comp = new Composer({ mapper: m, blockerb: data });
    let release: () => void = () => {};
    let flushes = 0;
    const innerFlush = maps.flush.bind(maps);
    maps.flush = async () => {
      flushes++;
      await new Promise<void>((r) => {
        release = r;
      });
      return innerFlush();
    };
    try {
      await m.create('f', { size: 4 * BS, blocksize: BS });
      // A plain write to a never-written block changes the map and resolves without a flush.
      await comp.write('f', 0, randomBytes(512));
      expect(flushes).toBe(0);
      // A FUA write to another never-written block waits for the map blocker's flush.
      let done = false;
      const w = comp.write('f', 2 * BS, randomBytes(512), { fua: true }).then(() => {
        done = true;
      });
      await new Promise((r) => setTimeout(r, 50));
      expect(flushes).toBe(1);
      expect(done).toBe(false);
      release();
      await w;
      expect(done).toBe(true);
    } finally {
      release();
      await m.close();
      await rm(wbDir, { recursive: true, force: true });
    }
  });
});
