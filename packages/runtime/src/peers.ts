/**
 * What `archipelago start|stop|restart|status` do, as functions (the oclif commands only parse
 * and print). Roles come from `[PEERS] ROLES`, in that order for start and in reverse for stop.
 */
import { existsSync, unlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { ArchipelagoError, pidAlive, readPidfile } from '@archipelago/libxseg';
import { PEER_OPTIONS_ENV, type PeerOptions, RADOS_CONNECT_TIMEOUT_MS } from '@archipelago/peer/options';
import type { LoadedConfig } from './config.js';
import { RunState } from './endpoint/runstate.js';
import { outputOf, pidfileOf, runDirectory, sectionOf, segmentName } from './paths.js';
import { peerOptions } from './sections.js';
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
  const opts = peerOptions(loaded, role);
  const { pid } = await spawnDetached({
    entry: peerMain(),
    env: { [PEER_OPTIONS_ENV]: JSON.stringify(opts) },
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
  result: 'stopped' | 'not running' | 'stale pidfile removed' | 'embedded';
  pid?: number;
}

/** SIGTERMs one peer and waits (up to 15 s) for it to remove its pidfile and exit. */
export async function stopRole(loaded: LoadedConfig, role: string): Promise<StopResult> {
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
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  while (pidAlive(pid)) {
    if (Date.now() > deadline)
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
  return { role, result: 'stopped', pid };
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

/** Stops the roles in reverse ROLES order; with no role, then destroys the segment. */
export async function stop(
  loaded: LoadedConfig,
  role: string | undefined,
  opts: { force?: boolean },
  say: Say,
): Promise<{ peers: StopResult[]; segmentDestroyed: boolean }> {
  const roles = selectRoles(loaded, role).reverse();
  const mapped = (await mappedVolumes(loaded)).filter((v) => v.alive);
  if (mapped.length > 0 && !opts.force)
    throw new ArchipelagoError(
      'EBUSY',
      `volumes are mapped: ${mapped.map((v) => v.volume).join(', ')}; unmap them first, or use -f`,
      { details: { mapped: mapped.map((v) => v.volume) } },
    );
  const peers: StopResult[] = [];
  for (const r of roles) {
    const res = await stopRole(loaded, r);
    peers.push(res);
    if (res.result !== 'embedded') say(`${r}: ${res.result}${res.pid ? ` (pid ${res.pid})` : ''}`);
  }
  let segmentDestroyed = false;
  if (role === undefined) {
    const name = segmentName(loaded);
    if (existsSync(`/dev/shm/${name}`)) {
      const { Segment } = await import('@archipelago/libxseg/segment');
      Segment.destroy(name);
      segmentDestroyed = true;
      say(`segment ${name}: destroyed`);
    }
  }
  return { peers, segmentDestroyed };
}
