/**
 * The daemon wiring: the Runtime's parts are clients of the daemons over the segment —
 * `SegmentMapper` (mapperd) and `SegmentBlocker`s to blockerm and blockerb (lock owners, object
 * queries) — each on its own dynamic port of one joined segment. Volume I/O goes either to vlmcd
 * (`SegmentVolumes`), or, composed in this process (`compose: 'local'`, what the `vlmc map`
 * endpoint asks for), through a Composer over that SegmentMapper, caching map lookups under
 * mapperd's leases as vlmcd does, and straight to blockerb. Volume locks are mapperd's, taken as
 * the host's identity (`hostIdentity`), the same an embedded `vlmc` of this host has: a volume
 * opened before `archipelago start` stays this host's after it, and the reverse.
 *
 * The local composer's data path (direct-data.ts): when the store is a file blocker this process
 * can reach, the composer reads and writes data objects itself (a `DirectDataBlocker`: its own
 * FileBlocker of the `[blockerb]` section, everything but reads and writes to blockerb) and no
 * data crosses the segment; otherwise (RADOS, no access, `ARCHIPELAGO_DATA_PATH=segment`) it
 * sends them to blockerb.
 *
 * Restarts: `archipelago restart` keeps the segment while this process is on it, so the clients
 * keep their ports and their requests wait in the peers' queues for the restarted peers (retried
 * when a peer had taken them). No call hangs for ever: a call to a peer that is not running fails
 * after `ARCHIPELAGO_PEER_DOWN_TIMEOUT_MS` (default 30 s), every call fails at once when the
 * segment is gone, and `abortDaemonCalls` ends them all (a stopping endpoint).
 */

import { randomBytes } from 'node:crypto';
import { Composer, type VolumeApi } from '@archipelago/composer';
import { ArchipelagoError } from '@archipelago/libxseg';
import type { PeerState } from '@archipelago/peer';
import { envPeerDownTimeoutMs, PEER_DOWN_TIMEOUT_ENV } from '@archipelago/peer/options';
import type { LoadedConfig } from './config.js';
import {
  type ClientRegistrar,
  chooseDataPath,
  type DataPath,
  type DirectDataBlocker,
  openDirectData,
  RadosDirectDataBlocker,
} from './direct-data.js';
import { pidfileOf, portOf, segmentSpecOf } from './paths.js';
import { blockerOptions } from './sections.js';
import { type Compose, closeOnce, type Runtime } from './types.js';

/** The roles whose daemons carry volume I/O for `vlmc` and the NBD endpoint. */
export const VOLUME_DAEMONS = ['mapperd', 'vlmcd'] as const;

/** How long a call may wait for a peer that is not running, by default (ms). */
const DEFAULT_PEER_DOWN_TIMEOUT_MS = 30_000;

/** The environment variable of that bound (parsed by @archipelago/peer). */
export { PEER_DOWN_TIMEOUT_ENV };

/** How long a call may wait for a peer that is not running (ms; default 30000, 0: for ever). */
export function peerDownTimeoutMs(env: NodeJS.ProcessEnv = process.env): number {
  return envPeerDownTimeoutMs(env) ?? DEFAULT_PEER_DOWN_TIMEOUT_MS;
}

/** One client of a daemon runtime, as `daemonPeers` shows it. */
interface DaemonClient {
  role: string;
  peerState(): PeerState;
  abort(reason?: string): void;
}

const clientsOf = new WeakMap<Runtime, DaemonClient[]>();
const dataPaths = new WeakMap<Runtime, { path: DataPath; why: string; blocker: DirectDataBlocker | null }>();
/** The daemon runtimes that give each volume a runtime of its own (`openVolumeRuntime`). */
const volumeOpeners = new WeakMap<Runtime, (name: string) => Promise<Runtime>>();

/**
 * The runtime volume `name` is served over by an endpoint process that opened `rt` with
 * `volumeRuntimes`: with the direct data path over RADOS in the daemon wiring, a runtime of the
 * volume's own, with a librados data client of its own (registered in that volume's lock record
 * alone, so that a break of this volume's lock blocklists no other volume's client) and its own
 * composer, over `rt`'s clients of the daemons; closing it retires that client and closes the
 * composer's volume, not the daemon clients. Otherwise `rt` itself (its volumes share it).
 */
export function openVolumeRuntime(rt: Runtime, name: string): Promise<Runtime> {
  const open = volumeOpeners.get(rt);
  return open ? open(name) : Promise.resolve(rt);
}

/**
 * The data path of a daemon runtime's local composer (`direct`: its own blocker of the store;
 * `segment`: through blockerb) and why; null for the embedded runtime and for `compose: 'vlmcd'`.
 */
export function dataPathOf(
  rt: Runtime,
): { path: DataPath; why: string; blocker: DirectDataBlocker | null } | null {
  return dataPaths.get(rt) ?? null;
}

/** The peers a daemon runtime talks to and whether each is running (empty for the embedded one). */
export function daemonPeers(rt: Runtime): { role: string; state: PeerState }[] {
  return (clientsOf.get(rt) ?? []).map((c) => ({ role: c.role, state: c.peerState() }));
}

/**
 * Fails every call a daemon runtime has in flight at once (`ECLOSED`, `details.aborted`) and
 * refuses new ones: for a process that stops and will not wait for its peers any longer. A no-op
 * for the embedded runtime.
 */
export function abortDaemonCalls(rt: Runtime, reason: string): void {
  for (const c of clientsOf.get(rt) ?? []) c.abort(reason);
}

export async function connectDaemons(
  loaded: LoadedConfig,
  compose: Compose,
  opts: { volumeRuntimes?: boolean } = {},
): Promise<Runtime> {
  const local = compose === 'local';
  // Decided before anything connects: a forced but impossible direct path is an error.
  const dataPath = local ? chooseDataPath(loaded) : null;
  // The direct path over RADOS in an endpoint that serves each volume over a runtime of its own:
  // a data client per volume (openVolumeRuntime), none for the process.
  const perVolumeData =
    opts.volumeRuntimes === true &&
    dataPath?.path === 'direct' &&
    blockerOptions(loaded, 'blockerb').type === 'rados_blocker';
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
  let direct: DirectDataBlocker | null = null;
  const watched: DaemonClient[] = [];
  const deadPeerTimeoutMs = peerDownTimeoutMs();
  const watch = (role: string, c: Omit<DaemonClient, 'role'>) => {
    watched.push({ role, peerState: () => c.peerState(), abort: (r) => c.abort(r) });
  };
  try {
    const mapper = new peer.SegmentMapper({
      segment,
      deadPeerTimeoutMs,
      port: portOf(loaded, 'mapperd'),
      trackOpens: true,
      // A local composer caches map lookups under leases; mapperd recalls them (INVALIDATE to
      // this port) before anyone else changes the map, and the volume's I/O drains first.
      cache: local,
    });
    clients.push(mapper);
    watch('mapperd', mapper);
    const { identity } = await mapper.hello();
    let vlmcd: VolumeApi | null = null;
    if (!local) {
      const v = new peer.SegmentVolumes({
        segment,
        deadPeerTimeoutMs,
        port: portOf(loaded, 'vlmcd'),
        tracker: mapper,
      });
      clients.push(v);
      watch('vlmcd', v);
      vlmcd = v;
    }
    const blockerm = new peer.SegmentBlocker({
      segment,
      deadPeerTimeoutMs,
      port: portOf(loaded, 'blockerm'),
      identity,
      kind: 'blockerm',
    });
    clients.push(blockerm);
    watch('blockerm', blockerm);
    const blockerb = new peer.SegmentBlocker({
      segment,
      deadPeerTimeoutMs,
      port: portOf(loaded, 'blockerb'),
      identity,
      kind: 'blockerb',
    });
    clients.push(blockerb);
    watch('blockerb', blockerb);
    let composer = vlmcd;
    /** Volumes served over a runtime of their own (openVolumeRuntime): their composer and data blocker. */
    const views = new Map<string, { composer: Composer; direct: DirectDataBlocker }>();
    if (!composer) {
      if (dataPath?.path === 'direct' && !perVolumeData)
        direct = await openDirectData(loaded, blockerb, mapper);
      const d = direct;
      const c = new Composer({ mapper, blockerb: d ?? blockerb });
      // After the volume's I/O drained, the direct path forgets its cached fds (mapperd is about
      // to change the map, and may delete or replace objects they name) and makes its writes
      // durable: the change may be another client's snapshot, which flushes only blockerb, or a
      // hand-over to another host (direct-data.ts).
      mapper.onRecall = (name) => {
        const v = views.get(name);
        return v
          ? v.composer.frozen(name, () => v.direct.recalled())
          : c.frozen(name, async () => d?.recalled());
      };
      composer = c;
    }
    const rt: Runtime = {
      wiring: 'daemons',
      config: loaded.config,
      configPath: loaded.path,
      blockerm,
      // The endpoint's stop and flushes go through this one: with the direct path it flushes
      // the endpoint's own writes and blockerb's.
      blockerb: direct ?? blockerb,
      mapper,
      composer,
      identity,
      close: closeOnce(async ({ keepLocks }) => {
        try {
          if (!keepLocks) for (const v of mapper.openVolumes()) await composer.close(v);
        } finally {
          await Promise.allSettled([
            ...clients.map((c) => c.disconnect()),
            ...(direct ? [direct.close()] : []),
          ]);
          segment.close();
        }
      }),
    };
    clientsOf.set(rt, watched);
    if (dataPath) dataPaths.set(rt, { ...dataPath, blocker: direct });
    if (perVolumeData && dataPath) {
      volumeOpeners.set(rt, async (name) => {
        if (views.has(name))
          throw new ArchipelagoError('EBUSY', `"${name}" already has a runtime of its own in this process`, {
            details: { volume: name },
          });
        // This volume's client registers in this volume's lock alone.
        const registrar: ClientRegistrar = {
          get mapEpoch() {
            return mapper.mapEpoch;
          },
          openVolumes: () => (mapper.openVolumes().includes(name) ? [name] : []),
          addClient: (n, addr) => mapper.addClient(n, addr),
          removeClient: (n, addr) => mapper.removeClient(n, addr),
        };
        const tag = `volume ${name} ${randomBytes(6).toString('hex')}`;
        const vd = await openDirectData(loaded, blockerb, registrar, { connectionTag: tag });
        const vc = new Composer({ mapper, blockerb: vd });
        views.set(name, { composer: vc, direct: vd });
        const view: Runtime = {
          ...rt,
          blockerb: vd,
          composer: vc,
          close: closeOnce(async ({ keepLocks }) => {
            try {
              if (!keepLocks && mapper.openVolumes().includes(name)) await vc.close(name);
            } finally {
              if (views.get(name)?.direct === vd) views.delete(name);
              await (vd instanceof RadosDirectDataBlocker ? vd.retire() : vd.close()).catch(() => {});
            }
          }),
        };
        clientsOf.set(view, watched);
        dataPaths.set(view, { ...dataPath, blocker: vd });
        return view;
      });
    }
    return rt;
  } catch (e) {
    await Promise.allSettled([...clients.map((c) => c.disconnect()), ...(direct ? [direct.close()] : [])]);
    segment.close();
    throw e;
  }
}
