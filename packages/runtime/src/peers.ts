/**
 * What `archipelago start|stop|restart|status` do, as functions (the oclif commands only parse
 * and print). Roles come from `[PEERS] ROLES`; they start in `[PEERS] ORDER` (else ROLES order)
 * and stop in the reverse. `start` first checks that SEGMENT_SIZE holds what the peers need
 * (`segmentNeed`).
 *
 * The segment outlives the peers while other processes are on it (mapped volumes' endpoints,
 * running `vlmc` commands): their ports and the requests queued for the peers stay, and restarted
 * peers serve them (XSEG's design; see `restart`). Only a segment nobody else uses is destroyed.
 */
import { existsSync, unlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { ArchipelagoError, pidAlive, readPidfile } from '@archipelago/libxseg';
import { DEFAULT_BLOCKSIZE, MAP_IO_CHUNK } from '@archipelago/mapfile';
import { type PeerOptions, RADOS_CONNECT_TIMEOUT_MS } from '@archipelago/peer/options';
import { type LoadedConfig, rolesOf, startOrder } from './config.js';
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

/** The roles of `[PEERS] ROLES`, as written. */
export function configuredRoles(loaded: LoadedConfig): string[] {
  return rolesOf(loaded.config);
}

/**
 * The roles a command acts on, in start order (`[PEERS] ORDER`, else ROLES): one (checked
 * against ROLES) or all.
 */
export function selectRoles(loaded: LoadedConfig, role?: string): string[] {
  const all = startOrder(loaded.config);
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

// ------------------------------------------------------------------------------------------------
// SEGMENT_SIZE

/** The base of the guide's rule of thumb (MiB): `vlmc` commands, the gateway, bookkeeping. */
export const SEGMENT_BASE_MIB = 256;
/**
 * The request size the rule counts for vlmcd (bytes): the guide's 512 KiB. Its clients (mapped
 * volumes) send what their block layer sends: Linux's nbd splits at max_sectors_kb (1280 KiB by
 * default) and the NBD endpoint allows up to 32 MiB, but most requests are far smaller; the
 * heap use `archipelago status` shows is the check.
 */
export const VLMCD_REQUEST_BYTES = 512 * 1024;

const MiB = 1024 * 1024;

/** The largest request a peer of `type` handles, per request in flight (bytes); undefined: none. */
export function requestBytesOf(type: string): number | undefined {
  switch (type) {
    case 'file_blocker':
    case 'rados_blocker':
      return DEFAULT_BLOCKSIZE; // a whole object (an import's write, a copy-up's read)
    case 'mapperd':
      return MAP_IO_CHUNK; // map I/O to blockerm is split into such chunks
    case 'vlmcd':
      return VLMCD_REQUEST_BYTES;
    default:
      return undefined;
  }
}

export interface SegmentTerm {
  role: string;
  type: string;
  nrOps: number;
  /** The largest request the role handles (bytes). */
  requestBytes: number;
  /** nrOps × requestBytes, in MiB. */
  mib: number;
}

export interface SegmentNeed {
  /** What the configured peers need: base + the terms, rounded up (MiB). */
  needMiB: number;
  baseMiB: number;
  terms: SegmentTerm[];
  /** The computation, spelled out: `256 + 64 × 4 MiB (blockerb) + ... = 1280 MiB`. */
  formula: string;
}

const sizeText = (b: number) => (b % MiB === 0 ? `${b / MiB} MiB` : `${b / 1024} KiB`);

/**
 * The guide's rule of thumb ("Calculating SEGMENT_SIZE"), for the peers this configuration runs:
 * 256 MiB + Σ over the daemon roles of ROLES of nr_ops × the largest request of its type
 * (blockers 4 MiB, an object; mapperd 512 KiB, a map chunk; vlmcd 512 KiB). Each request in
 * flight holds its data in the segment's heap until it is answered.
 */
export function segmentNeed(loaded: LoadedConfig): SegmentNeed {
  const terms: SegmentTerm[] = [];
  for (const role of configuredRoles(loaded)) {
    if (!isDaemonRole(loaded, role)) continue;
    const s = sectionOf(loaded, role);
    const type = String(s.type ?? role);
    const requestBytes = requestBytesOf(type);
    const nrOps = typeof s.nr_ops === 'number' ? s.nr_ops : 0;
    if (requestBytes === undefined || nrOps <= 0) continue;
    terms.push({ role, type, nrOps, requestBytes, mib: (nrOps * requestBytes) / MiB });
  }
  const needMiB = SEGMENT_BASE_MIB + Math.ceil(terms.reduce((a, t) => a + t.mib, 0));
  const formula = `${SEGMENT_BASE_MIB}${terms.map((t) => ` + ${t.nrOps} × ${sizeText(t.requestBytes)} (${t.role})`).join('')} = ${needMiB} MiB`;
  return { needMiB, baseMiB: SEGMENT_BASE_MIB, terms, formula };
}

/** EINVAL_CONFIG when `[XSEG] SEGMENT_SIZE` is below what `segmentNeed` computes. */
export function checkSegmentSize(loaded: LoadedConfig): SegmentNeed {
  const need = segmentNeed(loaded);
  const size = loaded.config.XSEG.SEGMENT_SIZE;
  if (size < need.needMiB)
    throw new ArchipelagoError(
      'EINVAL_CONFIG',
      `${loaded.path}: XSEG.SEGMENT_SIZE is ${size} MiB; the peers need at least ${need.needMiB} MiB: base + nr_ops × the largest request of each peer: ${need.formula}. Raise SEGMENT_SIZE, or lower nr_ops`,
      { details: { file: loaded.path, keys: ['XSEG.SEGMENT_SIZE'], segmentSize: size, ...need } },
    );
  return need;
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

/** The segment's heap (bytes), as `archipelago status` shows it. */
export interface HeapUse {
  /** Bytes in use by requests' data (chunk headers included). */
  used: number;
  /** The heap's size (about SEGMENT_SIZE MiB). */
  size: number;
  free: number;
  /** The largest request data the heap can hold now. */
  largestFree: number;
  /** Requests allocated / in the pool. */
  requests: { held: number; total: number };
}

export interface StatusReport {
  config: string;
  segment: { name: string; exists: boolean; heap?: HeapUse };
  peers: RoleStatus[];
  mapped: MappedVolume[];
}

/** The segment, every peer of ROLES (or the one named) and the live mapped volumes. */
export async function status(loaded: LoadedConfig, role?: string): Promise<StatusReport> {
  const name = segmentName(loaded);
  const exists = existsSync(`/dev/shm/${name}`);
  const heap = exists ? await heapUse(loaded) : undefined;
  return {
    config: loaded.path,
    segment: { name, exists, ...(heap ? { heap } : {}) },
    peers: selectRoles(loaded, role).map((r) => roleStatus(loaded, r)),
    mapped: (await mappedVolumes(loaded)).filter((v) => v.alive),
  };
}

/** The heap use of the configuration's segment; undefined when it cannot be joined. */
export async function heapUse(loaded: LoadedConfig): Promise<HeapUse | undefined> {
  const { Segment } = await import('@archipelago/libxseg/segment');
  let seg: ReturnType<typeof Segment.join>;
  try {
    seg = Segment.join(segmentSpecOf(loaded));
  } catch {
    return undefined;
  }
  try {
    const r = seg.report();
    const { used, size, free, largestFree } = r.heap;
    const held = r.requests.total - r.requests.free;
    return { used, size, free, largestFree, requests: { held, total: r.requests.total } };
  } finally {
    seg.close();
  }
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

/**
 * Starts the roles in `[PEERS] ORDER` (else ROLES) order, after checking SEGMENT_SIZE
 * (`checkSegmentSize`); on a failure stops those it started, and rethrows.
 */
export async function start(
  loaded: LoadedConfig,
  role: string | undefined,
  say: Say,
): Promise<StartResult[]> {
  const roles = selectRoles(loaded, role);
  checkSegmentSize(loaded);
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
 * Stops the roles in reverse start order (`[PEERS] ORDER`, else ROLES); with no role, then destroys the segment, unless other
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
  // Refused before anything stops: a full restart would start nothing again.
  checkSegmentSize(loaded);
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
