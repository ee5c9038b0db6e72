/**
 * What `archipelago start|stop|restart|status` do, as functions (the oclif commands only parse
 * and print). Roles come from `[PEERS] ROLES`, in that order for start and in reverse for stop.
 *
 * The segment outlives the peers while other processes are on it (mapped volumes' endpoints,
 * running `vlmc` commands): their ports and the requests queued for the peers stay, and restarted
 * peers serve them (XSEG's design; see `restart`). Only a segment nobody else uses is destroyed.
 */
import { existsSync, unlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { ArchipelagoError, pidAlive, readPidfile } from '@archipelago/libxseg';
import { type PeerOptions, RADOS_CONNECT_TIMEOUT_MS } from '@archipelago/peer/options';
import type { LoadedConfig } from './config.js';
import { RunState } from './endpoint/runstate.js';
import { outputOf, pidfileOf, runDirectory, sectionOf, segmentName, segmentSpecOf } from './paths.js';
import { peerLaunch } from './sections.js';
import { spawnDetached } from './spawn.js';

/** The peer process's entry script (built): `node peerMain()` with ARCHIPELAGO_PEER set. */
export function peerMain(): string {
  return createRequire(import.meta.url).resolve('@archipelago/peer/main');
}

/** Roles that run as daemons. */
export const DAEMON_ROLES = new Set(['blockerb', 'blockerm', 'mapperd', 'vlmcd']);
/** Roles of the original that run embedded (none left). */
export const EMBEDDED_ROLES = new Set<string>();

export const START_TIMEOUT_MS = 3_000;
export const STOP_TIMEOUT_MS = 15_000;
/** After a SIGKILL (`restart -f` of a peer that did not stop), how long to wait for it to go. */
export const KILL_TIMEOUT_MS = 5_000;

export type Say = (line: string) => void;

export function configuredRoles(loaded: LoadedConfig): string[] {
  return String(loaded.config.PEERS.ROLES ?? '')
    .split(/[\s,]+/)
    .filter((r) => r !== '');
}

/** The roles a command acts on: one (checked against ROLES) or all, in ROLES order. */
export function selectRoles(loaded: LoadedConfig, role?: string): string[] {
  const all = configuredRoles(loaded);
  if (role === undefined) return all;
  if (!all.includes(role))
    throw new ArchipelagoError('EINVAL', `unknown peer "${role}": [PEERS] ROLES is "${all.join(' ')}"`, {
      details: { role, roles: all },
    });
  return [role];
}

export function isDaemonRole(loaded: LoadedConfig, role: string): boolean {
  if (EMBEDDED_ROLES.has(role)) return false;
  const t = sectionOf(loaded, role).type;
  return (
    t === 'file_blocker' ||
    t === 'rados_blocker' ||
    t === 'mapperd' ||
    t === 'vlmcd' ||
    DAEMON_ROLES.has(role)
  );
}

/**
 * How long `start` waits for a role's pidfile: 3 s, plus the connect timeout of a rados_blocker
 * (the peer connects before it binds its ports, and fails by itself when that times out).
 */
export function startTimeoutOf(opts: PeerOptions): number {
  const b = opts.blocker;
  if (b?.type !== 'rados_blocker') return START_TIMEOUT_MS;
  return START_TIMEOUT_MS + (b.connectTimeoutMs ?? RADOS_CONNECT_TIMEOUT_MS);
}

export interface MappedVolume {
  volume: string;
  pid: number;
  alive: boolean;
}

/** Volumes in the run-state of `vlmc map` (`<RUN_DIR>/<vol>.json`); `alive` when their pid runs. */
export async function mappedVolumes(loaded: LoadedConfig): Promise<MappedVolume[]> {
  const all = await new RunState(runDirectory(loaded)).list();
  return all.map((e) => ({ volume: e.volume, pid: e.pid, alive: e.alive }));
}

export interface RoleStatus {
  role: string;
  state: 'running' | 'not running' | 'stale pidfile' | 'embedded';
  pid?: number;
  pidfile?: string;
  note?: string;
}

const NOT_IMPLEMENTED = 'not a daemon role: runs embedded (in vlmc and the NBD endpoint)';

export function roleStatus(loaded: LoadedConfig, role: string): RoleStatus {
  if (!isDaemonRole(loaded, role)) return { role, state: 'embedded', note: NOT_IMPLEMENTED };
  const pidfile = pidfileOf(loaded, role);
  const st = readPidfile(pidfile);
  if (st.state === 'running') return { role, state: 'running', pid: st.pid, pidfile };
  if (st.state === 'stale')
    return { role, state: 'stale pidfile', ...(st.pid !== null ? { pid: st.pid } : {}), pidfile };
  return { role, state: 'not running', pidfile };
}

export interface StatusReport {
  config: string;
  segment: { name: string; exists: boolean };
  peers: RoleStatus[];
  mapped: MappedVolume[];
}

/** The segment, every peer of ROLES (or the one named) and the live mapped volumes. */
export async function status(loaded: LoadedConfig, role?: string): Promise<StatusReport> {
  const name = segmentName(loaded);
  return {
    config: loaded.path,
    segment: { name, exists: existsSync(`/dev/shm/${name}`) },
    peers: selectRoles(loaded, role).map((r) => roleStatus(loaded, r)),
    mapped: (await mappedVolumes(loaded)).filter((v) => v.alive),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Spawns one peer and waits for its pidfile (3 s; a rados_blocker also gets its connect timeout). */
export async function startRole(loaded: LoadedConfig, role: string): Promise<{ role: string; pid: number }> {
  const { opts, env } = peerLaunch(loaded, role);
  const { pid } = await spawnDetached({
    entry: peerMain(),
    env,
    logFile: outputOf(loaded, role),
    seeLog: opts.logfile,
    readiness: {
      kind: 'poll',
      check: (pid) => {
        const st = readPidfile(opts.pidfile);
        return st.state === 'running' && st.pid === pid ? pid : undefined;
      },
    },
    timeoutMs: startTimeoutOf(opts),
    what: role,
  });
  return { role, pid };
}

export interface StopResult {
  role: string;
  result: 'stopped' | 'killed' | 'not running' | 'stale pidfile removed' | 'embedded';
  pid?: number;
}

/**
 * SIGTERMs one peer and waits (up to 15 s) for it to remove its pidfile and exit. With `kill`, a
 * peer still running then is killed (SIGKILL): the requests it had taken are failed back when its
 * port is bound again (the next start), and its clients send them again.
 */
export async function stopRole(
  loaded: LoadedConfig,
  role: string,
  opts: { kill?: boolean } = {},
): Promise<StopResult> {
  if (!isDaemonRole(loaded, role)) return { role, result: 'embedded' };
  const pidfile = pidfileOf(loaded, role);
  const st = readPidfile(pidfile);
  if (st.state === 'absent') return { role, result: 'not running' };
  if (st.state === 'stale') {
    try {
      unlinkSync(pidfile);
    } catch {
      // gone
    }
    return { role, result: 'stale pidfile removed', ...(st.pid !== null ? { pid: st.pid } : {}) };
  }
  const pid = st.pid;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    // exited meanwhile
  }
  let deadline = Date.now() + STOP_TIMEOUT_MS;
  let killed = false;
  while (pidAlive(pid)) {
    if (Date.now() > deadline && opts.kill && !killed) {
      killed = true;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // exited meanwhile
      }
      deadline = Date.now() + KILL_TIMEOUT_MS;
    } else if (Date.now() > deadline)
      throw new ArchipelagoError(
        'ETIMEDOUT',
        `${role} (pid ${pid}) did not stop within ${STOP_TIMEOUT_MS / 1000} s`,
        {
          details: { role, pid, pidfile },
        },
      );
    await sleep(25);
  }
  if (readPidfile(pidfile).state !== 'absent') {
    try {
      unlinkSync(pidfile);
    } catch {
      // gone
    }
  }
  return { role, result: killed ? 'killed' : 'stopped', pid };
}

export interface StartResult {
  role: string;
  result: 'started' | 'embedded';
  pid?: number;
}

/** Starts the roles in ROLES order; on a failure stops those it started, and rethrows. */
export async function start(
  loaded: LoadedConfig,
  role: string | undefined,
  say: Say,
): Promise<StartResult[]> {
  const roles = selectRoles(loaded, role);
  for (const r of roles) {
    if (!isDaemonRole(loaded, r)) continue;
    const st = roleStatus(loaded, r);
    if (st.state === 'running')
      throw new ArchipelagoError(
        'EBUSY',
        `${r} is already running (pid ${st.pid}); use restart, or stop it first`,
        {
          details: { role: r, pid: st.pid },
        },
      );
  }
  const out: StartResult[] = [];
  const started: string[] = [];
  for (const r of roles) {
    if (!isDaemonRole(loaded, r)) {
      say(`${r}: ${NOT_IMPLEMENTED}; skipped`);
      out.push({ role: r, result: 'embedded' });
      continue;
    }
    try {
      const { pid } = await startRole(loaded, r);
      started.push(r);
      say(`${r}: started (pid ${pid})`);
      out.push({ role: r, result: 'started', pid });
    } catch (e) {
      for (const s of started.reverse()) {
        try {
          await stopRole(loaded, s);
          say(`${s}: stopped again`);
        } catch {
          // report the first error
        }
      }
      throw e;
    }
  }
  return out;
}

/** A live process other than the peers with a port on the segment (an endpoint, a `vlmc` command). */
export interface SegmentClient {
  pid: number;
  ports: number[];
}

/**
 * The processes other than the running peers that have ports on the segment (none when there is
 * no segment). Ports of dead processes do not count.
 */
export async function segmentClients(loaded: LoadedConfig): Promise<SegmentClient[]> {
  if (!existsSync(`/dev/shm/${segmentName(loaded)}`)) return [];
  const peers = new Set(
    configuredRoles(loaded)
      .map((r) => readPidfile(pidfileOf(loaded, r)))
      .flatMap((st) => (st.state === 'running' ? [st.pid] : [])),
  );
  const { Segment } = await import('@archipelago/libxseg/segment');
  let seg: ReturnType<typeof Segment.join>;
  try {
    seg = Segment.join(segmentSpecOf(loaded));
  } catch {
    return [];
  }
  try {
    const by = new Map<number, number[]>();
    for (const p of seg.report().ports) {
      if (!p.bound || !p.ownerAlive || peers.has(p.ownerPid) || p.ownerPid === process.pid) continue;
      by.set(p.ownerPid, [...(by.get(p.ownerPid) ?? []), p.port]);
    }
    return [...by].map(([pid, ports]) => ({ pid, ports }));
  } finally {
    seg.close();
  }
}

/** Destroys the segment unless other processes still use it; says which. */
async function retireSegment(loaded: LoadedConfig, say: Say): Promise<'destroyed' | 'kept' | 'none'> {
  const name = segmentName(loaded);
  if (!existsSync(`/dev/shm/${name}`)) return 'none';
  const clients = await segmentClients(loaded);
  if (clients.length > 0) {
    say(
      `segment ${name}: kept: in use by ${clients.length === 1 ? 'process' : 'processes'} ${clients.map((c) => c.pid).join(', ')} (mapped volumes, vlmc commands); their requests wait for the peers ("archipelago start"), up to 30 s`,
    );
    return 'kept';
  }
  const { Segment } = await import('@archipelago/libxseg/segment');
  Segment.destroy(name);
  say(`segment ${name}: destroyed`);
  return 'destroyed';
}

/**
 * Stops the roles in reverse ROLES order; with no role, then destroys the segment, unless other
 * processes still use it (it is kept for them, and the next `start` joins it). Refused (EBUSY)
 * while volumes are mapped, unless `force`: their I/O then waits for the peers to be started again
 * (failing after 30 s).
 */
export async function stop(
  loaded: LoadedConfig,
  role: string | undefined,
  opts: { force?: boolean },
  say: Say,
): Promise<{ peers: StopResult[]; segmentDestroyed: boolean; segmentKept?: boolean }> {
  const roles = selectRoles(loaded, role).reverse();
  const mapped = (await mappedVolumes(loaded)).filter((v) => v.alive);
  if (mapped.length > 0 && !opts.force)
    throw new ArchipelagoError(
      'EBUSY',
      `volumes are mapped: ${mapped.map((v) => v.volume).join(', ')}; unmap them first, or use "restart" (the mapped volumes keep running), or -f (their I/O waits until the peers are started again)`,
      { details: { mapped: mapped.map((v) => v.volume) } },
    );
  const peers: StopResult[] = [];
  for (const r of roles) {
    const res = await stopRole(loaded, r);
    peers.push(res);
    if (res.result !== 'embedded') say(`${r}: ${res.result}${res.pid ? ` (pid ${res.pid})` : ''}`);
  }
  if (role !== undefined) return { peers, segmentDestroyed: false };
  const seg = await retireSegment(loaded, say);
  return { peers, segmentDestroyed: seg === 'destroyed', ...(seg === 'kept' ? { segmentKept: true } : {}) };
}

export interface RestartResult {
  /**
   * `rolling`: one peer at a time, stopped and started again, on the segment the clients use;
   * `full`: all stopped, the segment destroyed (nobody else used it), all started again.
   */
  mode: 'rolling' | 'full';
  stopped: { peers: StopResult[]; segmentDestroyed: boolean };
  started: StartResult[];
  /** Per role, how long it was not serving (ms): from its stop to its successor's pidfile. */
  downMs: Record<string, number>;
}

/**
 * Restarts all peers (or one) and never refuses for mapped volumes. While other processes use
 * the segment (mapped volumes, `vlmc` commands), the peers are restarted one at a time in ROLES
 * order on that segment: each stops (draining what it had taken; what comes meanwhile queues for
 * its successor) and starts again, and the clients' calls wait in its queue meanwhile, so a
 * mapped volume's client sees a short stall per peer and no error. Otherwise the peers are all
 * stopped, the segment destroyed and everything started fresh. `kill`: a peer that does not stop
 * within 15 s is killed (its requests are failed back when its successor binds its port, and sent
 * again by their clients).
 */
export async function restart(
  loaded: LoadedConfig,
  role: string | undefined,
  opts: { kill?: boolean },
  say: Say,
): Promise<RestartResult> {
  const roles = selectRoles(loaded, role);
  const inUse = role !== undefined || (await segmentClients(loaded)).length > 0;
  const downMs: Record<string, number> = {};
  if (!inUse) {
    const peers: StopResult[] = [];
    for (const r of [...roles].reverse()) {
      const res = await stopRole(loaded, r, opts);
      peers.push(res);
      if (res.result !== 'embedded') say(`${r}: ${res.result}${res.pid ? ` (pid ${res.pid})` : ''}`);
    }
    // Someone may have joined meanwhile: then the segment stays for them.
    const seg = await retireSegment(loaded, say);
    const started = await start(loaded, role, say);
    return { mode: 'full', stopped: { peers, segmentDestroyed: seg === 'destroyed' }, started, downMs };
  }
  const peers: StopResult[] = [];
  const started: StartResult[] = [];
  for (const r of roles) {
    if (!isDaemonRole(loaded, r)) {
      started.push({ role: r, result: 'embedded' });
      continue;
    }
    const t0 = Date.now();
    const res = await stopRole(loaded, r, opts);
    peers.push(res);
    let pid: number;
    try {
      ({ pid } = await startRole(loaded, r));
    } catch (e) {
      say(`${r}: ${res.result}, and did not start again; its clients wait for it (up to 30 s)`);
      throw e;
    }
    downMs[r] = Date.now() - t0;
    started.push({ role: r, result: 'started', pid });
    const was = res.pid !== undefined ? `pid ${res.pid} ${res.result}` : res.result;
    say(`${r}: restarted (${was}, now pid ${pid}; ${downMs[r]} ms)`);
  }
  return { mode: 'rolling', stopped: { peers, segmentDestroyed: false }, started, downMs };
}
