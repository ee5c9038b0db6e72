/**
 * INCOMPLETE maps: a volume created `incomplete` for a builder (import) is the builder's alone
 * until `complete`; killed before that, it stays incomplete: `info` and `list` say so, nobody can
 * open, write, clone or snapshot it, the name cannot be created again, and `remove` removes it,
 * deleting only objects named by its own name and epoch.
 */
import { ArchipelagoError } from '@archipelago/libxseg';
import { encodeHeaderV2, MapFlag } from '@archipelago/mapfile';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  aliasing,
  type CrashStore,
  fileStore,
  mapperOver,
  outcome,
  runCrashing,
} from './__fixtures__/crash.js';
import { get, put } from './__fixtures__/stack.js';

const BS = 4096;
const DATA = Buffer.alloc(BS, 0x5a);

describe('incomplete volumes', () => {
  let store: CrashStore;
  beforeAll(async () => {
    store = await fileStore();
  });
  afterAll(async () => {
    await store.dispose();
  });

  it('a builder writes its incomplete volume, others cannot use it, complete makes it a volume', async () => {
    await store.clear();
    const b = store.open();
    const builder = mapperOver(b);
    const made = await builder.create('img', { size: 8 * BS, blocksize: BS, incomplete: true });
    expect(made.incomplete).toBe(true);
    await put(builder, b, 'img', 0, DATA);
    const other = mapperOver(store.open(undefined, 'otherhost_embedded'));
    expect((await other.info('img')).incomplete).toBe(true);
    expect((await other.list()).map((v) => [v.name, v.incomplete])).toEqual([['img', true]]);
    expect(await outcome(other.mapRead('img', 0, BS))).toBe('EBUSY');
    expect(await outcome(other.snapshot('img', 's'))).toBe('ELOCKED'); // the builder holds it
    expect(await outcome(other.create('img', { size: BS, blocksize: BS }))).toBe('ELOCKED');
    expect(await outcome(other.complete('img'))).toBe('EINVAL');
    expect((await builder.complete('img')).incomplete).toBe(false);
    await other.close();
    await builder.close();
    const next = store.open(undefined, 'otherhost_embedded');
    const later = mapperOver(next);
    expect((await later.info('img')).incomplete).toBe(false);
    expect((await get(later, next, 'img', 0, BS)).equals(DATA)).toBe(true);
    await later.close();
    await next.close();
    await b.close();
  });

  it('killed before complete, it stays incomplete; opening it says so; remove removes it', async () => {
    await store.clear();
    const { crashed } = await runCrashing(store, null, async (m, b) => {
      await m.create('img', { size: 8 * BS, blocksize: BS, incomplete: true });
      await put(m, b, 'img', 0, DATA);
      await put(m, b, 'img', 5 * BS, DATA);
      // killed here: never completed
    });
    expect(crashed).toBe(false);
    const b = store.open();
    const m = mapperOver(b);
    expect((await m.info('img')).incomplete).toBe(true);
    expect(await outcome(m.snapshot('img', 's'))).toBe('EBUSY');
    expect(await outcome(m.resize('img', BS))).toBe('EBUSY');
    expect(await outcome(m.rename('img', 'img2'))).toBe('EBUSY');
    expect(await outcome(m.clone('img', 'c'))).toBe('EBUSY');
    expect(await outcome(m.create('img', { size: BS, blocksize: BS }))).toBe('EEXIST_VOLUME');
    const err = await m.openVolume('img').catch((e: unknown) => e);
    expect(ArchipelagoError.is(err, 'EBUSY')).toBe(true);
    expect((err as Error).message).toBe(
      'volume "img" is incomplete (an interrupted import or rename); remove it (vlmc remove img)',
    );
    const objects = async () => {
      const all: string[] = [];
      for await (const o of b.list('img_')) all.push(o);
      return all.sort();
    };
    expect(await objects()).toHaveLength(3); // one map block, two data objects
    await m.remove('img');
    expect(await objects()).toEqual([]);
    expect(await outcome(m.info('img'))).toBe('ENOENT_VOLUME');
    // The name goes on with the next epoch.
    expect((await m.create('img', { size: BS, blocksize: BS })).epoch).toBe(2n);
    await m.close();
    await b.close();
  });

  it('remove of an incomplete map never deletes objects it does not name by its own name and epoch', async () => {
    await store.clear();
    const b = store.open();
    const m = mapperOver(b);
    await m.create('v', { size: 4 * BS, blocksize: BS });
    await put(m, b, 'v', 0, DATA);
    // An incomplete map naming v's object WRITABLE (as a rename interrupted by another version,
    // without an intent, could leave it): a copy of v's map under "x", marked INCOMPLETE.
    await b.writeFull('x_0000000000000000', await b.read('v_0000000000000000', 0, BS, { missingOk: true }));
    await b.writeFull(
      'x',
      encodeHeaderV2({ size: 4 * BS, blocksize: BS, flags: MapFlag.INCOMPLETE, epoch: 1n }),
    );
    expect(await aliasing(m)).toEqual([]); // an incomplete map is not live
    await m.remove('x');
    expect((await get(m, b, 'v', 0, BS)).equals(DATA)).toBe(true);
    await m.close();
    await b.close();
  });
});
