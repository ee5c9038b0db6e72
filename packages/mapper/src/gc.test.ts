/**
 * Garbage collection (gc.ts) over two file blockers: the leaks of removal end with nothing
 * unreferenced, a dry run deletes nothing, holds and the grace keep what producers are making,
 * two runs at once take turns.
 */
import { createHash } from 'node:crypto';
import { readdir, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { FileBlocker } from '@archipelago/blocker-file';
import { dataObjectName, mapBlockName } from '@archipelago/mapfile';
import { describe, expect, it } from 'vitest';
import { get, put, type TempStack, useTempStack } from './__fixtures__/stack.js';
import {
  collectGarbage,
  GATEWAY_OWNED_PREFIX,
  GC_HOLD_PREFIX,
  GC_STATE,
  type GcProgress,
  isGatewayOwned,
  listGcHolds,
  lockHashedMap,
  ownHashedMap,
  takeGcHold,
} from './gc.js';
import { TRASH_PREFIX } from './ops/trash.js';
import { storeUsage } from './usage.js';

const BS = 4096;
const fill = (n: number, v: number) => Buffer.alloc(n, v);
const HOUR = 3_600_000;

let s: TempStack;
useTempStack('archip-mapper-gc-', 'g_1', (t) => {
  s = t;
});

// As `vlmc gc` runs it with `[mapperd] trash_ttl = 0`: removed maps leave the trash first.
const purge = () => s.mapper.purgeExpiredTrash(Date.now(), 0);
const gc = (o: Partial<Parameters<typeof collectGarbage>[0]> = {}) =>
  collectGarbage({ blockerm: s.maps, blockerb: s.blocks, prepare: purge, ...o });
const usage = () => storeUsage({ mapper: s.mapper, blockerb: s.blocks });
/** Sets the mtime of blockerb objects (files under the blocker's hashed directories). */
async function touch(name: string, ms: number): Promise<void> {
  const found = await findFile(join(s.dir, 'blocks'), name);
  await utimes(found, ms / 1000, ms / 1000);
}
const age = async (...objs: string[]) => {
  for (const o of objs) await touch(o, Date.now() - 2 * HOUR);
};
async function findFile(dir: string, name: string): Promise<string> {
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && e.name === name) return join(e.parentPath, e.name);
  }
  throw new Error(`no file ${name} under ${dir}`);
}
const names = async (b: FileBlocker, prefix = '') => {
  const out: string[] = [];
  for await (const n of b.list(prefix)) out.push(n);
  return out.sort();
};

describe('gc: what removal leaves behind', () => {
  it('snapshot, rm volume, rm snapshot: every object and map block goes, headers stay', async () => {
    await s.mapper.create('v', { size: 4 * BS, blocksize: BS });
    await put(s.mapper, s.blocks, 'v', 0, Buffer.concat([fill(BS, 1), fill(BS, 2), fill(BS, 3)]));
    await s.mapper.snapshot('v', 's');
    await put(s.mapper, s.blocks, 'v', 0, fill(BS, 4)); // a copy-up: v's own object
    await s.mapper.remove('v');
    await s.mapper.remove('s');
    // Both are in the trash: v's own object stays there until the trash is emptied.
    expect((await usage()).unreferencedObjects).toBe(4);
    await purge();
    const before = await usage();
    expect(before.unreferencedObjects).toBe(3); // the snapshot's three (v's own went with v)
    expect(before.unreferencedBytes).toBe(3 * BS);

    const dry = await gc({ dryRun: true });
    expect(dry).toMatchObject({ reclaimableObjects: 3, reclaimableBytes: 3 * BS, freedObjects: 0 });
    expect((await usage()).unreferencedObjects).toBe(3); // a dry run deletes nothing

    let prepared = 0;
    const r = await gc({ prepare: async () => prepared++ });
    expect(prepared).toBe(1); // (where the trash past its ttl is purged)
    expect(r).toMatchObject({ freedObjects: 3, freedBytes: 3 * BS, maps: 0 });
    const after = await usage();
    expect(after.unreferencedBytes).toBe(0);
    expect(after.blockerObjects).toBe(0);
    // Headers stay (the names' epochs survive); no map block is left.
    // (the trash entries' headers stay too, and their lineage records until they are old)
    expect((await names(s.maps)).filter((n) => !n.startsWith(TRASH_PREFIX))).toEqual(['s', 'v']);
    await s.mapper.create('v', { size: BS, blocksize: BS });
    expect((await s.mapper.info('v')).epoch).toBe(3n);
  });

  it('a removed clone: its objects go, the snapshot it came from keeps every byte', async () => {
    await s.mapper.create('base', { size: 2 * BS, blocksize: BS });
    await put(s.mapper, s.blocks, 'base', 0, Buffer.concat([fill(BS, 7), fill(BS, 8)]));
    await s.mapper.snapshot('base', 'gold');
    await s.mapper.clone('gold', 'c');
    await put(s.mapper, s.blocks, 'c', 100, fill(10, 9));
    await s.mapper.remove('c');
    await s.mapper.remove('base');
    const r = await gc();
    expect(r.unreferencedObjects).toBe(0); // remove deleted c's own copy-up already
    expect((await usage()).unreferencedBytes).toBe(0);
    expect(await get(s.mapper, s.blocks, 'gold', 0, 2 * BS)).toEqual(
      Buffer.concat([fill(BS, 7), fill(BS, 8)]),
    );
  });

  it("a killed import's orphans: kept while its map is incomplete, gone once it is removed", async () => {
    const info = await s.mapper.create('imp', { size: 4 * BS, blocksize: BS, incomplete: true });
    await put(s.mapper, s.blocks, 'imp', 0, fill(BS, 5));
    // Bulk writes whose map entries never made it (the import was killed), and its hold, never
    // released, whose lease ran out.
    const orphans = [1, 2, 3].map((i) => dataObjectName('imp', info.epoch, i));
    for (const o of orphans) await s.blocks.writeFull(o, fill(BS, 6));
    const dead = await takeGcHold(s.maps, { what: 'import imp', leaseMs: 50 });
    await s.mapper.closeVolume('imp');
    // Still young (and the map is a live, incomplete one): a gc now keeps them.
    expect(await gc()).toMatchObject({ freedObjects: 0, keptObjects: 3 });
    await s.mapper.remove('imp');
    const r = await gc();
    expect(r.freedObjects).toBe(3); // objects of a removed map go at once, young or not
    expect((await usage()).unreferencedBytes).toBe(0);
    await dead.release();
  });

  it('unreferenced objects nobody can vouch for go once older than the grace', async () => {
    await s.blocks.writeFull('f'.repeat(64), fill(100, 1)); // e.g. an abandoned upload's block
    expect(await gc()).toMatchObject({ freedObjects: 0, keptObjects: 1 });
    expect(await gc({ now: () => Date.now() + HOUR })).toMatchObject({ freedObjects: 1, freedBytes: 100 });
  });
});

describe('gc: maps that change while it marks', () => {
  it('a snapshot renamed under the mark keeps its objects (the mark reads again until nothing changed)', async () => {
    await s.mapper.create('v', { size: 2 * BS, blocksize: BS });
    await put(s.mapper, s.blocks, 'v', 0, Buffer.concat([fill(BS, 1), fill(BS, 2)]));
    await s.mapper.snapshot('v', 'snap');
    await s.mapper.remove('v'); // the snapshot's objects are v's: only the snapshot names them
    // The rename happens just as gc first looks at "snap": after it listed blockerm, so it reads
    // "snap" removed and has not seen "moved".
    let renamed = false;
    const maps = new Proxy(s.maps, {
      get(target, prop, receiver) {
        if (prop === 'info') {
          return async (name: string) => {
            if (name === 'snap' && !renamed) {
              renamed = true;
              await s.mapper.rename('snap', 'moved');
            }
            return target.info(name);
          };
        }
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    const r = await collectGarbage({ blockerm: maps, blockerb: s.blocks, graceMs: 0 });
    expect(renamed).toBe(true);
    expect(r.rounds).toBeGreaterThanOrEqual(3);
    expect(r.freedObjects).toBe(0);
    expect(await get(s.mapper, s.blocks, 'moved', 0, 2 * BS)).toEqual(
      Buffer.concat([fill(BS, 1), fill(BS, 2)]),
    );
  });
});

describe('gc: a map whose blocks go between its header and its entries', () => {
  /** blockerm, where `act` runs once just before gc (or anyone) looks at map block 0 of `vol`. */
  const beforeBlocks = (vol: string, act: () => Promise<unknown>) => {
    let done = false;
    const block = mapBlockName(vol, 0);
    const maps = new Proxy(s.maps, {
      get(target, prop, receiver) {
        if (prop === 'info') {
          return async (name: string) => {
            if (name === block && !done) {
              done = true;
              await act();
            }
            return target.info(name);
          };
        }
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    return { maps, happened: () => done };
  };
  const trashed = async () => {
    await s.mapper.create('v', { size: 2 * BS, blocksize: BS });
    await put(s.mapper, s.blocks, 'v', 0, Buffer.concat([fill(BS, 1), fill(BS, 2)]));
    await s.mapper.snapshot('v', 's1');
    await s.mapper.remove('v');
    await purge();
    await s.mapper.remove('s1'); // only its trash entry names the objects now
    const [entry, ...more] = await s.mapper.listTrash();
    expect(more).toEqual([]);
    return entry!.entry;
  };

  it('a trash entry purged under the read: gc goes on (it read ECORRUPT_MAP before) and frees it', async () => {
    const entry = await trashed();
    const { maps, happened } = beforeBlocks(entry, () => s.mapper.purgeTrash(entry));
    const r = await collectGarbage({ blockerm: maps, blockerb: s.blocks, graceMs: 0 });
    expect(happened()).toBe(true);
    expect(r.freedObjects).toBe(2);
    expect((await usage()).unreferencedObjects).toBe(0);
  });

  it('a trash entry restored under the read: its objects stay, every byte reads back', async () => {
    const entry = await trashed();
    const { maps, happened } = beforeBlocks(entry, () => s.mapper.restoreTrash('s1'));
    const r = await collectGarbage({ blockerm: maps, blockerb: s.blocks, graceMs: 0 });
    expect(happened()).toBe(true);
    expect(r.freedObjects).toBe(0);
    expect(await get(s.mapper, s.blocks, 's1', 0, 2 * BS)).toEqual(Buffer.concat([fill(BS, 1), fill(BS, 2)]));
  });
});

describe('gc: producers under way', () => {
  it('a hold keeps what was written after its start; a dedup hold keeps content objects', async () => {
    await s.blocks.writeFull('old-orphan', fill(10, 1));
    await s.blocks.writeFull('a'.repeat(64), fill(10, 2));
    await age('old-orphan', 'a'.repeat(64)); // written two hours ago
    const hold = await takeGcHold(s.maps, { what: 'import x' });
    await s.blocks.writeFull('fresh-orphan', fill(10, 3));
    await age('fresh-orphan'); // as old as the others...
    await touch('fresh-orphan', Date.now() + 5000); // ...no: written after the hold began
    const r = await gc({ graceMs: 0 });
    expect(r.holds.map((h) => h.what)).toEqual(['import x']);
    expect(await names(s.blocks)).toEqual(['fresh-orphan']);
    await hold.release();

    await s.blocks.writeFull('b'.repeat(64), fill(10, 4));
    await age('b'.repeat(64));
    const dedup = await takeGcHold(s.maps, { what: 'hash snap', kind: 'dedup' });
    const r2 = await gc({ graceMs: 0 });
    // The dedup hold may reuse any content object: none goes while it runs.
    expect(await names(s.blocks)).toContain('b'.repeat(64));
    expect(r2.holds.map((h) => h.kind)).toContain('dedup');
    await dedup.release();
    // Released with no gc under way, a hold's record goes; released while one runs, it stays,
    // ended, for that run to see, and a later run deletes it.
    expect(await listGcHolds(s.maps)).toEqual([]);
    const running = { v: 1, sweeping: false, by: 'other_1', expires: Date.now() + 60_000 };
    await s.maps.writeFull(GC_STATE, Buffer.from(JSON.stringify(running)));
    const h3 = await takeGcHold(s.maps, { what: 'import y' });
    await h3.release();
    expect((await listGcHolds(s.maps)).map((h) => [h.what, typeof h.end])).toEqual([['import y', 'number']]);
    await s.maps.delete(GC_STATE);
    await gc({ now: () => Date.now() + 3 * HOUR, graceMs: 0 });
    expect(await names(s.maps, GC_HOLD_PREFIX)).toEqual([]);
    expect(await names(s.maps)).toEqual([]);
    expect(await names(s.blocks)).toEqual([]);
  });

  it('two gc runs at once: the second waits for the first (same blocker, and another identity)', async () => {
    await s.mapper.create('v', { size: 2 * BS, blocksize: BS });
    await put(s.mapper, s.blocks, 'v', 0, fill(2 * BS, 1));
    await s.mapper.snapshot('v', 's');
    await s.mapper.remove('v');
    await s.mapper.remove('s');
    const other = new FileBlocker({ dir: join(s.dir, 'maps'), identity: 'g_2' });
    const events: string[] = [];
    const track = (who: string) => (p: GcProgress) => {
      const e = p.phase === 'wait' ? `${who} wait` : p.phase === 'sweep' ? `${who} sweep` : `${who} start`;
      if (!events.includes(e)) events.push(e);
    };
    try {
      const [a, b, c] = await Promise.all([
        gc({ onProgress: track('a') }),
        gc({ onProgress: track('b') }),
        collectGarbage({ blockerm: other, blockerb: s.blocks, prepare: purge, onProgress: track('c') }),
      ]);
      expect(a.freedObjects + b.freedObjects + c.freedObjects).toBe(2);
      expect(events.filter((e) => e.endsWith('start'))).toHaveLength(3);
      // The identity that came second found the lock taken and waited.
      expect(events.filter((e) => e.endsWith('wait')).length).toBeGreaterThan(0);
      // One run at a time: a run's start comes after the previous one's sweep.
      const order = events.filter((e) => !e.endsWith('wait'));
      for (let i = 0; i + 1 < order.length; i += 2) {
        expect(order[i]!.split(' ')[0]).toBe(order[i + 1]!.split(' ')[0]);
      }
      expect(b.waitedMs + c.waitedMs + a.waitedMs).toBeGreaterThan(0);
    } finally {
      await other.close();
    }
  });
});

describe('gc: maps the HTTP gateway made', () => {
  /** Content objects as the gateway stores them, and the hashed map it makes of them, owned. */
  async function gatewayMap(...fills: number[]): Promise<{ map: string; objects: string[] }> {
    const objects: string[] = [];
    for (const v of fills) {
      const name = createHash('sha256').update(fill(BS, v)).digest('hex');
      await s.blocks.writeFull(name, fill(BS, v));
      objects.push(name);
    }
    const made = await s.mapper.createHashedMap(objects, fills.length * BS, BS);
    if (!made.existed) await ownHashedMap(s.maps, made.name);
    return { map: made.name, objects };
  }
  /** A gateway file record naming `map` (the gc reads only `map`). */
  const record = (n: number, map: string) =>
    s.maps.writeFull(
      `gwo.${'0'.repeat(32)}.${n.toString(16).padStart(64, '0')}`,
      Buffer.from(JSON.stringify({ map })),
    );
  const unrecord = (n: number) => s.maps.delete(`gwo.${'0'.repeat(32)}.${n.toString(16).padStart(64, '0')}`);

  it('an owned map goes once no file record names it; its objects go at once when nothing else runs', async () => {
    const a = await gatewayMap(1, 2, 3);
    const b = await gatewayMap(3, 4); // shares an object with a
    await record(1, a.map);
    await record(2, b.map);
    expect(await gc()).toMatchObject({ gatewayMaps: 0, freedObjects: 0, fileRecords: 2 });
    await unrecord(1);
    const dry = await gc({ dryRun: true });
    expect(dry).toMatchObject({ gatewayMaps: 1, reclaimableObjects: 2, freedObjects: 0 });
    expect((await s.mapper.list()).map((m) => m.name)).toContain(a.map); // a dry run removes nothing
    // Default grace (10 minutes): the objects go anyway, they were the removed map's.
    expect(await gc()).toMatchObject({ gatewayMaps: 1, freedObjects: 2, freedBytes: 2 * BS });
    expect((await s.mapper.list()).map((m) => m.name)).toEqual([b.map]);
    expect(await names(s.blocks)).toEqual([...b.objects].sort());
    // Its marker goes with its map blocks (they tell a later run what it named; those younger than
    // a second stay a run).
    expect(await gc({ now: () => Date.now() + HOUR })).toMatchObject({ freedObjects: 0 });
    expect(await isGatewayOwned(s.maps, a.map)).toBe(false);
    await unrecord(2);
    await gc();
    expect(await usage()).toMatchObject({ maps: 0, blockerObjects: 0, unreferencedBytes: 0 });
    await gc({ now: () => Date.now() + HOUR }); // (map blocks younger than a second stay a run)
    expect(await names(s.maps, GATEWAY_OWNED_PREFIX)).toEqual([]);
  });

  it("a map vlmc hash made or found is the user's; a marker with no map goes", async () => {
    await s.mapper.create('v', { size: 2 * BS, blocksize: BS });
    await put(s.mapper, s.blocks, 'v', 0, Buffer.concat([fill(BS, 7), fill(BS, 8)]));
    await s.mapper.snapshot('v', 'snap');
    const g = await gatewayMap(7, 8); // the gateway first...
    expect(await isGatewayOwned(s.maps, g.map)).toBe(true);
    const h = await s.mapper.hash('snap'); // ...then vlmc hash finds the same map: the user's now
    expect(h).toMatchObject({ name: g.map, existed: true });
    expect(await isGatewayOwned(s.maps, g.map)).toBe(false);
    await ownHashedMap(s.maps, 'f'.repeat(64)); // a gateway killed between marker and map
    expect(await gc({ graceMs: 0, now: () => Date.now() + HOUR })).toMatchObject({ gatewayMaps: 0 });
    expect((await s.mapper.list()).map((m) => m.name)).toContain(g.map);
    expect(await names(s.maps, GATEWAY_OWNED_PREFIX)).toEqual([]);
  });

  it('an owned map whose lock is held (a commit under way) stays; a record written under the lock keeps it', async () => {
    const a = await gatewayMap(5, 6);
    const other = new FileBlocker({ dir: join(s.dir, 'maps'), identity: 'g_2' }); // another gateway
    try {
      const lock = await lockHashedMap(other, a.map);
      expect(lock).not.toBeNull();
      const running = gc();
      await new Promise((r) => setTimeout(r, 200));
      await record(1, a.map); // the commit writes its record, then lets go
      await lock!.release();
      expect(await running).toMatchObject({ freedObjects: 0 });
      expect(await gc({ graceMs: 0, now: () => Date.now() + HOUR })).toMatchObject({
        gatewayMaps: 0,
        freedObjects: 0,
      });
      expect((await s.mapper.list()).map((m) => m.name)).toEqual([a.map]);
    } finally {
      await other.close();
    }
  });
});

describe('gc never deletes a live object', () => {
  it('runs in a loop while volumes are written, snapshotted, cloned, renamed, imported and hashed', async () => {
    const N = 8;
    const model = new Map<string, Buffer>();
    const write = async (vol: string, off: number, data: Buffer) => {
      await put(s.mapper, s.blocks, vol, off, data);
      data.copy(model.get(vol)!, off);
    };
    let stop = false;
    let runs = 0;
    let freedDuring = 0;
    // No grace: only the rules (and the one second an mtime may be off) keep what is being made.
    const loop = (async () => {
      while (!stop) {
        const r = await gc({ graceMs: 0 });
        freedDuring += r.freedObjects;
        runs++;
      }
    })();
    try {
      await s.mapper.create('w', { size: N * BS, blocksize: BS });
      model.set('w', Buffer.alloc(N * BS));
      for (let round = 0; round < 6; round++) {
        for (let i = 0; i < N; i += 2) await write('w', i * BS + 17, fill(BS / 2, round * 16 + i + 1));
        const snap = `w-s${round}`;
        await s.mapper.snapshot('w', snap);
        model.set(snap, Buffer.from(model.get('w')!));
        const clone = `c${round}`;
        await s.mapper.clone(snap, clone);
        model.set(clone, Buffer.from(model.get(snap)!));
        await write(clone, (round % N) * BS, fill(100, 200 + round));
        // Renamed: its names move to another map while gc reads them.
        await s.mapper.rename(clone, `r${clone}`);
        model.set(`r${clone}`, model.get(clone)!);
        model.delete(clone);
        if (round % 2 === 1) {
          // Copy-ups of w over the snapshot just taken, then the snapshot goes.
          await write('w', 3 * BS, fill(BS, 99 - round));
        }
        if (round >= 2) {
          await s.mapper.remove(`w-s${round - 2}`);
          model.delete(`w-s${round - 2}`);
        }
      }
      // An import as transfer.ts makes one: its hold, the data, the map, complete.
      const hold = await takeGcHold(s.maps, { what: 'import imp' });
      await s.mapper.create('imp', { size: 4 * BS, blocksize: BS, incomplete: true });
      model.set('imp', Buffer.alloc(4 * BS));
      for (let i = 0; i < 4; i++) await write('imp', i * BS, fill(BS, 40 + i));
      await s.mapper.complete('imp');
      await s.mapper.closeVolume('imp');
      await hold.release();
      // vlmc hash (a dedup hold inside), and a clone of the hashed map.
      const h = await s.mapper.hash('w-s5');
      await s.mapper.clone(h.name, 'from-hash');
      model.set('from-hash', Buffer.from(model.get('w-s5')!));
      await write('from-hash', 0, fill(5, 1));
    } finally {
      stop = true;
      await loop;
    }
    expect(runs).toBeGreaterThan(1);
    expect(freedDuring).toBeGreaterThan(0); // the removed snapshots' objects went meanwhile
    // Whatever the runs under way had to leave (young), a later one frees.
    await gc({ graceMs: 0, now: () => Date.now() + HOUR });
    for (const [vol, want] of model) {
      const got = await get(s.mapper, s.blocks, vol, 0, want.length);
      expect(got.equals(want), vol).toBe(true);
    }
    expect((await usage()).unreferencedObjects).toBe(0);
  }, 60_000);
});
