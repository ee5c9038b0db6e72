/**
 * The configuration file → what each component takes: one function per section, used by both
 * wirings. The embedded runtime builds its blockers from `blockerOptions`, and `archipelago start`
 * hands `peerOptions` (which embeds the same `blockerOptions`) to each peer process, so a key
 * means the same thing in `vlmc` and in the daemons.
 */
import { hostname } from 'node:os';
import { join } from 'node:path';
import { ArchipelagoError } from '@archipelago/libxseg';
import type { BlockerPeerOptions, PeerOptions, RadosBlockerPeerOptions } from '@archipelago/peer/options';
import {
  type ArchipelagoConfig,
  type BlockerSection,
  configOf,
  isLoaded,
  type LoadedConfig,
} from './config.js';
import { logfileOf, pidfileOf, runDirectory, sectionOf, segmentName } from './paths.js';

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

/** The resolved options a peer process gets (as JSON in ARCHIPELAGO_PEER). */
export function peerOptions(loaded: LoadedConfig, role: string): PeerOptions {
  const s = sectionOf(loaded, role);
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
      },
    };
  }
  if (s.type === 'vlmcd') {
    const v = loaded.config.vlmcd;
    return { ...common, vlmcd: { type: 'vlmcd', blockerPort: v.blocker_port, mapperPort: v.mapper_port } };
  }
  return { ...common, blocker: blockerOptions(loaded, role) };
}
