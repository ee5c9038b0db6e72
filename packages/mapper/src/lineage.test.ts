/**
 * Lineage recorded (not inferred), rollback and flatten, through a mapper over two file blockers.
 */
import { ObjFlag } from '@archipelago/mapfile';
import { describe, expect, it } from 'vitest';
import { codeOf, get, put, stack, type TempStack, useTempStack } from './__fixtures__/stack.js';
import { isOwnObject } from './ops/flatten.js';
import { childrenOf, type LineageSource, mapLineage, snapshotsOf } from './ops/lineage.js';

const BS = 4096;
const fill = (c: string, n = BS) => Buffer.alloc(n, c);

describe('lineage, rollback, flatten', () => {
  let s: TempStack;
  useTempStack('lineage-', 'linhost', (x) => {
    s = x;
  });
  const src = (): LineageSource => ({ mapper: s.mapper, blockerm: s.maps });
  const bytes = (vol: string, size: number) => get(s.mapper, s.blocks, vol, 0, size);

  it('rollback: the volume reads as the snapshot, takes its size, and later writes leave the snapshot alone', async () => {
    const m = s.mapper;
    await m.create('v', { size: 4 * BS, blocksize: BS });
    await put(m, s.blocks, 'v', 0, fill('a', 2 * BS));
    await m.snapshot('v', 's1');
    const snapBytes = await bytes('s1', 4 * BS);
    await put(m, s.blocks, 'v', 0, fill('b', 3 * BS));
    await m.resize('v', 6 * BS);
    const before = await m.info('v');
    const after = await m.rollback('v', 's1');
    expect(after.size).toBe(4 * BS);
    expect(after.epoch).toBe(before.epoch + 1n);
    expect((await bytes('v', 4 * BS)).equals(snapBytes)).toBe(true);
    // The entries are the snapshot's, none writable: the next write copies up.
    expect((await m.entries('v')).every((e) => (e.flags & ObjFlag.WRITABLE) === 0)).toBe(true);
    await put(m, s.blocks, 'v', 0, fill('c'));
    expect((await bytes('s1', 4 * BS)).equals(snapBytes)).toBe(true);
    expect((await bytes('v', BS)).equals(fill('c'))).toBe(true);
    expect((await get(m, s.blocks, 'v', BS, BS)).equals(fill('a'))).toBe(true);
    // No staged map is left, and `ls` never showed one.
    expect((await m.list()).map((x) => x.name)).toEqual(['s1', 'v']);
  });

  it('rollback refuses a snapshot of another lineage (saying why) and a volume another owner holds (EBUSY naming it)', async () => {
    const m = s.mapper;
    await m.create('v', { size: 2 * BS, blocksize: BS });
    await m.create('w', { size: 2 * BS, blocksize: BS });
    await put(m, s.blocks, 'w', 0, fill('w'));
    await m.snapshot('w', 'ws');
    await m.snapshot('v', 'vs');
    await expect(m.rollback('v', 'ws')).rejects.toThrow(/not a snapshot of "v"/);
    expect(await codeOf(m.rollback('v', 'w'))).toBe('ENOTSNAPSHOT');
    expect(await codeOf(m.rollback('vs', 'ws'))).toBe('EREADONLY');
    const other = stack(s.dir, 'otherhost');
    try {
      await other.mapper.openVolume('v');
      const e = await m.rollback('v', 'vs').catch((x: unknown) => x as Error & { code: string });
      expect(e).toMatchObject({ code: 'EBUSY' });
      expect(String((e as Error).message)).toMatch(/otherhost/);
    } finally {
      await other.mapper.close();
      await other.m.close();
      await other.b.close();
    }
    // A clone rolls back to its parent.
    await m.clone('ws', 'c');
    await put(m, s.blocks, 'c', 0, fill('x'));
    await m.rollback('c', 'ws');
    expect((await bytes('c', BS)).equals(fill('w'))).toBe(true);
  });

  it('flatten: the clone names only its own objects, reads the same, and outlives its parent', async () => {
    const m = s.mapper;
    await m.create('v', { size: 5 * BS, blocksize: BS });
    await put(m, s.blocks, 'v', 0, fill('a', 3 * BS));
    await m.snapshot('v', 'snap');
    await m.clone('snap', 'c', { size: 6 * BS });
    await put(m, s.blocks, 'c', BS, fill('z'));
    const want = await bytes('c', 6 * BS);
    const progress: number[] = [];
    const r = await m.flatten('c', { onProgress: (d) => progress.push(d) });
    expect(r).toEqual({ name: 'c', copied: 2, parent: 'snap' });
    expect(progress.at(-1)).toBe(2);
    for (const e of await m.entries('c')) {
      if (e.flags & ObjFlag.ZERO) continue;
      expect(isOwnObject('c', e.name), e.name).toBe(true);
      expect(e.flags & ObjFlag.WRITABLE).toBeTruthy();
    }
    expect(await mapLineage(src(), 'c')).toMatchObject({ recorded: true, parent: null, flattened: true });
    expect(await childrenOf(src(), 'snap')).toEqual([]);
    await m.remove('snap');
    await m.remove('v');
    expect((await bytes('c', 6 * BS)).equals(want)).toBe(true);
    // Flattening again copies nothing.
    expect((await m.flatten('c')).copied).toBe(0);
  });

  it('records the parent of a clone that rewrote every block, the order of snapshots, and the children', async () => {
    const m = s.mapper;
    await m.create('v', { size: 3 * BS, blocksize: BS });
    await put(m, s.blocks, 'v', 0, fill('1', 3 * BS));
    for (const snap of ['zeta', 'alpha', 'mid']) {
      await m.snapshot('v', snap);
      await put(m, s.blocks, 'v', 0, fill(snap[0]!));
    }
    expect((await snapshotsOf(src(), 'v')).map((x) => [x.name, x.ordinal])).toEqual([
      ['zeta', 1],
      ['alpha', 2],
      ['mid', 3],
    ]);
    await m.clone('alpha', 'c1');
    await m.clone('alpha', 'c2');
    await put(m, s.blocks, 'c1', 0, fill('r', 3 * BS)); // every block rewritten: nothing shared
    expect(await mapLineage(src(), 'c1')).toMatchObject({ parent: { name: 'alpha', removed: false } });
    expect(await mapLineage(src(), 'alpha')).toMatchObject({ origin: { name: 'v', removed: false } });
    // A plain volume gets a record (parent not known: recorded later than made) once snapshotted.
    expect(await mapLineage(src(), 'v')).toMatchObject({ recorded: true });
    expect(await mapLineage(src(), 'c2')).toMatchObject({ recorded: true, parent: { name: 'alpha' } });
    expect(await childrenOf(src(), 'alpha')).toEqual(['c1', 'c2']);
    expect(await childrenOf(src(), 'zeta')).toEqual([]);
  });

  it('rename keeps lineage; a removed parent stays named, marked removed', async () => {
    const m = s.mapper;
    await m.create('v', { size: 2 * BS, blocksize: BS });
    await m.snapshot('v', 's1');
    await m.snapshot('v', 's2');
    await m.clone('s1', 'c');
    await m.rename('s1', 'first');
    await m.rename('v', 'w');
    await m.rename('c', 'd');
    expect(await childrenOf(src(), 'first')).toEqual(['d']);
    expect(await mapLineage(src(), 'd')).toMatchObject({ parent: { name: 'first', removed: false } });
    expect((await snapshotsOf(src(), 'w')).map((x) => x.name)).toEqual(['first', 's2']);
    expect(await snapshotsOf(src(), 'v')).toEqual([]);
    // A rollback of the renamed volume to its renamed snapshot is of its lineage.
    await m.rollback('w', 'first');
    await m.remove('first');
    expect(await mapLineage(src(), 'd')).toMatchObject({ parent: { name: 'first', removed: true } });
    // A new map under a used name does not inherit the old record.
    await m.create('c', { size: BS, blocksize: BS });
    expect(await mapLineage(src(), 'c')).toMatchObject({ recorded: false });
    expect(await mapLineage(src(), 'd')).toMatchObject({ recorded: true, parent: { name: 'first' } });
  });
  it('mapLineage reads only the maps a record names, and lists the store only when a reference may have moved', async () => {
    const m = s.mapper;
    await m.create('v', { size: 2 * BS, blocksize: BS });
    await m.snapshot('v', 's1');
    await m.clone('s1', 'c');
    let lists = 0;
    const counting: LineageSource = {
      mapper: Object.assign(
        {
          list: () => {
            lists++;
            return m.list();
          },
        },
        { info: m.info.bind(m) },
      ),
      blockerm: {
        info: s.maps.info.bind(s.maps),
        read: s.maps.read.bind(s.maps),
        list: () => {
          lists++;
          return s.maps.list();
        },
      },
    };
    expect(await mapLineage(counting, 'c')).toMatchObject({ parent: { name: 's1', removed: false } });
    expect(await mapLineage(counting, 's1')).toMatchObject({ origin: { name: 'v', removed: false } });
    expect(await mapLineage(counting, 'nope')).toMatchObject({ recorded: false });
    expect(lists).toBe(0);
    // The parent renamed and a new map under its old name: the ids tell them apart (the index).
    await m.rename('s1', 'first');
    await m.create('s1', { size: BS, blocksize: BS });
    expect(await mapLineage(counting, 'c')).toMatchObject({ parent: { name: 'first', removed: false } });
    expect(lists).toBeGreaterThan(0);
    await m.remove('first');
    expect(await mapLineage(counting, 'c')).toMatchObject({ parent: { name: 'first', removed: true } });
  });
});
