/**
 * vlmc on a real single-node Ceph cluster (scripts/ceph-cluster.sh, started once per run by the
 * RADOS test fixture): maps and data objects in RADOS pools, through the built CLI and the NBD
 * endpoint, as a user would run them.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureCluster } from '../packages/blocker-rados/test/cluster.js';
import { Env, requireTool, sh } from './lib/vlmc.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
let env: Env;

beforeAll(async () => {
  requireTool('qemu-img', 'qemu-utils');
  const cluster = await ensureCluster();
  const ns = `vlmc-e2e-${process.pid}-${Date.now()}`;
  env = await Env.create(
    'rados',
    () => `[blockerb]
type = rados_blocker
pool = blocks
namespace = ${ns}
ceph_conf = ${cluster.conf}
connect_timeout = 10
[blockerm]
type = rados_blocker
pool = maps
namespace = ${ns}
ceph_conf = ${cluster.conf}
connect_timeout = 10
`,
  );
}, 180_000);

afterAll(async () => {
  await env?.dispose();
});

describe('vlmc on RADOS', () => {
  it('imports, snapshots, clones and exports byte-exact; zero blocks stay zero blocks', async () => {
    const img = join(env.dir, 'disk.img');
    const data = Buffer.concat([randomBytes(5 * MiB), Buffer.alloc(8 * MiB), randomBytes(3 * MiB)]);
    await writeFile(img, data);
    await env.ok('import', img, 'rvol');
    const info = (await env.vlmc('info', 'rvol', '--json')).json as {
      size: number;
      objects: number;
      allocated: number;
    };
    expect(info).toMatchObject({ size: 16 * MiB, objects: 4, allocated: 3 });
    await env.ok('snapshot', 'rvol', 'rvol-snap');
    await env.ok('create', 'rclone', '--snap', 'rvol-snap');
    const out = join(env.dir, 'out.img');
    await env.ok('export', 'rclone', out);
    expect(sha(await readFile(out))).toBe(sha(data));
    const names = ((await env.vlmc('ls', '--json')).json as Array<{ name: string }>).map((v) => v.name);
    expect(names).toEqual(['rclone', 'rvol', 'rvol-snap']);
  });

  it('maps a RADOS-backed clone over NBD; writes to it never show in its snapshot', async () => {
    const uri = await env.ok('map', 'rclone');
    const w = await sh('qemu-io', ['-f', 'raw', '-c', 'write -P 0x6b 4190000 20000', uri]);
    expect(w.code, w.stderr).toBe(0);
    const r = await sh('qemu-io', ['-f', 'raw', '-c', 'read -P 0x6b 4190000 20000', uri]);
    expect(r.stdout).not.toMatch(/Pattern verification failed/);
    await env.ok('unmap', 'rclone');
    const snapOut = join(env.dir, 'snap.img');
    await env.ok('export', 'rvol-snap', snapOut);
    const cloneOut = join(env.dir, 'clone.img');
    await env.ok('export', 'rclone', cloneOut);
    const s = await readFile(snapOut);
    const c = await readFile(cloneOut);
    expect(c.subarray(4190000, 4210000).every((b) => b === 0x6b)).toBe(true);
    expect(s.subarray(4190000, 4210000).equals(c.subarray(4190000, 4210000))).toBe(false);
    expect(s.subarray(0, 4190000).equals(c.subarray(0, 4190000))).toBe(true);
  });

  it("the volume's life through the CLI with --json: diff, rollback, flatten, trash, gc, du", async () => {
    const j = async <T>(...args: string[]): Promise<T> => {
      const r = await env.vlmc(...args, '--json');
      expect(r.code, `vlmc ${args.join(' ')}: ${r.stderr}`).toBe(0);
      return r.json as T;
    };
    const img = join(env.dir, 'life.img');
    const data = randomBytes(12 * MiB);
    await writeFile(img, data);
    await env.ok('import', img, 'life');
    await env.ok('snapshot', 'life', 'life-s1');
    const uri = await env.ok('map', 'life');
    const w = await sh('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 0 65536', uri]);
    expect(w.code, w.stderr).toBe(0);
    await env.ok('unmap', 'life');
    await env.ok('snapshot', 'life', 'life-s2');
    const exported = async (name: string) => {
      const out = join(env.dir, `${name}.out`);
      await env.ok('export', name, out);
      return readFile(out);
    };
    const atS2 = await exported('life-s2');
    expect(atS2.subarray(0, 65536).every((b) => b === 0x33)).toBe(true);

    const d = await j<{ extents: unknown[] }>('diff', 'life-s2', '--from-snap', 'life-s1');
    expect(d.extents).toEqual([{ offset: 0, length: 4 * MiB, type: 'data' }]);

    expect(await j<{ name: string }>('rollback', 'life', 'life-s1')).toMatchObject({ name: 'life' });
    expect(sha(await exported('life'))).toBe(sha(data));

    await env.ok('create', 'life-c', '--snap', 'life-s1');
    expect(await j<{ copied: number; parent: string }>('flatten', 'life-c')).toMatchObject({
      copied: 3,
      parent: 'life-s1',
    });

    await env.ok('remove', 'life-s2');
    const trash = await j<Array<{ name: string; kind: string }>>('trash', 'ls');
    expect(trash.map((t) => t.name)).toContain('life-s2');
    await j('trash', 'restore', 'life-s2');
    expect(sha(await exported('life-s2'))).toBe(sha(atS2));

    for (const n of ['life-s2', 'life', 'life-s1']) await env.ok('remove', n);
    const before = await j<{ trashEntries: number; trashObjects: number }>('du');
    expect(before.trashEntries).toBe(3);
    expect(before.trashObjects).toBeGreaterThan(0);
    const gc = await j<{ freedObjects: number }>('gc', '--grace', '0');
    expect(gc.freedObjects).toBeGreaterThanOrEqual(before.trashObjects);
    expect(await j('du')).toMatchObject({ unreferencedObjects: 0, unreferencedBytes: 0, trashEntries: 0 });
    // The flattened clone depends on nothing that went.
    expect(sha(await exported('life-c'))).toBe(sha(data));
  });
});
