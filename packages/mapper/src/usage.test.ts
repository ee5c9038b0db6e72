import type { FileBlocker } from '@archipelago/blocker-file';
import { pithosBlockHash } from '@archipelago/mapfile';
import { describe, expect, it } from 'vitest';
import { codeOf, put, useTempStack } from './__fixtures__/stack.js';
import type { Mapper } from './mapper.js';
import { storeUsage, volumeUsage } from './usage.js';

const BS = 4096;
const fill = (n: number, v: number) => Buffer.alloc(n, v);

let blocks: FileBlocker;
let mapper: Mapper;

useTempStack('archip-mapper-usage-', 'u_1', (s) => {
  ({ blocks, mapper } = s);
});

describe('usage', () => {
  it('counts one map: allocated blocks, distinct objects, bytes shared with other maps', async () => {
    // vol: [a, b, zero, zero]; snap shares a and b; clone copies block 0 up on its first write.
    await mapper.create('vol', { size: 4 * BS, blocksize: BS });
    await put(mapper, blocks, 'vol', 0, Buffer.concat([fill(BS, 1), fill(BS, 2)]));
    await mapper.snapshot('vol', 'snap');
    await mapper.clone('snap', 'clone');
    await put(mapper, blocks, 'clone', 0, fill(10, 9));
    const src = { mapper, blockerb: blocks };

    expect(await volumeUsage(src, 'snap')).toEqual({
      name: 'snap',
      readonly: true,
      size: 4 * BS,
      blocks: 4,
      allocated: 2,
      objects: 2,
      contentObjects: 0,
      bytesReferenced: 2 * BS,
      bytesStored: 2 * BS,
      bytesDeduplicated: 0,
      bytesShared: 2 * BS, // vol still names both; the clone names b
      bytesExclusive: 0,
      missingObjects: 0,
    });
    expect(await volumeUsage(src, 'clone')).toMatchObject({
      readonly: false,
      allocated: 2,
      objects: 2,
      bytesStored: 2 * BS,
      bytesShared: BS, // b; its copy of a is its own
      bytesExclusive: BS,
    });
    expect(await codeOf(volumeUsage(src, 'nope'))).toBe('ENOENT_VOLUME');
  });

  it('counts content-addressed blocks once, and missing objects', async () => {
    // A hashed snapshot whose blocks 0 and 2 have the same content: one object, stored once.
    await mapper.create('img', { size: 3 * BS, blocksize: BS });
    await put(mapper, blocks, 'img', 0, Buffer.concat([fill(BS, 1), fill(BS, 2), fill(BS, 1)]));
    await mapper.snapshot('img', 'img-s');
    const { name } = await mapper.hash('img-s');
    const src = { mapper, blockerb: blocks };
    expect(await volumeUsage(src, name)).toMatchObject({
      allocated: 3,
      objects: 2,
      contentObjects: 2,
      bytesReferenced: 3 * BS,
      bytesStored: 2 * BS,
      bytesDeduplicated: BS,
      bytesShared: 0,
      missingObjects: 0,
    });

    const absent = pithosBlockHash(fill(BS, 7));
    await mapper.createFromEntries('file', { size: BS, blocksize: BS, entries: [{ name: absent }] });
    expect(await volumeUsage(src, 'file')).toMatchObject({ objects: 1, bytesStored: 0, missingObjects: 1 });
  });

  it('counts the whole store, including objects no map names', async () => {
    await mapper.create('vol', { size: 2 * BS, blocksize: BS });
    await mapper.create('empty', { size: 8 * BS, blocksize: BS });
    await put(mapper, blocks, 'vol', 0, fill(2 * BS, 3));
    await mapper.snapshot('vol', 'snap');
    await blocks.writeFull('stray', fill(100, 1));
    expect(await storeUsage({ mapper, blockerb: blocks })).toEqual({
      maps: 3,
      size: 12 * BS,
      allocated: 4, // vol and snap name the same two objects
      bytesReferenced: 4 * BS,
      objects: 2,
      bytesStored: 2 * BS,
      bytesDeduplicated: 2 * BS,
      contentObjects: 0,
      blockerObjects: 3,
      blockerBytes: 2 * BS + 100,
      unreferencedObjects: 1,
      unreferencedBytes: 100,
      trashEntries: 0,
      trashObjects: 0,
      trashBytes: 0,
    });
  });

  it('tells apart what the trash holds: objects only trash entries name, and how many entries', async () => {
    await mapper.create('vol', { size: 4 * BS, blocksize: BS });
    await put(mapper, blocks, 'vol', 0, Buffer.concat([fill(BS, 1), fill(BS, 2), fill(BS, 3)]));
    await mapper.snapshot('vol', 'snap');
    await mapper.clone('snap', 'clone'); // keeps the snapshot's three objects live
    await put(mapper, blocks, 'vol', 0, fill(BS, 4)); // vol's own copy of block 0
    await mapper.remove('vol');
    await mapper.remove('snap');
    await blocks.writeFull('stray', fill(100, 1));
    const u = await storeUsage({ mapper, blockerb: blocks });
    expect(u).toMatchObject({
      maps: 1, // the clone
      objects: 3,
      trashEntries: 2,
      // vol's copy-up: only vol's trash entry names it; the snapshot's three the clone still names
      trashObjects: 1,
      trashBytes: BS,
      unreferencedObjects: 2, // the trash's, and the stray object
      unreferencedBytes: BS + 100,
    });
    // Emptied, the trash holds nothing; its objects are plain garbage then.
    for (const t of await mapper.listTrash()) await mapper.purgeTrash(t.entry);
    expect(await storeUsage({ mapper, blockerb: blocks })).toMatchObject({
      trashEntries: 0,
      trashObjects: 0,
      trashBytes: 0,
    });
    // Without listTrash (a minimal source) the trash counts nothing.
    const minimal = {
      info: mapper.info.bind(mapper),
      list: mapper.list.bind(mapper),
      entries: mapper.entries.bind(mapper),
    };
    expect(await storeUsage({ mapper: minimal, blockerb: blocks })).toMatchObject({ trashEntries: 0 });
  });
});
