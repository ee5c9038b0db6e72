/**
 * The configuration file → what each component takes: one function per section, used by both
 * wirings. The embedded runtime builds its blockers from `blockerOptions`, and `archipelago start`
 * hands `peerOptions` (which embeds the same `blockerOptions`) to each peer process, so a key
 * means the same thing in `vlmc` and in the daemons.
 */
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { ArchipelagoError } from '@archipelago/libxseg';
import {
  type BlockerPeerOptions,
  MAX_THREADS,
  type PeerOptions,
  peerEnvironment,
  type RadosBlockerPeerOptions,
} from '@archipelago/peer/options';
import {
  type Account,
  checkServiceDirs,
  isRoot,
  makeServiceDir,
  resolveAccount,
  type SwitchResult,
  switchAccount,
} from '@archipelago/peer/privileges';
import {
  type ArchipelagoConfig,
  type BlockerSection,
  configOf,
  isLoaded,
  type LoadedConfig,
} from './config.js';
import { logfileOf, outputOf, pidfileOf, runDirectory, sectionOf, segmentName } from './paths.js';

/** The default `unique_str`: the identity of a host that sets none is `<hostname>_embedded`. */
export const DEFAULT_UNIQUE_STR = 'embedded';

/** The roles whose sections may say `unique_str`. */
const IDENTITY_ROLES = ['blockerm', 'mapperd', 'blockerb'] as const;

/**
 * The lock-owner identity of this host, whatever the wiring: `<hostname>_<unique_str>`. Every
 * process of one host (an embedded `vlmc`, the `vlmc map` endpoint, mapperd, the gateway) takes
 * and recognises volume locks as this one identity, so a volume opened before `archipelago start`
 * can be used and closed after it, and the reverse. `unique_str` may be set in [blockerm],
 * [mapperd] or [blockerb]; where several set it, they must agree.
 */
export function hostIdentity(loaded: LoadedConfig | ArchipelagoConfig, host: string = hostname()): string {
  const config = configOf(loaded);
  const file = isLoaded(loaded) ? loaded.path : 'configuration';
  const set: Array<[string, string]> = [];
  for (const role of IDENTITY_ROLES) {
    const u = (config[role] as Record<string, unknown> | undefined)?.unique_str;
    if (typeof u === 'string' && u !== '') set.push([role, u]);
  }
  const first = set[0];
  const other = set.find(([, u]) => u !== first?.[1]);
  if (first && other) {
    throw new ArchipelagoError(
      'EINVAL_CONFIG',
      `${file}: ${first[0]}.unique_str (${first[1]}) and ${other[0]}.unique_str (${other[1]}) differ; a host has one identity: set the same value, or only one`,
      { details: { file, keys: [`${first[0]}.unique_str`, `${other[0]}.unique_str`] } },
    );
  }
  return `${host}_${first?.[1] ?? DEFAULT_UNIQUE_STR}`;
}

function bad(loaded: LoadedConfig, role: string, key: string, problem: string): ArchipelagoError {
  return new ArchipelagoError('EINVAL_CONFIG', `${loaded.path}: [${role}] ${key} ${problem}`, {
    details: { role, file: loaded.path, key },
  });
}

/**
 * What a `[blockerb]`/`[blockerm]` section (type file_blocker or rados_blocker) says, as the
 * options of the blocker it describes; the lock identity is the host's (`hostIdentity`).
 * Relative paths were made absolute by the loader.
 */
export function blockerOptions(loaded: LoadedConfig, role: string): BlockerPeerOptions {
  const s = sectionOf(loaded, role) as unknown as BlockerSection;
  const identity = hostIdentity(loaded);
  if (s.type === 'rados_blocker') return { ...radosOptions(loaded, role, s), identity };
  if (s.type !== 'file_blocker')
    throw bad(loaded, role, 'type', `is ${String(s.type)}: a blocker needs file_blocker or rados_blocker`);
  if (typeof s.archip_dir !== 'string' || s.archip_dir === '')
    throw bad(loaded, role, 'archip_dir', 'is required for file_blocker');
  return {
    type: 'file_blocker',
    dir: s.archip_dir,
    ...(s.lock_dir !== undefined ? { lockDir: s.lock_dir } : {}),
    ...(typeof s.fdcache === 'number' ? { fdcache: s.fdcache } : {}),
    ...(typeof s.direct === 'boolean' ? { direct: s.direct } : {}),
    ...(s.sync !== undefined ? { sync: s.sync } : {}),
    // Map blocks are rewritten (temp + rename) by other processes and hosts: never write an
    // entry through a cached fd of a replaced file.
    ...(role === 'blockerm' ? { revalidateWrites: true } : {}),
    identity,
  };
}

/** The rados_blocker part of a blocker section; `connect_timeout` and `op_timeout` are seconds. */
function radosOptions(loaded: LoadedConfig, role: string, s: BlockerSection): RadosBlockerPeerOptions {
  if (typeof s.pool !== 'string' || s.pool === '')
    throw bad(loaded, role, 'pool', 'is required for rados_blocker');
  const ms = (key: 'connect_timeout' | 'op_timeout'): number | undefined => {
    const v = s[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (key === 'connect_timeout' && v === 0))
      throw bad(
        loaded,
        role,
        key,
        `must be a number of seconds (${key === 'op_timeout' ? '0 = wait' : 'above 0'}), got ${String(v)}`,
      );
    return Math.max(key === 'connect_timeout' ? 1 : 0, Math.round(v * 1000));
  };
  const connectTimeoutMs = ms('connect_timeout');
  const opTimeoutMs = ms('op_timeout');
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

/** `[mapperd] lock_timeout`, in milliseconds: how long a write waits for another owner's lock. */
export function lockTimeoutMs(loaded: LoadedConfig | ArchipelagoConfig): number {
  return Math.round(configOf(loaded).mapperd.lock_timeout * 1000);
}

/** `[mapperd] lease_timeout`, in milliseconds: the lease volume locks are held under. */
export function leaseMs(loaded: LoadedConfig | ArchipelagoConfig): number {
  return Math.round((configOf(loaded).mapperd.lease_timeout ?? 15) * 1000);
}

/**
 * Where the host locks of a configuration live (same-host serialization): `<run dir>/host-locks`.
 * Every process of a host that uses the same blockers must use the same run directory.
 */
export function hostLockDir(loaded: LoadedConfig): string {
  return join(runDirectory(loaded), 'host-locks');
}

/**
 * The account the services of a configuration run as: `[ARCHIPELAGO] USER` and `GROUP`, looked up
 * (a missing one is EINVAL_CONFIG naming the key and the file). Null when there is no switch to
 * make: this process is not root (it cannot switch; the umask still applies), or the configuration
 * is the per-user default (`~/.local/share/archipelago`, or the gateway's `--data` directory),
 * which belongs to whoever runs it. USER = root is allowed: no switch then.
 */
export function serviceAccount(loaded: LoadedConfig | ArchipelagoConfig): Account | null {
  if (!isLoaded(loaded) || loaded.source === 'default' || !isRoot()) return null;
  const a = loaded.config.ARCHIPELAGO;
  return resolveAccount(a.USER, a.GROUP, `${loaded.path}: [ARCHIPELAGO]`);
}

/**
 * `serviceAccount` for a process that does not switch (an embedded command, making directories
 * the daemons will use): null instead of an error when USER or GROUP does not exist here.
 */
export function serviceAccountIfAny(loaded: LoadedConfig | ArchipelagoConfig): Account | null {
  try {
    return serviceAccount(loaded);
  } catch (e) {
    if (ArchipelagoError.is(e, 'EINVAL_CONFIG')) return null;
    throw e;
  }
}

/** A role's umask: its section's `umask`, else `[ARCHIPELAGO] UMASK`. */
export function umaskOf(loaded: LoadedConfig | ArchipelagoConfig, role?: string): number {
  const config = configOf(loaded);
  const own = role === undefined ? undefined : (config[role] as Record<string, unknown> | undefined)?.umask;
  return typeof own === 'number' ? own : config.ARCHIPELAGO.UMASK;
}

/**
 * A blocker section's `nr_threads` (1..1024): the size of the thread pool the blocker peer's file
 * I/O runs on. Other roles have no threads to size (as in the original: only blockers had).
 */
function nrThreadsOf(loaded: LoadedConfig, role: string, s: Record<string, unknown>): number | undefined {
  const n = s.nr_threads;
  if (n === undefined || (s.type !== 'file_blocker' && s.type !== 'rados_blocker')) return undefined;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_THREADS)
    throw bad(loaded, role, 'nr_threads', `must be an integer in 1..${MAX_THREADS}, got ${String(n)}`);
  return n;
}

/** The resolved options a peer process gets (as JSON in ARCHIPELAGO_PEER). */
export function peerOptions(loaded: LoadedConfig, role: string): PeerOptions {
  const s = sectionOf(loaded, role);
  const account = serviceAccount(loaded);
  const nrThreads = nrThreadsOf(loaded, role, s);
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
    portStart: s.portno_start as number,
    portEnd: s.portno_end as number,
    nrOps: s.nr_ops as number,
    pidfile: pidfileOf(loaded, role),
    logfile: logfileOf(loaded, role),
    logLevel: Math.max(0, Math.min(3, level)),
    ...(account ? { account } : {}),
    umask: umaskOf(loaded, role),
    ...(nrThreads !== undefined ? { nrThreads } : {}),
  };
  if (s.type === 'mapperd') {
    const m = loaded.config.mapperd;
    return {
      ...common,
      mapperd: {
        type: 'mapperd',
        blockerbPort: m.blockerb_port,
        blockermPort: m.blockerm_port,
        identity: hostIdentity(loaded),
        lockTimeoutMs: lockTimeoutMs(loaded),
        leaseMs: leaseMs(loaded),
        hostLockDir: hostLockDir(loaded),
        ...(m.gc_interval > 0 ? { gcIntervalMs: Math.round(m.gc_interval * 1000) } : {}),
        gcGraceMs: Math.round((m.gc_grace ?? 600) * 1000),
        trashTtlMs: Math.round((m.trash_ttl ?? 0) * 1000),
        sparseMaps: m.sparse_maps !== false,
      },
    };
  }
  if (s.type === 'vlmcd') {
    const v = loaded.config.vlmcd;
    return { ...common, vlmcd: { type: 'vlmcd', blockerPort: v.blocker_port, mapperPort: v.mapper_port } };
  }
  return { ...common, blocker: blockerOptions(loaded, role) };
}

/**
 * What `archipelago start` does for a role right before spawning it: its options, the environment
 * to spawn it with (`peerEnvironment`: the options, and `UV_THREADPOOL_SIZE` for `nr_threads`),
 * the role's umask applied here too (the log file is created by the starter), and the run
 * directory and the directories of its pidfile and log made (2770; owned by USER:GROUP as root).
 */
export function peerLaunch(
  loaded: LoadedConfig,
  role: string,
): { opts: PeerOptions; env: Record<string, string> } {
  const opts = peerOptions(loaded, role);
  process.umask(opts.umask ?? umaskOf(loaded, role));
  const account = opts.account ?? null;
  for (const dir of new Set([runDirectory(loaded), dirname(opts.pidfile), dirname(outputOf(loaded, role))]))
    makeServiceDir(dir, account);
  return { opts, env: peerEnvironment(opts) };
}

/** The directories a configuration's processes write into, with the key that names each. */
function dataDirs(loaded: LoadedConfig): Array<{ key: string; path: string }> {
  const dirs = [
    { key: '[ARCHIPELAGO] RUN_DIR', path: runDirectory(loaded) },
    { key: 'the host locks (<RUN_DIR>/host-locks)', path: hostLockDir(loaded) },
  ];
  for (const role of ['blockerb', 'blockerm']) {
    const s = loaded.config[role] as Partial<BlockerSection> | undefined;
    if (s?.type !== 'file_blocker') continue;
    if (s.archip_dir) dirs.push({ key: `[${role}] archip_dir`, path: s.archip_dir });
    if (s.lock_dir) dirs.push({ key: `[${role}] lock_dir`, path: s.lock_dir });
  }
  return dirs;
}

/**
 * A service run in-process (the gateway), once it has what needs root (its listening socket):
 * switches to `serviceAccount` (when root and the configuration names one), then checks that
 * the account can use the configuration's directories. Returns what happened.
 */
export function switchToServiceAccount(input: LoadedConfig | ArchipelagoConfig): SwitchResult | 'no account' {
  const account = serviceAccount(input);
  if (!account || !isLoaded(input)) return 'no account';
  const r = switchAccount(account);
  checkServiceDirs(dataDirs(input), account);
  return r;
}

/**
 * The directories a configuration's processes write into, made when missing (mode 2770; owned by
 * USER:GROUP when made as root and they exist): the run directory, the host locks, and each file
 * blocker's archip_dir and lock_dir. An embedded command run as root before the daemons are
 * started thus leaves directories the daemons (as USER) can use. Existing directories are left
 * as they are.
 */
export function makeDataDirs(loaded: LoadedConfig): void {
  let account: Account | null | undefined;
  for (const { path: d } of dataDirs(loaded)) {
    if (existsSync(d)) continue;
    account ??= serviceAccountIfAny(loaded); // looked up only when something is made
    makeServiceDir(d, account);
  }
}
