/**
 * The daemon wiring: the Runtime's parts are clients of the daemons over the segment —
 * `SegmentMapper` (mapperd) and `SegmentBlocker`s to blockerm and blockerb (lock owners, object
 * queries) — each on its own dynamic port of one joined segment. Volume I/O goes either to vlmcd
 * (`SegmentVolumes`), or, composed in this process (`compose: 'local'`, what the `vlmc map`
 * endpoint asks for), through a Composer over that SegmentMapper, caching map lookups under
 * mapperd's leases as vlmcd does, and straight to blockerb. Volume locks are mapperd's, taken as
 * the host's identity (`hostIdentity`), the same an embedded `vlmc` of this host has: a volume
 * opened before `archipelago start` stays this host's after it, and the reverse.
 */
import { Composer, type VolumeApi } from '@archipelago/composer';
import { ArchipelagoError } from '@archipelago/libxseg';
import type { LoadedConfig } from './config.js';
import { pidfileOf, portOf, segmentSpecOf } from './paths.js';
import { type Compose, closeOnce, type Runtime } from './types.js';

/** The roles whose daemons carry volume I/O for `vlmc` and the NBD endpoint. */
export const VOLUME_DAEMONS = ['mapperd', 'vlmcd'] as const;

export async function connectDaemons(loaded: LoadedConfig, compose: Compose): Promise<Runtime> {
  const local = compose === 'local';
  const peer = await import('@archipelago/peer');
  for (const role of VOLUME_DAEMONS) {
    const st = peer.readPidfile(pidfileOf(loaded, role));
    if (st.state !== 'running')
      throw new ArchipelagoError(
        'EIO',
        `${role} is not running (${st.state === 'stale' ? 'stale pidfile' : 'no pidfile'}: ${pidfileOf(loaded, role)}) while the other daemons are; run "archipelago start ${role}" (or "archipelago restart"), then retry`,
        { details: { role, state: st.state } },
      );
  }
  const { Segment } = await import('@archipelago/libxseg/segment');
  const segment = Segment.join(segmentSpecOf(loaded));
  const clients: { disconnect(): Promise<void> }[] = [];
  try {
    const mapper = new peer.SegmentMapper({
      segment,
      port: portOf(loaded, 'mapperd'),
      trackOpens: true,
      // A local composer caches map lookups under leases; mapperd recalls them (INVALIDATE to
      // this port) before anyone else changes the map, and the volume's I/O drains first.
      cache: local,
    });
    clients.push(mapper);
    const { identity } = await mapper.hello();
    let vlmcd: VolumeApi | null = null;
    if (!local) {
      const v = new peer.SegmentVolumes({ segment, port: portOf(loaded, 'vlmcd'), tracker: mapper });
      clients.push(v);
      vlmcd = v;
    }
    const blockerm = new peer.SegmentBlocker({
      segment,
      port: portOf(loaded, 'blockerm'),
      identity,
      kind: 'blockerm',
    });
    clients.push(blockerm);
    const blockerb = new peer.SegmentBlocker({
      segment,
      port: portOf(loaded, 'blockerb'),
      identity,
      kind: 'blockerb',
    });
    clients.push(blockerb);
    let composer = vlmcd;
    if (!composer) {
      const c = new Composer({ mapper, blockerb });
      mapper.onRecall = (name) => c.frozen(name, async () => {});
      composer = c;
    }
    return {
      wiring: 'daemons',
      config: loaded.config,
      configPath: loaded.path,
      blockerm,
      blockerb,
      mapper,
      composer,
      identity,
      close: closeOnce(async ({ keepLocks }) => {
        try {
          if (!keepLocks) for (const v of mapper.openVolumes()) await composer.close(v);
        } finally {
          await Promise.allSettled(clients.map((c) => c.disconnect()));
          segment.close();
        }
      }),
    };
  } catch (e) {
    await Promise.allSettled(clients.map((c) => c.disconnect()));
    segment.close();
    throw e;
  }
}
