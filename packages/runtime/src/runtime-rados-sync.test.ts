/**
 * `sync` of a `type = rados_blocker` section reaches the RadosBlocker of the embedded runtime, and
 * bulk mode (import, export) writes back as it does for file blockers. On the shared test cluster.
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
});
