/**
 * `[mapperd] sparse_maps` (docs/CONFIG.md): with the default, creating and snapshotting a thin
 * volume stores its map header only; with `sparse_maps = no` every map block is stored and the
 * header carries no SPARSE flag, as the original's mapper needs to read it.
 */
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeHeaderV2, MapFlag } from '@archipelago/mapfile';
import { afterEach, describe, expect, it } from 'vitest';
import { Session } from './session.js';
import { createVolume, snapshotVolume } from './volumes.js';

const GiB = 1024 ** 3;
let dir = '';
let s: Session | undefined;

afterEach(async () => {
  await s?.close();
  s = undefined;
  await rm(dir, { recursive: true, force: true });
});

/** The objects of the maps' file blocker, but lineage records (files under its directory tree). */
async function mapObjects(): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(dir, 'maps'), { withFileTypes: true, recursive: true }))
    if (e.isFile() && !e.name.startsWith('.')) out.push(e.name);
  // Not map blocks: the lineage record `<name>_ffffffffffffffff` (and a rollback's staging).
  return out.filter((n) => !/_fffffffffffffff[ef]$/.test(n));
}

async function session(mapperd: string): Promise<Session> {
  dir = await mkdtemp(join(tmpdir(), 'archip-sparse-'));
  const conf = join(dir, 'a.conf');
  await writeFile(
    conf,
    `[ARCHIPELAGO]\nRUN_DIR = ${join(dir, 'run')}\n\n${mapperd}` +
      `[blockerb]\ntype = file_blocker\narchip_dir = ${join(dir, 'blocks')}\nunique_str = hostS\n\n` +
      `[blockerm]\ntype = file_blocker\narchip_dir = ${join(dir, 'maps')}\nunique_str = hostS\n`,
  );
  s = new Session({ config: conf });
  return s;
}

async function flagsOf(name: string): Promise<number> {
  const rt = await s!.runtime();
  return decodeHeaderV2(await rt.blockerm.read(name, 0, 512, { missingOk: true }), name).flags;
}

describe('[mapperd] sparse_maps', () => {
  it('default: a thin 8 GiB volume and its snapshot store no map blocks', async () => {
    await session('');
    await createVolume(s!, 'v', { size: 8 * GiB });
    await snapshotVolume(s!, 'v', 'v-s');
    const blocks = (await mapObjects()).filter((n) => /^v(-s)?_[0-9a-f]{16}$/.test(n));
    expect(blocks).toEqual([]);
    expect((await flagsOf('v')) & MapFlag.SPARSE).toBe(MapFlag.SPARSE);
  });

  it('sparse_maps = no: every map block is stored, no SPARSE flag', async () => {
    await session('[mapperd]\nsparse_maps = no\n\n');
    await createVolume(s!, 'v', { size: 8 * GiB });
    await snapshotVolume(s!, 'v', 'v-s');
    const names = await mapObjects();
    // 8 GiB of 4 MiB blocks: 2048 entries of 128 bytes, one map block (4 MiB holds 32768).
    expect(names.filter((n) => /^v_[0-9a-f]{16}$/.test(n)).length).toBeGreaterThan(0);
    expect(names.filter((n) => /^v-s_[0-9a-f]{16}$/.test(n)).length).toBeGreaterThan(0);
    expect((await flagsOf('v')) & MapFlag.SPARSE).toBe(0);
    expect((await flagsOf('v-s')) & MapFlag.SPARSE).toBe(0);
  });
});
