/**
 * The `vlmc` lineage operations as functions of a Session (embedded wiring, file blockers in a
 * temporary directory): `info` shows the recorded parent and origin, `snapshots`, `children`,
 * `rollback` and `flatten`.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ObjFlag } from '@archipelago/mapfile';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ensureCluster, freshNamespace } from '../../blocker-rados/test/cluster.js';
import { Session } from './session.js';
import {
  createVolume,
  flattenVolume,
  listChildren,
  listSnapshots,
  removeVolume,
  renameVolume,
  rollbackVolume,
  snapshotVolume,
  volumeInfo,
} from './volumes.js';

const MiB = 1024 * 1024;
const BS = 4 * MiB;
let dir: string;
let s: Session;

/** The blocker sections of a store: file blockers under `dir`, or RADOS pools in a fresh namespace. */
type Store = (dir: string) => string;
const fileStore: Store = (d) =>
  `[blockerb]\ntype = file_blocker\narchip_dir = ${join(d, 'blocks')}\nunique_str = hostL\n\n` +
  `[blockerm]\ntype = file_blocker\narchip_dir = ${join(d, 'maps')}\nunique_str = hostL\n`;
let cephConf = '';
const radosStore: Store = () => {
  const ns = freshNamespace('lineage');
  return (
    `[blockerb]\ntype = rados_blocker\npool = blocks\nnamespace = ${ns}\nceph_conf = ${cephConf}\n\n` +
    `[blockerm]\ntype = rados_blocker\npool = maps\nnamespace = ${ns}\nceph_conf = ${cephConf}\n`
  );
};

function useStore(store: () => Store): void {
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'archip-lineage-'));
    const conf = join(dir, 'a.conf');
    await writeFile(conf, `[ARCHIPELAGO]\nRUN_DIR = ${join(dir, 'run')}\n\n${store()(dir)}`);
    s = new Session({ config: conf });
  });
  afterEach(async () => {
    await s.close();
    await rm(dir, { recursive: true, force: true });
  });
}

const read = async (name: string, size: number) => (await s.runtime()).composer.read(name, 0, size);
const write = async (name: string, offset: number, data: Buffer) =>
  (await s.runtime()).composer.write(name, offset, data);

describe('lineage through the session (file blockers)', () => {
  useStore(() => fileStore);
  it('info shows the recorded parent of a clone that rewrote every block, and the origin of a snapshot', async () => {
    await createVolume(s, 'v', { size: 2 * BS });
    await write('v', 0, randomBytes(2 * BS));
    await snapshotVolume(s, 'v', 'v-s1');
    await createVolume(s, 'c', { snap: 'v-s1' });
    await write('c', 0, randomBytes(2 * BS)); // shares nothing with v-s1 any more
    const { info } = await volumeInfo(s, 'c', { lineage: true });
    expect(info).toMatchObject({ parent: 'v-s1', lineage: 'recorded' });
    expect((await volumeInfo(s, 'v-s1', { lineage: true })).info).toMatchObject({
      origin: 'v',
      lineage: 'recorded',
    });
    // Renamed, the parent is shown under its new name; removed, under its last name, marked removed.
    await renameVolume(s, 'v-s1', 'golden');
    expect((await volumeInfo(s, 'c', { lineage: true })).info).toMatchObject({ parent: 'golden' });
    expect(await listChildren(s, 'golden')).toEqual(['c']);
    await removeVolume(s, 'golden');
    expect((await volumeInfo(s, 'c', { lineage: true })).info).toMatchObject({
      parent: 'golden',
      parentRemoved: true,
    });
  });

  it('snapshots in order, rollback to one of them, flatten a clone', snapshotsRollbackFlatten);
});

describe('lineage through the session (RADOS)', () => {
  beforeAll(async () => {
    cephConf = (await ensureCluster()).conf;
  }, 180_000);
  useStore(() => radosStore);
  it('snapshots in order, rollback to one of them, flatten a clone', snapshotsRollbackFlatten);
});

async function snapshotsRollbackFlatten(): Promise<void> {
  await createVolume(s, 'v', { size: 2 * BS });
  const gen = [randomBytes(2 * BS), randomBytes(2 * BS), randomBytes(2 * BS)];
  for (const [i, snap] of ['monday', 'tuesday', 'alpha'].entries()) {
    await write('v', 0, gen[i]!);
    await snapshotVolume(s, 'v', snap);
  }
  expect((await listSnapshots(s, 'v')).map((x) => x.name)).toEqual(['monday', 'tuesday', 'alpha']);
  await rollbackVolume(s, 'v', 'tuesday');
  expect((await read('v', 2 * BS)).equals(gen[1]!)).toBe(true);
  await write('v', 0, randomBytes(BS));
  expect((await read('tuesday', 2 * BS)).equals(gen[1]!)).toBe(true);

  await createVolume(s, 'c', { snap: 'monday' });
  const done: number[] = [];
  const r = await flattenVolume(s, 'c', { onProgress: (d) => done.push(d) });
  expect(r.copied).toBe(2);
  expect(done.at(-1)).toBe(2);
  const rt = await s.runtime();
  for (const e of await rt.mapper.entries('c'))
    expect(e.name.startsWith('c_') && e.flags & ObjFlag.WRITABLE).toBeTruthy();
  expect((await volumeInfo(s, 'c', { lineage: true })).info).toMatchObject({
    parent: null,
    flattened: true,
  });
  await removeVolume(s, 'monday');
  expect((await read('c', 2 * BS)).equals(gen[0]!)).toBe(true);
}
