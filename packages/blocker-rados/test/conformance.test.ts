import { blockerConformance } from '@archipelago/blocker/test';
import type { RadosBlockerOptions } from '../src/index.js';
import { freshNamespace, openRados } from './cluster.js';

/** The suite on the shared cluster, in a namespace of its own, with `extra` options. */
function radosConformance(name: string, tag: string, extra: Partial<RadosBlockerOptions> = {}): void {
  const ns = freshNamespace(tag);
  blockerConformance({
    name,
    factory: async (o) =>
      openRados({
        pool: 'blocks',
        namespace: ns,
        lockRecheckMs: 500,
        ...extra,
        ...o,
      }),
  });
}

radosConformance('rados', 'conformance');
// Write-back mode (librbd's writearound counterpart): the same contract, with writes acknowledged
// before RADOS committed them.
radosConformance('rados, write-back (sync: flush)', 'conformance-wb', { sync: 'flush' });
