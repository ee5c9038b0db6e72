/**
 * The trash (README, "Trash"): `remove` moves a volume or snapshot there; `listTrash` shows it,
 * `restoreTrash` brings it back (refused when the name was used again), `purgeTrash` and
 * `purgeExpiredTrash` drop entries for good.
 */
import { createHash } from 'node:crypto';
import type { FileBlocker } from '@archipelago/blocker-file';
import { ArchipelagoError } from '@archipelago/libxseg';
import { dataObjectName } from '@archipelago/mapfile';
import { describe, expect, it, vi } from 'vitest';
import { codeOf, get, put, useTempStack } from './__fixtures__/stack.js';
import type { Mapper } from './mapper.js';
import { parseTrashName, TRASH_PREFIX } from './ops/trash.js';

const BS = 4096;
const BLOCKS = 8;

let maps: FileBlocker;
let blocks: FileBlocker;
let mapper: Mapper;

useTempStack('archip-trash-', 'hostT_embedded', (s) => {
  ({ maps, blocks, mapper } = s);
});

const fill = (seed: string, length = BS) => {
  const h = createHash('sha256').update(seed).digest();
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i += h.length) h.copy(out, i);
  return out;
};
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A volume `name` of BLOCKS blocks with data in blocks 0 and 5, closed; its bytes' digest. */
async function volume(name: string, seed = name): Promise<string> {
  await mapper.create(name, { size: BLOCKS * BS, blocksize: BS });
  await put(mapper, blocks, name, 0, fill(`${seed}/0`));
  await put(mapper, blocks, name, 5 * BS, fill(`${seed}/5`));
  await mapper.closeVolume(name);
  return sha(await get(mapper, blocks, name, 0, BLOCKS * BS));
}

async function objects(b: FileBlocker): Promise<string[]> {
  const out: string[] = [];
  for await (const n of b.list()) out.push(n);
  return out.sort();
}

describe('trash', () => {
  it('remove moves a volume to the trash; restore brings it back byte for byte', async () => {
    const bytes = await volume('v');
    const t0 = Date.now();
    await mapper.remove('v');
    const t1 = Date.now();
    // Gone for users: info, open, map say ENOENT; list hides the trash entry.
    expect(await codeOf(mapper.info('v'))).toBe('ENOENT_VOLUME');
    expect(await codeOf(mapper.openVolume('v'))).toBe('ENOENT_VOLUME');
    expect(await codeOf(mapper.mapRead('v', 0, BS))).toBe('ENOENT_VOLUME');
    expect(await mapper.list()).toEqual([]);
    const trash = await mapper.listTrash({ ttlMs: 60_000 });
    expect(trash).toHaveLength(1);
    const [e] = trash;
    expect(e).toMatchObject({ name: 'v', kind: 'volume', size: BLOCKS * BS, blocksize: BS });
    expect(e!.entry.startsWith(TRASH_PREFIX)).toBe(true);
    expect(e!.removedAt).toBeGreaterThanOrEqual(t0);
    expect(e!.removedAt).toBeLessThanOrEqual(t1);
    expect(e!.expiresAt).toBe(e!.removedAt + 60_000);
    // Its objects are kept while it is in the trash.
    expect(await objects(blocks)).toEqual([dataObjectName('v', 1n, 0), dataObjectName('v', 1n, 5)]);

    const info = await mapper.restoreTrash('v');
    expect(info).toMatchObject({ name: 'v', size: BLOCKS * BS, readonly: false, allocated: 2 });
    expect(info.epoch).toBe(2n); // past the removed map's epoch: no object name is reused
    expect(sha(await get(mapper, blocks, 'v', 0, BLOCKS * BS))).toBe(bytes);
    expect(await mapper.listTrash()).toEqual([]);
    expect((await mapper.list()).map((x) => x.name)).toEqual(['v']);
    // A restored volume is a volume: writes in place where it owns, copy-ups under the new epoch.
    await put(mapper, blocks, 'v', 0, fill('v/0/again'));
    await put(mapper, blocks, 'v', 2 * BS, fill('v/2'));
    await mapper.closeVolume('v');
    expect(await objects(blocks)).toEqual([
      dataObjectName('v', 1n, 0),
      dataObjectName('v', 1n, 5),
      dataObjectName('v', 2n, 2),
    ]);
    expect((await get(mapper, blocks, 'v', 0, BS)).equals(fill('v/0/again'))).toBe(true);
    expect(await codeOf(mapper.restoreTrash('v'))).toBe('ENOENT_VOLUME');
  });

  it('restore is refused, changing nothing, when the name was created again', async () => {
    const first = await volume('r', 'first');
    await mapper.remove('r');
    const second = await volume('r', 'second');
    expect(second).not.toBe(first);
    let err: unknown;
    await mapper.restoreTrash('r').catch((e: unknown) => {
      err = e;
    });
    expect(ArchipelagoError.is(err, 'EEXIST_VOLUME')).toBe(true);
    expect((err as Error).message).toMatch(/cannot restore "r" from the trash: the name was used again/);
    expect(sha(await get(mapper, blocks, 'r', 0, BLOCKS * BS))).toBe(second);
    expect((await mapper.listTrash()).map((e) => e.name)).toEqual(['r']);
    // Once the new one is removed too, the trash has both; the latest is restored first.
    await mapper.remove('r');
    const both = await mapper.listTrash();
    expect(both.map((e) => e.name)).toEqual(['r', 'r']);
    expect(new Set(both.map((e) => e.entry)).size).toBe(2);
    await mapper.restoreTrash('r');
    expect(sha(await get(mapper, blocks, 'r', 0, BLOCKS * BS))).toBe(second);
    await mapper.remove('r');
    // An explicit entry picks the older one.
    const older = (await mapper.listTrash()).find((e) => e.entry === both[0]!.entry)!;
    await mapper.restoreTrash('r', { entry: older.entry });
    expect(sha(await get(mapper, blocks, 'r', 0, BLOCKS * BS))).toBe(first);
    expect(await codeOf(mapper.restoreTrash('r', { entry: older.entry }))).toBe('ENOENT_VOLUME');
  });

  it('the same name removed twice gives two entries, even within one millisecond', async () => {
    const now = Date.now();
    const clock = vi.spyOn(Date, 'now').mockReturnValue(now);
    try {
      await mapper.create('d', { size: BS, blocksize: BS });
      await mapper.remove('d');
      await mapper.create('d', { size: 2 * BS, blocksize: BS });
      await mapper.remove('d');
    } finally {
      clock.mockRestore();
    }
    const trash = await mapper.listTrash();
    expect(trash.map((e) => e.removedAt)).toEqual([now, now + 1]);
    expect(trash.map((e) => [e.name, e.size])).toEqual([
      ['d', BS],
      ['d', 2 * BS],
    ]);
    expect(trash[0]!.removedAt).toBeLessThan(trash[1]!.removedAt);
    expect((await mapper.create('d', { size: BS, blocksize: BS })).epoch).toBe(3n);
  });

  it('removing a snapshot with clones keeps the clones readable, also once it is purged', async () => {
    await volume('o');
    await mapper.snapshot('o', 's');
    const snapBytes = sha(await get(mapper, blocks, 's', 0, BLOCKS * BS));
    await mapper.clone('s', 'c');
    await mapper.remove('s');
    expect((await mapper.listTrash()).map((e) => [e.name, e.kind])).toEqual([['s', 'snapshot']]);
    expect(sha(await get(mapper, blocks, 'c', 0, BLOCKS * BS))).toBe(snapBytes);
    expect((await mapper.purgeExpiredTrash(Date.now())).map((e) => e.name)).toEqual(['s']);
    expect(sha(await get(mapper, blocks, 'c', 0, BLOCKS * BS))).toBe(snapBytes);
    // And a restored snapshot is a snapshot again.
    await mapper.snapshot('o', 's2');
    await mapper.remove('s2');
    expect((await mapper.restoreTrash('s2')).readonly).toBe(true);
    expect(await codeOf(mapper.mapWrite('s2', 0, BS))).toBe('EREADONLY');
  });

  it('purgeExpiredTrash purges what the TTL let expire, and the objects it owned', async () => {
    await volume('old');
    await volume('young');
    await mapper.remove('old');
    const [old] = await mapper.listTrash();
    await mapper.remove('young');
    const young = (await mapper.listTrash()).find((e) => e.name === 'young')!;
    const ttl = 10_000;
    // Nothing expired yet.
    expect(await mapper.purgeExpiredTrash(old!.removedAt + ttl - 1, ttl)).toEqual([]);
    expect(await mapper.listTrash()).toHaveLength(2);
    // `old` expired (if both were removed in the same millisecond, both did).
    const purged = await mapper.purgeExpiredTrash(old!.removedAt + ttl, ttl);
    expect(purged.map((e) => e.name)).toEqual(
      young!.removedAt === old!.removedAt ? ['old', 'young'] : ['old'],
    );
    expect(purged[0]).toMatchObject({ entry: old!.entry, expiresAt: old!.removedAt + ttl });
    expect(await codeOf(mapper.restoreTrash('old'))).toBe('ENOENT_VOLUME');
    expect((await objects(blocks)).filter((n) => n.startsWith('old_'))).toEqual([]);
    // ttl 0: every entry, at once.
    await mapper.purgeExpiredTrash(Date.now());
    expect(await mapper.listTrash()).toEqual([]);
    expect(await objects(blocks)).toEqual([]);
    // No map blocks are left in blockerm, only deleted headers.
    expect((await objects(maps)).filter((n) => !n.endsWith('_lock') && /_[0-9a-f]{16}$/.test(n))).toEqual([]);
    expect(await codeOf(mapper.purgeTrash(old!.entry))).toBe('ENOENT_VOLUME');
    expect(await codeOf(mapper.purgeTrash('old'))).toBe('EINVAL_NAME');
  });

  it('trash entries are no user names: nobody creates, opens, writes or removes one', async () => {
    await volume('n');
    await mapper.remove('n');
    const [e] = await mapper.listTrash();
    expect(parseTrashName(e!.entry)).toMatchObject({ name: 'n', removedAt: e!.removedAt });
    expect(parseTrashName('n')).toBeNull();
    expect(parseTrashName(`${e!.entry}_0000000000000000`)).toBeNull(); // its map block
    expect(await codeOf(mapper.create(e!.entry, { size: BS }))).toBe('EINVAL_NAME');
    expect(await codeOf(mapper.openVolume(e!.entry))).toBe('EINVAL_NAME');
    expect(await codeOf(mapper.mapWrite(e!.entry, 0, BS))).toBe('EINVAL_NAME');
    expect(await codeOf(mapper.remove(e!.entry))).toBe('EINVAL_NAME');
    expect(await codeOf(mapper.rename(e!.entry, 'x'))).toBe('EINVAL_NAME');
    expect(await codeOf(mapper.snapshot('n2', e!.entry))).toBe('EINVAL_NAME');
    expect(await mapper.listTrash()).toHaveLength(1);
  });

  it('an incomplete volume (a killed import) is dropped at once, not trashed', async () => {
    await mapper.create('imp', { size: 2 * BS, blocksize: BS, incomplete: true });
    await put(mapper, blocks, 'imp', 0, fill('imp'));
    await mapper.closeVolume('imp');
    await mapper.remove('imp');
    expect(await mapper.listTrash()).toEqual([]);
    expect(await objects(blocks)).toEqual([]);
    expect(await codeOf(mapper.info('imp'))).toBe('ENOENT_VOLUME');
  });
});
