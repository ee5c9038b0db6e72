import { createHash } from 'node:crypto';
import { MemoryBlocker } from '@archipelago/blocker/test';
import type { FileBlocker } from '@archipelago/blocker-file';
import { merkleRoot, pithosBlockHash, ZERO_BLOCK } from '@archipelago/mapfile';
import { describe, expect, it } from 'vitest';
import { codeOf, get, put, useTempStack } from './__fixtures__/stack.js';
import { Mapper } from './mapper.js';

const BS = 4096;
let maps: FileBlocker;
let blocks: FileBlocker;
let mapper: Mapper;

const fill = (n: number, v: number) => Buffer.alloc(n, v);

async function contentObjects(): Promise<string[]> {
  const out: string[] = [];
  for await (const n of blocks.list()) if (/^[0-9a-f]{64}$/.test(n)) out.push(n);
  return out.sort();
}

useTempStack('archip-mapper-hash-', 'h_1', (s) => {
  ({ maps, blocks, mapper } = s);
});

describe('createFromEntries (X_CREATE)', () => {
  it('builds a read-only map from content names; zero hashes become zero entries', async () => {
    const a = fill(BS, 1);
    const ha = pithosBlockHash(a);
    await blocks.writeFull(ha, a);
    const info = await mapper.createFromEntries('file1', {
      size: 2 * BS + 10,
      blocksize: BS,
      entries: [{ name: ha, readonly: true }, { name: ZERO_BLOCK }, { name: ha, readonly: true }],
      readonly: true,
    });
    expect(info).toMatchObject({ size: 2 * BS + 10, readonly: true, objects: 3, allocated: 2, writable: 0 });
    const entries = await mapper.entries('file1');
    expect(entries.map((e) => e.name)).toEqual([ha, ZERO_BLOCK, ha]);
    expect((await get(mapper, blocks, 'file1', 0, BS)).equals(a)).toBe(true);
    expect((await get(mapper, blocks, 'file1', BS, BS)).equals(Buffer.alloc(BS))).toBe(true);
    // A clone reads the same and copies up on write, leaving the content object alone.
    await mapper.clone('file1', 'vol1');
    await put(mapper, blocks, 'vol1', 0, fill(100, 9));
    expect((await blocks.read(ha, 0, BS)).equals(a)).toBe(true);
    expect(
      (await get(mapper, blocks, 'vol1', 0, 101)).equals(Buffer.concat([fill(100, 9), fill(1, 1)])),
    ).toBe(true);
  });

  it('checks the entry count, names and size, and refuses an existing name', async () => {
    const e = (n: number) => Array.from({ length: n }, () => ({ name: ZERO_BLOCK }));
    expect(await codeOf(mapper.createFromEntries('f', { size: BS + 1, blocksize: BS, entries: e(1) }))).toBe(
      'EINVAL',
    );
    expect(
      await codeOf(mapper.createFromEntries('f', { size: BS, blocksize: BS, entries: [{ name: '../x' }] })),
    ).toBe('EINVAL_NAME');
    expect(await codeOf(mapper.createFromEntries('f', { size: -1, blocksize: BS, entries: [] }))).toBe(
      'EINVAL_SIZE',
    );
    await mapper.createFromEntries('f', { size: 0, blocksize: BS, entries: [], readonly: true });
    expect((await mapper.info('f')).size).toBe(0);
    expect(await codeOf(mapper.createFromEntries('f', { size: 0, blocksize: BS, entries: [] }))).toBe(
      'EEXIST_VOLUME',
    );
    expect(await maps.lockOwner('f')).toBeNull();
  });
});

describe('hash (map level)', () => {
  it('hashes a snapshot into a read-only content map named by the Merkle root', async () => {
    await mapper.create('v1', { size: 3 * BS + 100, blocksize: BS });
    const b0 = fill(BS, 5);
    const tail = Buffer.concat([fill(50, 6), Buffer.alloc(50)]);
    await put(mapper, blocks, 'v1', 0, b0);
    await put(mapper, blocks, 'v1', 3 * BS, tail);
    await mapper.snapshot('v1', 's1');
    expect(await codeOf(mapper.hash('v1'))).toBe('ENOTSNAPSHOT');
    const progress: number[] = [];
    const r = await mapper.hash('s1', { onProgress: (_d, _n, bytes) => progress.push(bytes) });
    const h0 = createHash('sha256').update(b0).digest('hex');
    const h3 = createHash('sha256').update(fill(50, 6)).digest('hex');
    expect(r.hashes).toEqual([h0, ZERO_BLOCK, ZERO_BLOCK, h3]);
    expect(r.root).toBe(merkleRoot(r.hashes));
    expect(r.name).toBe(r.root);
    expect(r.existed).toBe(false);
    expect(progress.at(-1)).toBe(3 * BS + 100);
    const info = await mapper.info(r.name);
    expect(info).toMatchObject({ readonly: true, size: 3 * BS + 100, allocated: 2, writable: 0 });
    expect(await contentObjects()).toEqual([h0, h3].sort());
    // Hashing again finds the same map.
    const again = await mapper.hash('s1');
    expect(again).toMatchObject({ name: r.name, existed: true });
    // The hashed map clones like a snapshot and reads the same bytes.
    await mapper.clone(r.name, 'c1');
    expect(
      (await get(mapper, blocks, 'c1', 0, 3 * BS + 100)).equals(
        await get(mapper, blocks, 's1', 0, 3 * BS + 100),
      ),
    ).toBe(true);
  });

  it('stores each distinct block once across volumes with shared content', async () => {
    for (const [v, order] of [
      ['va', [1, 2, 3, 1]],
      ['vb', [3, 1, 4, 4]],
    ] as const) {
      await mapper.create(v, { size: 4 * BS, blocksize: BS });
      for (let i = 0; i < order.length; i++) await put(mapper, blocks, v, i * BS, fill(BS, order[i]!));
      await mapper.snapshot(v, `${v}-s`);
    }
    const ra = await mapper.hash('va-s');
    const rb = await mapper.hash('vb-s');
    expect(ra.name).not.toBe(rb.name);
    const want = [1, 2, 3, 4].map((v) => pithosBlockHash(fill(BS, v))).sort();
    expect(await contentObjects()).toEqual(want);
  });

  it('names a same-root map of another size <root>.<size>', async () => {
    await mapper.create('x1', { size: BS, blocksize: BS });
    await put(mapper, blocks, 'x1', 0, fill(10, 1));
    await mapper.snapshot('x1', 'x1s');
    await mapper.create('x2', { size: BS - 1000, blocksize: BS });
    await put(mapper, blocks, 'x2', 0, fill(10, 1));
    await mapper.snapshot('x2', 'x2s');
    const a = await mapper.hash('x1s');
    const b = await mapper.hash('x2s');
    expect(a.root).toBe(b.root);
    expect(a.name).toBe(a.root);
    expect(b.name).toBe(`${b.root}.${BS - 1000}`);
    expect((await mapper.info(b.name)).size).toBe(BS - 1000);
  });

  it('fails with ENOTSUP when blockerb cannot hash', async () => {
    const mb = new MemoryBlocker();
    Object.defineProperty(mb, 'hash', { value: undefined });
    const m = new Mapper({ blockerm: new MemoryBlocker({ store: mb.store }), blockerb: mb });
    await m.create('v', { size: BS, blocksize: BS });
    await m.snapshot('v', 's');
    expect(await codeOf(m.hash('s'))).toBe('ENOTSUP');
    await m.close();
  });
});
