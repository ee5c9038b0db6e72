import { volumeModelTest } from '@archipelago/composer/test';
import { RadosBlocker } from '../src/index.js';
import { ensureCluster, freshNamespace } from './cluster.js';

volumeModelTest({
  name: 'rados blocker',
  stack: async () => {
    const conf = (await ensureCluster()).conf;
    const ns = freshNamespace('model');
    const blockerm = await RadosBlocker.open({
      cephConf: conf,
      pool: 'maps',
      namespace: ns,
      identity: 'model_embedded',
    });
    const blockerb = await RadosBlocker.open({
      cephConf: conf,
      pool: 'blocks',
      namespace: ns,
      identity: 'model_embedded',
    });
    return {
      blockerm,
      blockerb,
      dispose: async () => {
        await Promise.all([blockerm.close(), blockerb.close()]);
      },
    };
  },
});
