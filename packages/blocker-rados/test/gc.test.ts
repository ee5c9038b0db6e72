/**
 * Garbage collection (@archipelago/mapper gc.ts) on RADOS: the leak of snapshot + remove ends with
 * nothing unreferenced, young orphans stay (RADOS mtimes, whole seconds) and old ones go, and a
 * gc looping while volumes are written, snapshotted and cloned deletes nothing live.
 */
import { collectGarbage, Mapper, storeUsage } from '@archipelago/mapper';
import { afterEach, describe, expect, it } from 'vitest';
import type { RadosBlocker } from '../src/index.js';
import { freshNamespace, openPair } from './cluster.js';

const BS = 4096;
const HOUR = 3_600_000;
const fill = (n: number, v: number) => Buffer.alloc(n, v);

let pair: { blockerm: RadosBlocker; blockerb: RadosBlocker };
let mapper: Mapper;

async function open() {
  pair = await openPair(freshNamespace('gc'), 'gc_1');
  mapper = new Mapper({ ...pair, lockTimeoutMs: 2000 });
}

afterEach(async () => {
  await mapper?.close();
  await Promise.all([pair?.blockerm.close(), pair?.blockerb.close()]);
});

async function put(vol: string, offset: number, data: Buffer): Promise<void> {
  let pos = 0;
  for (const s of await mapper.mapWrite(vol, offset, data.length)) {
    await pair.blockerb.write(s.target, s.offset, data.subarray(pos, pos + s.size));
    pos += s.size;
  }
}

async function get(vol: string, length: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const s of await mapper.mapRead(vol, 0, length)) {
    parts.push(
      s.zero
        ? Buffer.alloc(s.size)
        : await pair.blockerb.read(s.target, s.offset, s.size, { missingOk: true }),
    );
  }
  return Buffer.concat(parts);
}

const gc = (o: { graceMs?: number; now?: () => number; dryRun?: boolean } = {}) =>
  collectGarbage({ ...pair, ...o });

describe('gc on RADOS', () => {
  it('snapshot, rm, rm: nothing unreferenced after gc; young orphans stay, old ones go', async () => {
    await open();
    await mapper.create('v', { size: 3 * BS, blocksize: BS });
    await put('v', 0, Buffer.concat([fill(BS, 1), fill(BS, 2)]));
    await mapper.snapshot('v', 's');
    await mapper.remove('v');
    await mapper.remove('s');
    await mapper.purgeExpiredTrash(Date.now(), 0); // as gc does with trash_ttl = 0
    await pair.blockerb.writeFull('c'.repeat(64), fill(10, 3)); // an abandoned upload's block
    expect((await gc({ dryRun: true })).reclaimableObjects).toBe(2);
    const r = await gc();
    expect(r).toMatchObject({ freedObjects: 2, freedBytes: 2 * BS, keptObjects: 1 });
    expect((await gc({ now: () => Date.now() + HOUR })).freedObjects).toBe(1);
    const u = await storeUsage({ mapper, blockerb: pair.blockerb });
    expect(u.unreferencedBytes).toBe(0);
    expect(u.blockerObjects).toBe(0);
  });

  it('never deletes a live object while volumes are written, snapshotted and cloned', async () => {
    await open();
    const N = 4;
    const model = new Map<string, Buffer>();
    const write = async (vol: string, off: number, data: Buffer) => {
      await put(vol, off, data);
      data.copy(model.get(vol)!, off);
    };
    let stop = false;
    let runs = 0;
    const loop = (async () => {
      while (!stop) {
        await gc({ graceMs: 0 });
        runs++;
      }
    })();
    try {
      await mapper.create('w', { size: N * BS, blocksize: BS });
      model.set('w', Buffer.alloc(N * BS));
      for (let round = 0; round < 4; round++) {
        for (let i = 0; i < N; i++) await write('w', i * BS + 5, fill(100, round * 8 + i + 1));
        await mapper.snapshot('w', `s${round}`);
        model.set(`s${round}`, Buffer.from(model.get('w')!));
        await mapper.clone(`s${round}`, `c${round}`);
        model.set(`c${round}`, Buffer.from(model.get('w')!));
        await write(`c${round}`, round * BS, fill(10, 100 + round));
        if (round >= 1) {
          await mapper.remove(`s${round - 1}`);
          await mapper.purgeExpiredTrash(Date.now(), 0);
          model.delete(`s${round - 1}`);
        }
      }
    } finally {
      stop = true;
      await loop;
    }
    expect(runs).toBeGreaterThan(0);
    await gc({ graceMs: 0, now: () => Date.now() + HOUR });
    for (const [vol, want] of model) expect((await get(vol, want.length)).equals(want), vol).toBe(true);
    expect((await storeUsage({ mapper, blockerb: pair.blockerb })).unreferencedObjects).toBe(0);
  }, 30_000);
});
