/**
 * The guide's leak after a full disk, with a real full filesystem (a 64 MiB tmpfs holding both
 * blockers): an import fails with ENOSPC; removing a volume frees nothing by itself (it goes to
 * the trash); `vlmc gc` frees its blocks, `vlmc du` then reports nothing unreferenced, and the
 * import that failed succeeds.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Env, sh } from '../lib/vlmc.js';

const MiB = 1024 * 1024;
let env: Env;
let mnt = '';

beforeAll(async () => {
  env = await Env.create(
    'fulldisk',
    (dir) =>
      `[blockerb]\ntype = file_blocker\narchip_dir = ${dir}/fs/blocks\n` +
      `[blockerm]\ntype = file_blocker\narchip_dir = ${dir}/fs/maps\n`,
  );
  mnt = join(env.dir, 'fs');
  await mkdir(mnt);
  const m = await sh('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'archip-fulldisk', mnt]);
  if (m.code !== 0) throw new Error(`mount tmpfs: ${m.stderr}`);
}, 60_000);

afterAll(async () => {
  if (mnt) await sh('umount', [mnt]);
  await env?.dispose();
});

describe('a full disk, then remove and gc', () => {
  it('an import fails with ENOSPC; vlmc rm frees nothing until vlmc gc; then it fits', async () => {
    const a = join(env.dir, 'a.img');
    const b = join(env.dir, 'b.img');
    await writeFile(a, randomBytes(36 * MiB));
    await writeFile(b, randomBytes(36 * MiB));
    await env.ok('import', a, 'va');
    const full = await env.vlmc('import', b, 'vb');
    expect(full.code).not.toBe(0);
    expect(full.stderr).toMatch(/ENOSPC/);

    await env.ok('remove', 'va');
    const df = async () =>
      Number((await sh('df', ['-B1', '--output=avail', mnt])).stdout.trim().split('\n')[1]);
    const freeAfterRemove = await df();
    expect(freeAfterRemove, 'the trash keeps its blocks').toBeLessThan(30 * MiB);
    // What the killed import left under "vb" (incomplete) is removed too.
    await env.vlmc('remove', 'vb');
    // gc purges the trash first (a purged entry's own objects go with it), then sweeps.
    const gc = await env.vlmc('gc', '--grace', '0', '--json');
    expect(gc.code, gc.stderr).toBe(0);
    expect(gc.json).toMatchObject({ deletedMaps: 3 });
    const du = (await env.vlmc('du', '--json')).json as { unreferencedBytes: number; trashEntries: number };
    expect(du).toMatchObject({ unreferencedBytes: 0, trashEntries: 0 });
    expect(await df()).toBeGreaterThan(freeAfterRemove + 30 * MiB);

    await env.ok('import', b, 'vb2');
    const out = join(env.dir, 'vb2.out');
    await env.ok('export', 'vb2', out);
    const cmp = await sh('cmp', [b, out]);
    expect(cmp.code, cmp.stdout).toBe(0);
  }, 120_000);
});
