import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileBlocker } from '@archipelago/blocker-file';
import { volumeModelTest } from './test/index.js';

volumeModelTest({
  name: 'file blocker',
  stack: async () => {
    const dir = await mkdtemp(join(tmpdir(), 'archip-model-'));
    return {
      blockerm: new FileBlocker({ dir: join(dir, 'maps'), identity: 'model_embedded' }),
      blockerb: new FileBlocker({ dir: join(dir, 'blocks'), identity: 'model_embedded' }),
      dispose: () => rm(dir, { recursive: true, force: true }),
    };
  },
});

volumeModelTest({
  name: 'file blocker, write-back',
  runs: 20,
  stack: async () => {
    const dir = await mkdtemp(join(tmpdir(), 'archip-model-wb-'));
    return {
      blockerm: new FileBlocker({ dir: join(dir, 'maps'), identity: 'model_embedded' }),
      blockerb: new FileBlocker({ dir: join(dir, 'blocks'), identity: 'model_embedded', sync: 'flush' }),
      dispose: () => rm(dir, { recursive: true, force: true }),
    };
  },
});
