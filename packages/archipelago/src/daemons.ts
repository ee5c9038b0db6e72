/**
 * What `archipelago start|stop|restart|status` do, as functions (the oclif commands only parse
 * and print). Roles come from `[PEERS] ROLES`, in that order for start and in reverse for stop.
 */
import { spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  statSync,
  unlinkSync,
} from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import {
  type BlockerSection,
  type LoadedConfig,
  pidfileOf,
  runDirectory,
  sectionOf,
  segmentName,
} from '@archipelago/cli';
import { ArchipelagoError } from '@archipelago/libxseg';
import {
  PEER_MAIN,
  PEER_OPTIONS_ENV,
  type PeerOptions,
  pidAlive,
  RADOS_CONNECT_TIMEOUT_MS,
  type RadosBlockerPeerOptions,
  readPidfile,
  syslogSocketOf,
} from '@archipelago/peer';

export { pidfileOf, segmentName } from '@archipelago/cli';

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

const section = sectionOf;

export function isDaemonRole(loaded: LoadedConfig, role: string): boolean {
  if (EMBEDDED_ROLES.has(role)) return false;
  const t = section(loaded, role).type;
  return (
    t === 'file_blocker' ||
    t === 'rados_blocker' ||
    t === 'mapperd' ||
    t === 'vlmcd' ||
    DAEMON_ROLES.has(role)
  );
}

const abs = (loaded: LoadedConfig, p: string) => resolve(dirname(loaded.path), p);

/**
 * The volume-lock identity of mapperd: `<hostname>_<unique_str>_mapperd` (unique_str of
 * [mapperd], else of [blockerm], else none). It differs from an embedded `vlmc`'s
 * (`<hostname>_<unique_str or embedded>`), so the lock keeps the two wirings apart.
 */
export function mapperdIdentity(loaded: LoadedConfig): string {
  const m = loaded.config.mapperd as unknown as Record<string, unknown>;
  const u = [m.unique_str, loaded.config.blockerm.unique_str].find((v) => typeof v === 'string' && v !== '');
  return `${hostname()}_${u === undefined ? '' : `${String(u)}_`}mapperd`;
}

/** The log destination of a role: its `logfile` (absolute), `syslog[:socket]`, or `<run dir>/<role>.log`. */
export function logfileOf(loaded: LoadedConfig, role: string): string {
  const s = section(loaded, role);
  if (typeof s.logfile === 'string' && s.logfile !== '')
    return syslogSocketOf(s.logfile) !== null ? s.logfile : abs(loaded, s.logfile);
  return join(runDirectory(loaded), `${role}.log`);
}

/** Where a peer's stdout/stderr go: its logfile, or `<run dir>/<role>.log` when it logs to syslog. */
export function outputOf(loaded: LoadedConfig, role: string): string {
  const l = logfileOf(loaded, role);
  return syslogSocketOf(l) === null ? l : join(runDirectory(loaded), `${role}.log`);
}

/** The resolved options a peer process gets (as JSON in ARCHIPELAGO_PEER). */
export function peerOptions(loaded: LoadedConfig, role: string): PeerOptions {
  const s = section(loaded, role) as unknown as BlockerSection & Record<string, unknown>;
  const x = loaded.config.XSEG;
  const level = typeof s.log_level === 'number' ? s.log_level : 2;
  const common = {
    role,
    segment: {
      name: segmentName(loaded),
      dynports: x.SEGMENT_DYNPORTS,
      ports: x.SEGMENT_PORTS,
      sizeMiB: x.SEGMENT_SIZE,
    },
    portStart: s.portno_start,
    portEnd: s.portno_end,
    nrOps: s.nr_ops,
    pidfile: pidfileOf(loaded, role),
    logfile: logfileOf(loaded, role),
    logLevel: Math.max(0, Math.min(3, level)),
  };
  if ((s.type as string) === 'mapperd') {
    const m = loaded.config.mapperd;
    return {
      ...common,
      mapperd: {
        type: 'mapperd',
        blockerbPort: m.blockerb_port,
        blockermPort: m.blockerm_port,
        identity: mapperdIdentity(loaded),
        lockTimeoutMs: Math.round(m.lock_timeout * 1000),
      },
    };
  }
  if ((s.type as string) === 'vlmcd') {
    const v = loaded.config.vlmcd;
    return { ...common, vlmcd: { type: 'vlmcd', blockerPort: v.blocker_port, mapperPort: v.mapper_port } };
  }
  const identity =
    s.unique_str !== undefined && s.unique_str !== ''
      ? { identity: `${hostname()}_${String(s.unique_str)}` }
      : {};
  if (s.type === 'rados_blocker')
    return { ...common, blocker: { ...radosOptions(loaded, role, s), ...identity } };
  if (s.type !== 'file_blocker')
    throw new ArchipelagoError(
      'EINVAL_CONFIG',
      `${loaded.path}: [${role}] type ${String(s.type)}: a blocker role needs type file_blocker or rados_blocker`,
      { details: { role, file: loaded.path, key: 'type' } },
    );
  if (typeof s.archip_dir !== 'string' || s.archip_dir === '')
    throw new ArchipelagoError(
      'EINVAL_CONFIG',
      `${loaded.path}: [${role}] archip_dir is required for file_blocker`,
    );
  return {
    ...common,
    blocker: {
      type: 'file_blocker',
      dir: s.archip_dir,
      ...(s.lock_dir !== undefined ? { lockDir: s.lock_dir } : {}),
      ...(typeof s.fdcache === 'number' ? { fdcache: s.fdcache } : {}),
      ...(typeof s.direct === 'boolean' ? { direct: s.direct } : {}),
      ...(s.sync !== undefined ? { sync: s.sync } : {}),
      ...identity,
    },
  };
}

/**
 * The rados_blocker peer options of a blocker section: the keys the embedded `vlmc` reads
 * (`pool`, `namespace`, `ceph_conf`, `cephx_id`, `keyring`, `connect_timeout` and `op_timeout`
 * in seconds, `sync`); `ceph_conf` and `keyring` are already absolute (the loader resolves them).
 */
export function radosOptions(loaded: LoadedConfig, role: string, s: BlockerSection): RadosBlockerPeerOptions {
  const bad = (key: string, problem: string) =>
    new ArchipelagoError('EINVAL_CONFIG', `${loaded.path}: [${role}] ${key} ${problem}`, {
      details: { role, file: loaded.path, key },
    });
  if (typeof s.pool !== 'string' || s.pool === '') throw bad('pool', 'is required for rados_blocker');
  // In seconds, as the embedded vlmc reads them (the schema has checked them already).
  const ms = (key: 'connect_timeout' | 'op_timeout', min: number): number | undefined => {
    const v = s[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || (key === 'connect_timeout' && v === 0))
      throw bad(
        key,
        `must be a number of seconds (${key === 'op_timeout' ? '0 = wait' : 'above 0'}), got ${String(v)}`,
      );
    return Math.max(key === 'connect_timeout' ? 1 : 0, Math.round(v * 1000));
  };
  const connectTimeoutMs = ms('connect_timeout', 0);
  const opTimeoutMs = ms('op_timeout', 0);
  return {
    type: 'rados_blocker',
    pool: s.pool,
    ...(s.namespace !== undefined ? { namespace: s.namespace } : {}),
    ...(s.ceph_conf !== undefined ? { cephConf: s.ceph_conf } : {}),
    ...(s.cephx_id !== undefined ? { cephxId: s.cephx_id } : {}),
    ...(s.keyring !== undefined ? { keyring: s.keyring } : {}),
    ...(connectTimeoutMs !== undefined ? { connectTimeoutMs } : {}),
    ...(opTimeoutMs !== undefined ? { opTimeoutMs } : {}),
    ...(s.sync !== undefined ? { sync: s.sync } : {}),
  };
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

/** Volumes in the vlmc run-state (`<RUN_DIR>/<vol>.json`); `alive` when their pid runs. */
export function mappedVolumes(loaded: LoadedConfig): MappedVolume[] {
  const dir = runDirectory(loaded);
  let names: string[];
  try {
    names = readdirSync(dir).filter((f) => f.endsWith('.json'));
  } catch {
    return [];
  }
  const out: MappedVolume[] = [];
  for (const f of names.sort()) {
    try {
      const o = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { volume?: unknown; pid?: unknown };
      const pid = typeof o.pid === 'number' ? o.pid : 0;
      const volume = typeof o.volume === 'string' ? o.volume : f.slice(0, -'.json'.length);
      out.push({ volume, pid, alive: pidAlive(pid) });
    } catch {
      // a file being written, or not ours
    }
  }
  return out;
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

export function status(loaded: LoadedConfig): StatusReport {
  const name = segmentName(loaded);
  return {
    config: loaded.path,
    segment: { name, exists: existsSync(`/dev/shm/${name}`) },
    peers: configuredRoles(loaded).map((r) => roleStatus(loaded, r)),
    mapped: mappedVolumes(loaded).filter((v) => v.alive),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The new part of a log file since `from`, for an error message. */
function logTail(path: string, from: number): string {
  try {
    const buf = readFileSync(path);
    const text = buf.subarray(Math.min(from, buf.length)).toString('utf8');
    const lines = text.split('\n').filter((l) => l.trim() !== '');
    const plain = lines.filter((l) => !l.startsWith('{'));
    const last = plain[plain.length - 1];
    if (last !== undefined) return last;
    for (let i = lines.length - 1; i >= 0; i--) {
      try {
        const o = JSON.parse(lines[i] as string) as { level?: number; msg?: string };
        if ((o.level ?? 0) >= 50 && o.msg) return o.msg;
      } catch {
        // not JSON
      }
    }
  } catch {
    // no log
  }
  return '';
}

/** Spawns one peer and waits for its pidfile (3 s; a rados_blocker also gets its connect timeout). */
export async function startRole(loaded: LoadedConfig, role: string): Promise<{ role: string; pid: number }> {
  const opts = peerOptions(loaded, role);
  const output = outputOf(loaded, role);
  mkdirSync(dirname(output), { recursive: true });
  mkdirSync(dirname(opts.pidfile), { recursive: true });
  let from = 0;
  try {
    from = statSync(output).size;
  } catch {
    // new log
  }
  const fd = openSync(output, 'a');
  let exited: { code: number | null; signal: string | null } | undefined;
  const child = spawn(process.execPath, [PEER_MAIN], {
    detached: true,
    stdio: ['ignore', fd, fd],
    env: { ...process.env, [PEER_OPTIONS_ENV]: JSON.stringify(opts) },
  });
  closeSync(fd);
  child.on('exit', (code, signal) => {
    exited = { code, signal };
  });
  const pid = child.pid;
  child.unref();
  if (pid === undefined) throw new ArchipelagoError('EIO', `${role}: could not spawn the peer process`);
  const timeoutMs = startTimeoutOf(opts);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const st = readPidfile(opts.pidfile);
    if (st.state === 'running' && st.pid === pid) return { role, pid };
    if (exited) {
      const why = logTail(output, from) || logTail(opts.logfile, from);
      throw new ArchipelagoError(
        'EIO',
        `${role} failed to start (exit ${exited.code ?? exited.signal})${why ? `: ${why}` : ''}; see ${output}`,
        { details: { role, logfile: opts.logfile } },
      );
    }
    if (Date.now() > deadline) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
      throw new ArchipelagoError(
        'ETIMEDOUT',
        `${role} did not create its pidfile ${opts.pidfile} within ${timeoutMs / 1000} s; see ${opts.logfile}`,
        {
          details: { role, pidfile: opts.pidfile },
        },
      );
    }
    await sleep(25);
  }
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
  const mapped = mappedVolumes(loaded).filter((v) => v.alive);
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
