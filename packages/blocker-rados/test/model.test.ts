import { volumeModelTest } from '@archipelago/composer/test';
import type { RadosBlockerOptions } from '../src/index.js';
import { freshNamespace, openPair } from './cluster.js';

async function stack(o: Partial<RadosBlockerOptions> = {}) {
  const { blockerm, blockerb } = await openPair(freshNamespace('model'), 'model_embedded', o);
  return {
    blockerm,
    blockerb,
    dispose: async () => {
      await Promise.all([blockerm.close(), blockerb.close()]);
    },
  };
}

// 20 runs (not the default 30): each sequence runs gc steps, slower on RADOS (listings, the gc
// lock): about the time the 40 runs of the sequences without them took.
volumeModelTest({ name: 'rados blocker', runs: 20, stack: () => stack() });

// Write-back on both blockers: map and data writes acknowledged before they are committed, and
// every read, copy-up, snapshot, clone, rename and remove must still see them.
volumeModelTest({ name: 'rados blocker, write-back', runs: 8, stack: () => stack({ sync: 'flush' }) });
