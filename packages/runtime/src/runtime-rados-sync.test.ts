/**
 * `sync` of a `type = rados_blocker` section reaches the RadosBlocker of the embedded runtime, and
 * bulk mode (import, export) writes back as it does for file blockers; the trash works on RADOS
 * (remove, list, restore, purge). On the shared test cluster.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RadosBlocker } from '@archipelago/blocker-rados';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureCluster, freshNamespace } from '../../blocker-rados/test/cluster.js';
import { type LoadedConfig, loadConfig } from './config.js';
import { openEmbeddedRuntime } from './embedded.js';

let dir: string;
let loaded: LoadedConfig;

beforeAll(async () => {
  const { conf } = await ensureCluster();
  const ns = freshNamespace('rt-sync');
  dir = await mkdtemp(join(tmpdir(), 'archip-rt-sync-'));
  const file = join(dir, 'archipelago.conf');
  await writeFile(
    file,
    `[blockerb]
type = rados_blocker
pool = blocks
namespace = ${ns}
ceph_conf = ${conf}
sync = flush
[blockerm]
type = rados_blocker
pool = maps
namespace = ${ns}
ceph_conf = ${conf}
`,
  );
  loaded = loadConfig(file);
}, 180_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('embedded runtime on RADOS: sync', () => {
  it('gives blockerb the section’s sync = flush, blockerm its default (always); data round-trips', async () => {
    expect(loaded.config.blockerb.sync).toBe('flush');
    const rt = await openEmbeddedRuntime(loaded);
    try {
      expect((rt.blockerb as RadosBlocker).sync).toBe('flush');
      expect((rt.blockerm as RadosBlocker).sync).toBe('always');
      await rt.mapper.create('v1', { size: 8 * 1024 * 1024 });
      await rt.mapper.openVolume('v1');
      const data = Buffer.alloc(64 * 1024, 7);
      await rt.composer.write('v1', 4096, data);
      expect((await rt.composer.read('v1', 4096, data.length)).equals(data)).toBe(true);
      await rt.composer.flush('v1');
      expect((rt.blockerb as RadosBlocker).dirtyBytes).toBe(0);
    } finally {
      await rt.close();
    }
  });

  it('writes back on both blockers in bulk mode', async () => {
    const rt = await openEmbeddedRuntime(loaded, { bulk: true });
    try {
      expect((rt.blockerb as RadosBlocker).sync).toBe('flush');
      expect((rt.blockerm as RadosBlocker).sync).toBe('flush');
    } finally {
      await rt.close();
    }
  });

  it('keeps a removed volume in the trash on RADOS; restores it byte for byte; purges it', async () => {
    const rt = await openEmbeddedRuntime(loaded);
    try {
      await rt.mapper.create('tr', { size: 8 * 1024 * 1024 });
      const data = Buffer.alloc(64 * 1024, 9);
      await rt.composer.write('tr', 4 * 1024 * 1024, data);
      await rt.composer.remove('tr');
      await expect(rt.mapper.info('tr')).rejects.toMatchObject({ code: 'ENOENT_VOLUME' });
      expect((await rt.mapper.list()).map((v) => v.name)).not.toContain('tr');
      const [e] = await rt.mapper.listTrash();
      expect(e).toMatchObject({ name: 'tr', kind: 'volume', size: 8 * 1024 * 1024 });
      await rt.mapper.create('tr', { size: 1024 * 1024 });
      await expect(rt.mapper.restoreTrash('tr')).rejects.toMatchObject({ code: 'EEXIST_VOLUME' });
      await rt.mapper.remove('tr');
      await rt.mapper.restoreTrash('tr', { entry: e!.entry });
      expect((await rt.composer.read('tr', 4 * 1024 * 1024, data.length)).equals(data)).toBe(true);
      await rt.composer.close('tr');
      expect((await rt.mapper.purgeExpiredTrash(Date.now())).map((x) => x.size)).toEqual([1024 * 1024]);
      expect(await rt.mapper.listTrash()).toEqual([]);
    } finally {
      await rt.close();
    }
  });
});
