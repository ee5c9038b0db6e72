/**
 * Defect 2 of issue 14: a crash (or ENOSPC) in `rename` between writing the new map and marking
 * the old one deleted left both names live, their WRITABLE entries naming the same objects:
 * writing one changed the other, and removing one destroyed the other's data. Here `rename` is
 * crashed, or failed, at each of its store changes in turn, and the names are then used as a user
 * would: written, removed, reused.
 */
import { createHash } from 'node:crypto';
import { type Blocker, FaultyBlocker } from '@archipelago/blocker';
import { ArchipelagoError } from '@archipelago/libxseg';
import { MapFlag } from '@archipelago/mapfile';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  aliasing,
  type CrashStore,
  fileStore,
  mapperOver,
  memoryStore,
  outcome,
  runCrashing,
} from './__fixtures__/crash.js';
import { get, put } from './__fixtures__/stack.js';
import { MapStore } from './map-store.js';
import type { Mapper } from './mapper.js';
import { silentLogger } from './types.js';

const BS = 4096;
const SIZE = 40 * BS; // two map blocks
const A0 = Buffer.alloc(BS, 0xa0);
const A33 = Buffer.alloc(BS, 0xa3);
const B = Buffer.alloc(BS, 0xbb);

/** Volume `v` with data in both of its map blocks, every block its own (WRITABLE). */
async function setup(store: CrashStore): Promise<number> {
  await store.clear();
  const b = store.open();
  const m = mapperOver(b);
  await m.create('v', { size: SIZE, blocksize: BS });
  await put(m, b, 'v', 0, A0);
  await put(m, b, 'v', 33 * BS, A33);
  await m.close();
  await b.close();
  await store.save();
  const dry = await runCrashing(store, null, (mm) => mm.rename('v', 'w'));
  expect(dry.error).toBeNull();
  return dry.changes.length;
}

/** The names of `names` that read as volumes now. */
async function readable(m: Mapper, b: Blocker, names: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const n of names) if ((await outcome(get(m, b, n, 0, BS))) === 'ok') out.push(n);
  return out;
}

const digest = (buf: Buffer) => createHash('sha256').update(buf).digest('hex');

for (const kind of ['file', 'memory'] as const) {
  describe(`rename interrupted at every step (${kind} blocker)`, () => {
    let store: CrashStore;
    let n = 0;
    beforeAll(async () => {
      store = kind === 'file' ? await fileStore() : await memoryStore();
      n = await setup(store);
    });
    afterAll(async () => {
      await store.dispose();
    });

    it('after a crash, writing one name never changes the other, and removing one keeps the other’s data', async () => {
      expect(n).toBeGreaterThan(4);
      for (let k = 1; k <= n; k++) {
        await store.restore();
        await runCrashing(store, k, (m) => m.rename('v', 'w'));
        const at = `crash after change ${k}/${n}`;
        const b = store.open();
        const m = mapperOver(b);
        try {
          const live = await readable(m, b, ['v', 'w']);
          for (const x of live) {
            const others = live.filter((y) => y !== x);
            const before = await Promise.all(others.map((y) => get(m, b, y, 0, BS)));
            await put(m, b, x, 0, B);
            for (const [i, y] of others.entries()) {
              expect(digest(await get(m, b, y, 0, BS)), `${at}: writing ${x} changed ${y}`).toBe(
                digest(before[i]!),
              );
            }
          }
          if (live.length > 1) {
            await m.remove(live[0]!);
            for (const y of live.slice(1)) {
              expect(
                (await get(m, b, y, 33 * BS, BS)).equals(A33),
                `${at}: removing ${live[0]} destroyed ${y}'s data`,
              ).toBe(true);
            }
          }
          // Done or not done: exactly one name is the volume, with all of its data.
          expect(live, `${at}: volumes named v or w`).toHaveLength(1);
          expect((await get(m, b, live[0]!, 33 * BS, BS)).equals(A33), `${at}: data`).toBe(true);
          expect(await aliasing(m), at).toEqual([]);
        } finally {
          await m.close();
          await b.close();
        }
      }
    });

    it('after ENOSPC at any step, the same process and the next one see one volume with its data', async () => {
      const dry = await countChanges(store);
      for (let k = 1; k <= n; k++) {
        await store.restore();
        const b = store.open();
        const faulty = new FaultyBlocker(b);
        // Fail the k-th change with ENOSPC: the plan counts the earlier calls of that method.
        const [method, name] = dry[k - 1]!.split(' ') as [string, string];
        const earlier = dry.slice(0, k - 1).filter((c) => c.startsWith(`${method} `)).length;
        const m = mapperOver(faulty);
        faulty.fail({
          method: method as 'writeFull',
          after: earlier,
          times: 1,
          error: () => new ArchipelagoError('ENOSPC', `no space left writing ${name}`),
        });
        const at = `ENOSPC at change ${k}/${n} (${method} ${name})`;
        const result = await outcome(m.rename('v', 'w'));
        expect(['ok', 'ENOSPC'], at).toContain(result);
        faulty.clear();
        for (const mm of [m, mapperOver(b)]) {
          const live = await readable(mm, b, ['v', 'w']);
          // A rename that reported success has happened; one that failed may have either way.
          if (result === 'ok') expect(live, at).toEqual(['w']);
          expect(live, at).toHaveLength(1);
          expect((await get(mm, b, live[0]!, 33 * BS, BS)).equals(A33), at).toBe(true);
          expect(await aliasing(mm), at).toEqual([]);
          await mm.close();
        }
        await b.close();
      }
    });

    it('the old name is reused after a crash past the commit: the new name keeps the volume', async () => {
      const k = await changeIndex(store, 'writeFull v'); // the old header marked deleted: the commit
      await store.restore();
      await runCrashing(store, k, (m) => m.rename('v', 'w'));
      const b = store.open();
      const m = mapperOver(b);
      await m.create('v', { size: BS, blocksize: BS });
      expect((await get(m, b, 'w', 33 * BS, BS)).equals(A33)).toBe(true);
      expect((await m.info('w')).incomplete).toBe(false);
      expect((await get(m, b, 'v', 0, BS)).equals(Buffer.alloc(BS))).toBe(true);
      expect(await aliasing(m)).toEqual([]);
      await m.close();
      await b.close();
    });

    it('before the commit, the old volume may be written, snapshotted or removed, and the new name then goes', async () => {
      const k = (await changeIndex(store, 'writeFull v')) - 1; // the new map written, not committed
      for (const use of ['write', 'snapshot', 'remove'] as const) {
        await store.restore();
        await runCrashing(store, k, (m) => m.rename('v', 'w'));
        const b = store.open();
        const m = mapperOver(b);
        if (use === 'write') await put(m, b, 'v', 0, B);
        if (use === 'snapshot') await m.snapshot('v', 'vs');
        if (use === 'remove') await m.remove('v');
        // w is still the INCOMPLETE map the crash left (nothing above looked at it) ...
        const w = await new MapStore(b, { parallelism: 1, log: silentLogger }).state('w');
        expect(w && w.header.flags & MapFlag.INCOMPLETE).toBeTruthy();
        expect(w?.intent).toMatchObject({ kind: 'renamed-from', name: 'v' });
        // ... and its next use undoes the rename: v was used as the volume since.
        expect(await outcome(m.info('w')), use).toBe('ENOENT_VOLUME');
        expect((await m.list()).map((x) => x.name)).toEqual(
          use === 'remove' ? [] : use === 'write' ? ['v'] : ['v', 'vs'],
        );
        if (use !== 'remove') expect((await get(m, b, 'v', 33 * BS, BS)).equals(A33)).toBe(true);
        // The name is free again, and the rename can be done.
        if (use !== 'remove') {
          await m.rename('v', 'w');
          expect((await get(m, b, 'w', 0, BS)).equals(use === 'write' ? B : A0)).toBe(true);
        }
        expect(await aliasing(m)).toEqual([]);
        await m.close();
        await b.close();
      }
    });

    it('the new name of an interrupted rename is settled by opening it, and shows as incomplete while its lock is held', async () => {
      const k = await changeIndex(store, 'writeFull v');
      await store.restore();
      await runCrashing(store, k, (m) => m.rename('v', 'w'));
      // Another host holds the lock of w: the rename cannot be settled, and w is shown incomplete.
      const foreign = store.open(undefined, 'otherhost_embedded');
      await foreign.acquire('w', { hold: 'host' });
      const b = store.open();
      const m = mapperOver(b);
      const info = await m.info('w');
      expect(info.incomplete).toBe(true);
      const err = await m.openVolume('w').catch((e: unknown) => e);
      expect(ArchipelagoError.is(err, 'ELOCKED')).toBe(true);
      await foreign.release('w');
      await foreign.close();
      await m.openVolume('w');
      expect((await m.info('w')).incomplete).toBe(false);
      expect((await get(m, b, 'w', 33 * BS, BS)).equals(A33)).toBe(true);
      await m.close();
      await b.close();
    });
  });
}

describe('a rename under way in this mapper', () => {
  it('is not undone by other callers of the same mapper using the new or the old name meanwhile', async () => {
    const store = await memoryStore();
    await setup(store);
    await store.restore();
    const b = store.open();
    // Hold the commit (the old header marked deleted) until the others have tried.
    let letGo!: () => void;
    const gate = new Promise<void>((r) => {
      letGo = r;
    });
    let reached!: () => void;
    const atCommit = new Promise<void>((r) => {
      reached = r;
    });
    const held = new Proxy(b, {
      get(target, prop) {
        if (prop === 'writeFull')
          return async (name: string, data: Uint8Array) => {
            if (name === 'v') {
              reached();
              await gate;
            }
            return target.writeFull(name, data);
          };
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    const m = mapperOver(held);
    const renaming = m.rename('v', 'w');
    await atCommit;
    expect((await m.info('w')).incomplete).toBe(true);
    expect(await outcome(m.openVolume('w'))).toBe('EBUSY');
    expect(await outcome(m.create('w', { size: BS, blocksize: BS }))).toBe('EBUSY');
    expect(await outcome(m.remove('w'))).toBe('EBUSY');
    letGo();
    expect((await renaming).name).toBe('w');
    expect((await m.info('w')).incomplete).toBe(false);
    expect((await get(m, b, 'w', 33 * BS, BS)).equals(A33)).toBe(true);
    expect(await outcome(m.info('v'))).toBe('ENOENT_VOLUME');
    await m.close();
    await b.close();
  });
});

/** The changes of an uninterrupted rename from the saved store, in order. */
async function countChanges(store: CrashStore): Promise<string[]> {
  await store.restore();
  const { changes } = await runCrashing(store, null, (m) => m.rename('v', 'w'));
  await store.restore();
  return changes;
}

/** 1-based index of the first change `what` of an uninterrupted rename. */
async function changeIndex(store: CrashStore, what: string): Promise<number> {
  const i = (await countChanges(store)).indexOf(what);
  expect(i).toBeGreaterThanOrEqual(0);
  return i + 1;
}
