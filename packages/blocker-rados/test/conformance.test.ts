import { blockerConformance } from '@archipelago/blocker/test';
import { RadosBlocker } from '../src/index.js';
import { ensureCluster, freshNamespace } from './cluster.js';

const ns = freshNamespace('conformance');

blockerConformance({
  name: 'rados',
  factory: async (o) =>
    RadosBlocker.open({
      cephConf: (await ensureCluster()).conf,
      pool: 'blocks',
      namespace: ns,
      lockRecheckMs: 500,
      ...o,
    }),
});
