import type { FileBlocker } from '@archipelago/blocker-file';
import { type MapEntry, ObjFlag, ZERO_BLOCK } from '@archipelago/mapfile';
import { describe, expect, it } from 'vitest';
import { put, useTempStack } from './__fixtures__/stack.js';
import { changedRuns, diffBytes, diffEntries } from './diff.js';
import type { Mapper } from './mapper.js';

const BS = 4096;
const Z: MapEntry = { name: ZERO_BLOCK, flags: ObjFlag.ZERO };
const obj = (name: string): MapEntry => ({ name, flags: 0 });
const side = (size: number, entries: MapEntry[]) => ({ size, blocksize: BS, entries });

describe('diffEntries (pure)', () => {
  it('against nothing: every allocated extent, adjacent blocks merged, the last one cut at the size', () => {
    const to = side(5 * BS - 100, [obj('a'), obj('b'), Z, obj('c'), obj('d')]);
    expect(diffEntries(null, to)).toEqual([
      { offset: 0, length: 2 * BS, zero: false },
      { offset: 3 * BS, length: 2 * BS - 100, zero: false },
    ]);
  });

  it('same object name = unchanged; a new name = data; an entry that became the zero block = zero', () => {
    const from = side(4 * BS, [obj('a'), obj('b'), obj('c'), Z]);
    const to = side(4 * BS, [obj('a'), obj('b2'), Z, obj('d')]);
    const d = diffEntries(from, to);
    expect(d).toEqual([
      { offset: BS, length: BS, zero: false },
      { offset: 2 * BS, length: BS, zero: true },
      { offset: 3 * BS, length: BS, zero: false },
    ]);
    expect(diffBytes(d)).toEqual({ data: 2 * BS, zero: BS });
    expect(diffEntries(from, from)).toEqual([]);
  });

  it('growth: blocks past the old end count as zeros there; a shared block the old end cuts is data past it', () => {
    const from = side(BS + 10, [obj('a'), obj('b')]);
    const to = side(4 * BS, [obj('a'), obj('b'), Z, obj('c')]);
    expect(diffEntries(from, to)).toEqual([
      { offset: BS + 10, length: BS - 10, zero: false },
      { offset: 3 * BS, length: BS, zero: false },
    ]);
  });

  it('shrink: nothing past the new end', () => {
    const from = side(4 * BS, [obj('a'), obj('b'), obj('c'), obj('d')]);
    expect(diffEntries(from, side(2 * BS, [obj('a'), obj('x')]))).toEqual([
      { offset: BS, length: BS, zero: false },
    ]);
  });

  it('refuses maps of different block sizes', () => {
    expect(() => diffEntries({ size: 8192, blocksize: 8192, entries: [Z] }, side(BS, [Z]))).toThrow(
      /different block sizes/,
    );
  });
});

let blocks: FileBlocker;
let mapper: Mapper;
useTempStack('archip-mapper-diff-', 'd_1', (s) => {
  ({ blocks, mapper } = s);
});

describe('diffEntries on real maps', () => {
  it('snapshot, write, discard, snapshot: the diff names exactly the written and discarded blocks', async () => {
    await mapper.create('vol', { size: 6 * BS, blocksize: BS });
    await put(mapper, blocks, 'vol', 0, Buffer.alloc(3 * BS, 1));
    await mapper.snapshot('vol', 's1');
    await put(mapper, blocks, 'vol', BS + 7, Buffer.alloc(5, 2)); // block 1 copied up
    await put(mapper, blocks, 'vol', 4 * BS, Buffer.alloc(BS, 3)); // block 4 allocated
    await mapper.discard('vol', 2); // block 2 back to the zero block
    await mapper.snapshot('vol', 's2');
    const read = async (n: string) => ({ ...(await mapper.info(n)), entries: await mapper.entries(n) });
    expect(diffEntries(await read('s1'), await read('s2'))).toEqual([
      { offset: BS, length: BS, zero: false },
      { offset: 2 * BS, length: BS, zero: true },
      { offset: 4 * BS, length: BS, zero: false },
    ]);
    // The volume right after s2 names the same objects: no change.
    expect(diffEntries(await read('s2'), await read('vol'))).toEqual([]);
    expect(diffEntries(null, await read('s2'))).toEqual([
      { offset: 0, length: 2 * BS, zero: false },
      { offset: 4 * BS, length: BS, zero: false },
    ]);
  });
});

describe('changedRuns (pure)', () => {
  const G = 4096;
  const block = (n: number, fillWith = 0) => Buffer.alloc(n * G, fillWith);

  it('from zeros: only the written granules, zero granules left out', () => {
    const to = block(16);
    to.fill(7, 3 * G, 5 * G); // two granules
    to[9 * G + 100] = 1; // one byte in a granule
    expect(changedRuns(null, to)).toEqual([
      { offset: 3 * G, length: 2 * G, zero: false },
      { offset: 9 * G, length: G, zero: false },
    ]);
    expect(changedRuns(null, block(4))).toEqual([]);
  });

  it('from data: the granules that differ; a granule that became zeros is a zero run', () => {
    const from = block(8, 5);
    const to = Buffer.from(from);
    to.fill(9, 2 * G, 3 * G);
    to.fill(0, 3 * G, 5 * G);
    to[7 * G] = 6;
    expect(changedRuns(from, to)).toEqual([
      { offset: 2 * G, length: G, zero: false },
      { offset: 3 * G, length: 2 * G, zero: true },
      { offset: 7 * G, length: G, zero: false },
    ]);
    expect(changedRuns(from, Buffer.from(from))).toEqual([]);
  });

  it('a last granule shorter than the granule, a custom granule, and bad input', () => {
    const to = Buffer.alloc(G + 10);
    to[G + 3] = 1;
    expect(changedRuns(null, to)).toEqual([{ offset: G, length: 10, zero: false }]);
    expect(changedRuns(null, to, 512)).toEqual([{ offset: G, length: 10, zero: false }]);
    expect(changedRuns(Buffer.alloc(G + 10, 1), to, 512)).toEqual([
      { offset: 0, length: G, zero: true },
      { offset: G, length: 10, zero: false },
    ]);
    expect(() => changedRuns(Buffer.alloc(3), Buffer.alloc(4))).toThrow(/3 bytes before, 4 after/);
    expect(() => changedRuns(null, to, 0)).toThrow(/granule 0/);
  });
});
