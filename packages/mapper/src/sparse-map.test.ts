/**
 * SPARSE maps (map-store.ts; mapfile FORMAT.md, "Sparse map blocks"): new maps store no map block
 * of nothing but zero entries; create, snapshot and clone of a thin volume write headers only;
 * the first write into an absent block stores the block whole; maps written the old way (every
 * block present, no flag) are read, snapshotted and cloned as before; gc keeps every live object;
 * a map removed under a reader is not read as zeros.
 */
import { spawnSync } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Blocker } from '@archipelago/blocker';
import { FileBlocker } from '@archipelago/blocker-file';
import {
  decodeEntriesV2,
  decodeHeaderV2,
  ENTRY_V2_SIZE,
  encodeEntriesV2,
  encodeHeaderV2,
  MapFlag,
  mapBlockName,
  ObjFlag,
  rollbackMapName,
  ZERO_ENTRY,
} from '@archipelago/mapfile';
import { describe, expect, it } from 'vitest';
import { codeOf, get, put, stack, type TempStack, useTempStack } from './__fixtures__/stack.js';
import { collectGarbage } from './gc.js';
import { checkMapSpace, mapStorageBytes } from './index.js';
import { MapStore } from './map-store.js';
import { Mapper } from './mapper.js';
import { silentLogger } from './types.js';

const BS = 4096;
/** Entries per map block at BS: 32. */
const PER = BS / ENTRY_V2_SIZE;
/** 100 blocks: map blocks 0..3 (the last holds 4 entries). */
const N = 100;
const SIZE = N * BS;
const fill = (n: number, v: number) => Buffer.alloc(n, v);

let s: TempStack;
useTempStack('archip-mapper-sparse-', 's_1', (t) => {
  s = t;
});

/** Which of map blocks 0..count-1 of `name` are stored. */
async function storedBlocks(b: Blocker, name: string, count = Math.ceil(N / PER)): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < count; i++) if (await b.exists(mapBlockName(name, i))) out.push(i);
  return out;
}

async function headerFlags(b: Blocker, name: string): Promise<number> {
  return decodeHeaderV2(await b.read(name, 0, 32), name).flags;
}

/** The entries stored in map block `i` of `name` (count records), decoded as any reader does. */
async function blockEntries(b: Blocker, name: string, i: number, count = PER) {
  return decodeEntriesV2(await b.read(mapBlockName(name, i), 0, count * ENTRY_V2_SIZE), count, name, i * PER);
}

/** Writes map `name` the way maps were written before SPARSE: every block, then a plain header. */
async function writePlainMap(
  b: Blocker,
  name: string,
  entries: { name: string; flags: number }[],
  epoch = 1n,
) {
  for (let i = 0; i * PER < entries.length; i++) {
    await b.writeFull(mapBlockName(name, i), encodeEntriesV2(entries.slice(i * PER, (i + 1) * PER)));
  }
  await b.writeFull(name, encodeHeaderV2({ size: entries.length * BS, blocksize: BS, flags: 0, epoch }));
}

/** Runs `use` with a fresh mapper over the same store (another process, as a next command is). */
async function nextProcess(use: (other: ReturnType<typeof stack>) => Promise<void>): Promise<void> {
  const other = stack(s.dir, 's_2');
  try {
    await use(other);
  } finally {
    await other.mapper.close();
    await other.m.close();
    await other.b.close();
  }
}

describe('sparse maps', () => {
  it('create, snapshot and clone of a thin volume store headers only, and read back as zeros', async () => {
    const m = s.mapper;
    await m.create('v', { size: SIZE, blocksize: BS });
    await m.snapshot('v', 'snap');
    await m.clone('snap', 'c');
    await m.close();
    for (const name of ['v', 'snap', 'c']) {
      expect(await storedBlocks(s.maps, name)).toEqual([]);
      expect((await headerFlags(s.maps, name)) & MapFlag.SPARSE).toBe(MapFlag.SPARSE);
    }
    expect((await headerFlags(s.maps, 'snap')) & MapFlag.READONLY).toBe(MapFlag.READONLY);
    // A fresh process reads them: every block zero.
    await nextProcess(async (other) => {
      for (const name of ['v', 'snap', 'c']) {
        expect((await get(other.mapper, other.b, name, 0, SIZE)).equals(Buffer.alloc(SIZE))).toBe(true);
        const info = await other.mapper.info(name);
        expect(info.size).toBe(SIZE);
        expect(info.epoch).toBe(name === 'v' ? 2n : name === 'snap' ? 0n : 1n);
      }
    });
  });

  it('the first write into an absent map block stores that block whole; others stay absent', async () => {
    const m = s.mapper;
    await m.create('v', { size: SIZE, blocksize: BS });
    // Two writes into map block 2 at once (entries 70 and 71), one into block 0.
    await Promise.all([
      put(m, s.blocks, 'v', 70 * BS, fill(BS, 7)),
      put(m, s.blocks, 'v', 71 * BS, fill(BS, 8)),
      put(m, s.blocks, 'v', 3 * BS, fill(BS, 3)),
    ]);
    expect(await storedBlocks(s.maps, 'v')).toEqual([0, 2]);
    const block2 = await blockEntries(s.maps, 'v', 2);
    expect(block2.filter((e) => e !== ZERO_ENTRY).map((e) => e.flags)).toEqual([
      ObjFlag.WRITABLE | ObjFlag.ARCHIP,
      ObjFlag.WRITABLE | ObjFlag.ARCHIP,
    ]);
    expect(block2.findIndex((e) => e !== ZERO_ENTRY)).toBe(70 - 2 * PER);
    await m.close();
    await nextProcess(async (other) => {
      const all = await get(other.mapper, other.b, 'v', 0, SIZE);
      const want = Buffer.alloc(SIZE);
      want.fill(7, 70 * BS, 71 * BS);
      want.fill(8, 71 * BS, 72 * BS);
      want.fill(3, 3 * BS, 4 * BS);
      expect(all.equals(want)).toBe(true);
    });
  });

  it('a snapshot rewrites only the origin blocks with writable entries; the snapshot holds the same', async () => {
    const m = s.mapper;
    await m.create('v', { size: SIZE, blocksize: BS });
    await put(m, s.blocks, 'v', 40 * BS, fill(BS, 4));
    await m.snapshot('v', 's0'); // block 1 rewritten (entry 40 no longer WRITABLE)
    const before = (await s.maps.info(mapBlockName('v', 1)))!.mtime;
    await new Promise((r) => setTimeout(r, 20));
    await m.snapshot('v', 's1'); // nothing WRITABLE now: the origin's header only
    expect((await s.maps.info(mapBlockName('v', 1)))!.mtime).toBe(before);
    expect(await storedBlocks(s.maps, 'v')).toEqual([1]);
    expect(await storedBlocks(s.maps, 's1')).toEqual([1]);
    expect(await blockEntries(s.maps, 's1', 1)).toEqual(await blockEntries(s.maps, 'v', 1));
    // The volume copies up on its next write; both snapshots keep the old bytes.
    await put(m, s.blocks, 'v', 40 * BS, fill(BS, 5));
    await put(m, s.blocks, 'v', 99 * BS, fill(BS, 9)); // the last, short map block
    expect(await get(m, s.blocks, 's0', 40 * BS, BS)).toEqual(fill(BS, 4));
    expect(await get(m, s.blocks, 's1', 40 * BS, BS)).toEqual(fill(BS, 4));
    await m.clone('s1', 'c');
    expect(await storedBlocks(s.maps, 'c')).toEqual([1]);
    expect(await get(m, s.blocks, 'c', 40 * BS, BS)).toEqual(fill(BS, 4));
    await put(m, s.blocks, 'c', 0, fill(BS, 1));
    await m.close();
    await nextProcess(async (other) => {
      expect(await get(other.mapper, other.b, 'v', 40 * BS, BS)).toEqual(fill(BS, 5));
      expect(await get(other.mapper, other.b, 'v', 99 * BS, BS)).toEqual(fill(BS, 9));
      expect(await get(other.mapper, other.b, 'c', 0, 2 * BS)).toEqual(
        Buffer.alloc(2 * BS, 0).fill(1, 0, BS),
      );
      const s0 = await get(other.mapper, other.b, 's0', 0, SIZE);
      expect(s0.equals(Buffer.alloc(SIZE).fill(4, 40 * BS, 41 * BS))).toBe(true);
    });
  });

  it('a map written the old way is read, written, snapshotted and cloned; its own format stays', async () => {
    const entries = Array.from({ length: N }, () => ZERO_ENTRY);
    await writePlainMap(s.maps, 'old', entries);
    const m = s.mapper;
    expect((await get(m, s.blocks, 'old', 0, SIZE)).equals(Buffer.alloc(SIZE))).toBe(true);
    await put(m, s.blocks, 'old', 10 * BS, fill(BS, 1));
    await m.snapshot('old', 'olds');
    expect((await headerFlags(s.maps, 'old')) & MapFlag.SPARSE).toBe(0);
    expect(await storedBlocks(s.maps, 'old')).toEqual([0, 1, 2, 3]);
    expect(await storedBlocks(s.maps, 'olds')).toEqual([0]);
    await m.clone('olds', 'oldc');
    await put(m, s.blocks, 'old', 10 * BS, fill(BS, 2));
    expect(await get(m, s.blocks, 'olds', 10 * BS, BS)).toEqual(fill(BS, 1));
    expect(await get(m, s.blocks, 'oldc', 10 * BS, BS)).toEqual(fill(BS, 1));
    expect(await get(m, s.blocks, 'old', 10 * BS, BS)).toEqual(fill(BS, 2));
    // Without the flag, a missing block is still a corruption.
    await m.close();
    await s.maps.delete(mapBlockName('old', 2));
    await nextProcess(async (other) => {
      expect(await codeOf(other.mapper.info('old'))).toBe('ECORRUPT_MAP');
    });
  });

  it('with sparseMaps: false, new maps are plain v2 maps (every block stored, no flag)', async () => {
    const mapper = new Mapper({ blockerm: s.maps, blockerb: s.blocks, sparseMaps: false });
    try {
      await mapper.create('p', { size: SIZE, blocksize: BS });
      await mapper.snapshot('p', 'ps');
      for (const name of ['p', 'ps']) {
        expect(await storedBlocks(s.maps, name)).toEqual([0, 1, 2, 3]);
        expect((await headerFlags(s.maps, name)) & MapFlag.SPARSE).toBe(0);
      }
      // A grow writes every new block; a rollback stages a plain map and rewrites every block.
      await mapper.resize('p', 2 * SIZE);
      expect(await storedBlocks(s.maps, 'p', 7)).toEqual([0, 1, 2, 3, 4, 5, 6]);
      const c = counting(s.maps);
      const m2 = new Mapper({ blockerm: c.blocker, blockerb: s.blocks, sparseMaps: false });
      try {
        await m2.rollback('p', 'ps');
      } finally {
        await m2.close();
      }
      const staged = rollbackMapName('p');
      expect(mapBlocksWritten(c.written, [staged], 4)).toEqual(
        [0, 1, 2, 3].map((i) => mapBlockName(staged, i)),
      );
      expect(await storedBlocks(s.maps, 'p', 7)).toEqual([0, 1, 2, 3]);
      expect((await headerFlags(s.maps, 'p')) & MapFlag.SPARSE).toBe(0);
    } finally {
      await mapper.close();
    }
  });

  it('gc on sparse maps keeps every live object', async () => {
    const m = s.mapper;
    await m.create('v', { size: SIZE, blocksize: BS });
    for (const i of [0, 40, 99]) await put(m, s.blocks, 'v', i * BS, fill(BS, i + 1));
    await m.snapshot('v', 's0');
    await m.clone('s0', 'c');
    await put(m, s.blocks, 'c', 70 * BS, fill(BS, 70));
    await put(m, s.blocks, 'v', 0, fill(BS, 100));
    await m.create('gone', { size: SIZE, blocksize: BS });
    await put(m, s.blocks, 'gone', 50 * BS, fill(BS, 50));
    await m.remove('gone');
    const r = await collectGarbage({
      blockerm: s.maps,
      blockerb: s.blocks,
      prepare: () => s.mapper.purgeExpiredTrash(Date.now(), 0),
      graceMs: 0,
    });
    // v's three first objects (shared with s0), v's copy-up of block 0, c's block 70.
    expect(r).toMatchObject({ blockerObjects: 5, referencedObjects: 5, freedObjects: 0 });
    await m.close();
    await nextProcess(async (other) => {
      const at = (vol: string, i: number) => get(other.mapper, other.b, vol, i * BS, BS);
      expect(await at('v', 0)).toEqual(fill(BS, 100));
      expect(await at('v', 40)).toEqual(fill(BS, 41));
      expect(await at('v', 99)).toEqual(fill(BS, 100));
      expect(await at('s0', 0)).toEqual(fill(BS, 1));
      expect(await at('c', 70)).toEqual(fill(BS, 70));
      expect(await at('c', 40)).toEqual(fill(BS, 41));
      expect(await other.b.exists('gone_0000000000000001_0000000000000032')).toBe(false);
    });
  });

  it('a sparse map removed while it is read is not read as zeros', async () => {
    const m = s.mapper;
    await m.create('v', { size: SIZE, blocksize: BS });
    await put(m, s.blocks, 'v', 40 * BS, fill(BS, 4));
    await m.close();
    // A reader whose blockerm sees the map removed (header first, then its blocks) right after
    // it read the header: block 1 is then absent, and the header changed.
    const maps = new FileBlocker({ dir: join(s.dir, 'maps'), identity: 'r_1' });
    let removed = false;
    const racing = new Proxy(maps, {
      get(target, prop, recv) {
        if (prop === 'info') {
          return async (name: string) => {
            if (!removed && name === mapBlockName('v', 0)) {
              removed = true;
              const h = decodeHeaderV2(await target.read('v', 0, 32), 'v');
              await target.writeFull('v', encodeHeaderV2({ ...h, flags: h.flags | MapFlag.DELETED }));
              await target.delete(mapBlockName('v', 1));
            }
            return target.info(name);
          };
        }
        const v = Reflect.get(target, prop, recv);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    try {
      const store = new MapStore(racing, { parallelism: 4, log: silentLogger });
      expect(await codeOf(store.load('v', {}))).toBe('ENOENT_VOLUME');
      expect(removed).toBe(true);
    } finally {
      await maps.close();
    }
  });
});

/** A thin 1 TiB volume in the default 4 MiB blocks: 262 144 entries, 8 map blocks of 4 MiB. */
const TIB = 2 ** 40;
const MIB4 = 4 * 2 ** 20;

/**
 * `b` with its whole-object and in-place writes counted, by object name (bytes), as a store
 * would see them.
 */
function counting(b: Blocker): { blocker: Blocker; written: Map<string, number>; reset(): void } {
  const written = new Map<string, number>();
  const add = (name: string, n: number) => written.set(name, (written.get(name) ?? 0) + n);
  const blocker = new Proxy(b, {
    get(target, prop, recv) {
      if (prop === 'writeFull')
        return (name: string, data: Buffer, ...rest: unknown[]) => {
          add(name, data.length);
          return (target.writeFull as (...a: unknown[]) => Promise<void>)(name, data, ...rest);
        };
      if (prop === 'write')
        return (name: string, offset: number, data: Buffer, ...rest: unknown[]) => {
          add(name, data.length);
          return (target.write as (...a: unknown[]) => Promise<void>)(name, offset, data, ...rest);
        };
      const v = Reflect.get(target, prop, recv);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  return { blocker, written, reset: () => written.clear() };
}

/** Map-block objects (`<vol>_<epoch>_<index>`-less: `mapBlockName`) written, sorted, from `written`. */
function mapBlocksWritten(written: Map<string, number>, names: string[], blocks = 16): string[] {
  const all = new Set(names.flatMap((n) => Array.from({ length: blocks }, (_, i) => mapBlockName(n, i))));
  return [...written.keys()].filter((k) => all.has(k)).sort();
}

describe('sparse maps: resize, rollback and the space check (issue 18 follow-ups)', () => {
  it('growing a thin sparse 1 TiB volume writes no map block; shrinking deletes the blocks past the end', async () => {
    const c = counting(s.maps);
    const m = new Mapper({ blockerm: c.blocker, blockerb: s.blocks });
    try {
      await m.create('v', { size: TIB });
      await put(m, s.blocks, 'v', 5 * MIB4, fill(BS, 5)); // map block 0
      c.reset();
      const t0 = performance.now();
      await m.resize('v', 2 * TIB);
      const grow = performance.now() - t0;
      // Only the header: no map block of the zero range (was 9 blocks, 36 MiB).
      expect(mapBlocksWritten(c.written, ['v'])).toEqual([]);
      expect([...c.written.values()].reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(512);
      expect(await storedBlocks(s.maps, 'v', 16)).toEqual([0]);
      // A write past the old end stores its block (15) whole; the rest reads as zeros.
      await put(m, s.blocks, 'v', 2 * TIB - BS, fill(BS, 9));
      expect(await storedBlocks(s.maps, 'v', 16)).toEqual([0, 15]);
      expect(await get(m, s.blocks, 'v', TIB, BS)).toEqual(Buffer.alloc(BS));
      // Shrink: the header first, then every block past the end goes, present or not.
      await m.resize('v', TIB / 2);
      expect(await storedBlocks(s.maps, 'v', 16)).toEqual([0]);
      c.reset();
      await m.resize('v', TIB);
      expect(mapBlocksWritten(c.written, ['v'])).toEqual([]);
      console.log(`grow of a thin 1 TiB sparse volume to 2 TiB: ${grow.toFixed(1)} ms in process`);
    } finally {
      await m.close();
    }
    await nextProcess(async (other) => {
      expect(await get(other.mapper, other.b, 'v', 5 * MIB4, BS)).toEqual(fill(BS, 5));
      expect(await get(other.mapper, other.b, 'v', TIB - BS, BS)).toEqual(Buffer.alloc(BS)); // was 9: shrunk away
      expect((await other.mapper.info('v')).size).toBe(TIB);
    });
  });

  it('a grow over map blocks a killed shrink left behind rewrites them (they never read back)', async () => {
    const m = s.mapper;
    await m.create('v', { size: SIZE, blocksize: BS });
    await put(m, s.blocks, 'v', 70 * BS, fill(BS, 7)); // map block 2
    const block2 = await s.maps.read(mapBlockName('v', 2), 0, PER * ENTRY_V2_SIZE);
    await m.resize('v', 10 * BS); // blocks 1.. go
    await m.close();
    // A shrink killed after its header, before deleting: block 2 is back, holding entry 70.
    await s.maps.writeFull(mapBlockName('v', 2), block2);
    await nextProcess(async (other) => {
      await other.mapper.resize('v', SIZE);
      expect((await get(other.mapper, other.b, 'v', 0, SIZE)).equals(Buffer.alloc(SIZE))).toBe(true);
    });
    await nextProcess(async (other) => {
      expect((await get(other.mapper, other.b, 'v', 0, SIZE)).equals(Buffer.alloc(SIZE))).toBe(true);
    });
  });

  it('a rollback of a thin sparse 1 TiB volume stages and writes only its non-zero map blocks', async () => {
    const c = counting(s.maps);
    const m = new Mapper({ blockerm: c.blocker, blockerb: s.blocks });
    try {
      await m.create('v', { size: TIB });
      await put(m, s.blocks, 'v', 0, fill(BS, 1)); // map block 0
      await m.snapshot('v', 'snap');
      await put(m, s.blocks, 'v', 0, fill(BS, 2));
      await put(m, s.blocks, 'v', 5 * 32768 * MIB4, fill(BS, 3)); // map block 5
      c.reset();
      const t0 = performance.now();
      await m.rollback('v', 'snap');
      const took = performance.now() - t0;
      const staged = rollbackMapName('v'); // v_fffffffffffffffe
      // Staged: block 0 only (was all 8: 32 MiB); the volume: block 0, and block 5 rewritten as zeros.
      expect(mapBlocksWritten(c.written, ['v', staged])).toEqual(
        [mapBlockName(staged, 0), mapBlockName('v', 0), mapBlockName('v', 5)].sort(),
      );
      expect(await s.maps.exists(staged)).toBe(false);
      expect(await storedBlocks(s.maps, staged, 8)).toEqual([]);
      expect(await get(m, s.blocks, 'v', 0, BS)).toEqual(fill(BS, 1));
      expect(await get(m, s.blocks, 'v', 5 * 32768 * MIB4, BS)).toEqual(Buffer.alloc(BS));
      console.log(`rollback of a thin 1 TiB sparse volume: ${took.toFixed(1)} ms in process`);
    } finally {
      await m.close();
    }
    await nextProcess(async (other) => {
      expect(await get(other.mapper, other.b, 'v', 0, BS)).toEqual(fill(BS, 1));
      expect(await get(other.mapper, other.b, 'v', 5 * 32768 * MIB4, BS)).toEqual(Buffer.alloc(BS));
    });
  });

  it('mapStorageBytes: a plain map is all of it; a sparse one its header and non-zero blocks', () => {
    const entries = Array.from({ length: N }, () => ZERO_ENTRY);
    expect(mapStorageBytes(SIZE, BS)).toBe(N * ENTRY_V2_SIZE + 512);
    expect(mapStorageBytes(SIZE, BS, { sparse: true })).toBe(512);
    expect(mapStorageBytes(SIZE, BS, { sparse: true, entries })).toBe(512);
    entries[40] = { name: 'v_0000000000000001_0000000000000028', flags: ObjFlag.ARCHIP };
    entries[99] = { name: 'v_0000000000000001_0000000000000063', flags: ObjFlag.ARCHIP };
    // Blocks 1 (32 entries) and 3 (the last: 4 entries); entries past the source's end are zero.
    expect(mapStorageBytes(SIZE, BS, { sparse: true, entries })).toBe(512 + 36 * ENTRY_V2_SIZE);
    expect(mapStorageBytes(2 * SIZE, BS, { sparse: true, entries })).toBe(512 + 64 * ENTRY_V2_SIZE);
    // A grow from block 3 on: no header; plain: every entry from block 3's first.
    expect(mapStorageBytes(2 * SIZE, BS, { sparse: true, entries, firstBlock: 3 })).toBe(32 * ENTRY_V2_SIZE);
    expect(mapStorageBytes(2 * SIZE, BS, { firstBlock: 3 })).toBe((2 * N - 96) * ENTRY_V2_SIZE);
    // The check: a thin sparse 1 TiB map fits 4 KiB; its plain form does not.
    const space = { available: 4096, total: 4096, where: '/small' };
    expect(() => checkMapSpace(space, 'v', TIB, MIB4, { sparse: true })).not.toThrow();
    expect(() => checkMapSpace(space, 'v', TIB, MIB4)).toThrow(/need 33554944 bytes \(32 MiB\) of map/);
  });

  it('the space check asks only for what a sparse map stores (maps on a 4 MiB tmpfs)', async (t) => {
    const small = join(s.dir, 'small');
    await mkdir(small);
    if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', small]).status !== 0) {
      t.skip(); // needs root
      return;
    }
    const maps = new FileBlocker({ dir: join(small, 'maps'), identity: 's_1', reserveBytes: 0 });
    const m = new Mapper({ blockerm: maps, blockerb: s.blocks });
    const plain = new Mapper({ blockerm: maps, blockerb: s.blocks, sparseMaps: false });
    try {
      // A thin 1 TiB volume: headers only (was ENOSPC: "need 32 MiB of map").
      await m.create('big', { size: TIB });
      await m.snapshot('big', 'bigsnap');
      await m.clone('bigsnap', 'bigclone', { size: 2 * TIB });
      await m.resize('big', 2 * TIB);
      await m.rollback('big', 'bigsnap');
      expect((await m.info('big')).size).toBe(TIB);
      // Non-sparse maps ask for all of it, as before, and growing one is checked too.
      const e = await plain.create('plainbig', { size: TIB }).catch((x: unknown) => x);
      expect(e).toMatchObject({ code: 'ENOSPC', details: { needed: 262144 * 128 + 512 } });
      await plain.create('plainsmall', { size: 1024 * MIB4 }); // 1024 entries: 128 KiB of map
      const g = await plain.resize('plainsmall', TIB).catch((x: unknown) => x);
      expect(g).toMatchObject({ code: 'ENOSPC' });
      expect((await plain.info('plainsmall')).size).toBe(1024 * MIB4);
      expect(await maps.exists(mapBlockName('plainbig', 0))).toBe(false);
    } finally {
      await plain.close();
      await m.close();
      await maps.close();
      spawnSync('umount', [small]);
    }
  });
});
