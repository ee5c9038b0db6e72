/**
 * What a peer process needs, resolved by whoever starts it (the `archipelago` tool reads the
 * configuration file and passes this as JSON in the ARCHIPELAGO_PEER environment variable). The
 * peer package never reads the configuration file itself: `@archipelago/cli` sits above it.
 */
import { ArchipelagoError } from '@archipelago/libxseg';
import type { Account } from './privileges.js';

/** The environment variable that bounds how long any client waits for a peer that is not running. */
export const PEER_DOWN_TIMEOUT_ENV = 'ARCHIPELAGO_PEER_DOWN_TIMEOUT_MS';

/** `ARCHIPELAGO_PEER_DOWN_TIMEOUT_MS` when it is a whole number of ms (0: for ever), else undefined. */
export function envPeerDownTimeoutMs(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const v = env[PEER_DOWN_TIMEOUT_ENV];
  const n = v === undefined || v === '' ? Number.NaN : Number(v);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/** The environment variable carrying `PeerOptions` as JSON. */
export const PEER_OPTIONS_ENV = 'ARCHIPELAGO_PEER';

export interface SegmentOptions {
  /** Segment name (default "archipelago"). */
  name: string;
  /** SEGMENT_DYNPORTS: ports below it are static. */
  dynports: number;
  /** SEGMENT_PORTS. */
  ports: number;
  /** SEGMENT_SIZE, MiB. */
  sizeMiB: number;
}

export interface FileBlockerPeerOptions {
  type: 'file_blocker';
  dir: string;
  lockDir?: string;
  fdcache?: number;
  direct?: boolean;
  /**
   * `always` (default): a WRITE is answered once fdatasync'ed. `flush`: write-back, durable at the
   * next FLUSH, or at once for a WRITE flagged XF_FUA.
   */
  sync?: 'always' | 'flush';
  /** Identity of locks taken without an identity (`<hostname>_<unique_str>`). */
  identity?: string;
  /** Reopen a cached fd whose file was replaced before writing through it (blockerm: map blocks). */
  revalidateWrites?: boolean;
}

/** A blocker peer over a Ceph pool (`@archipelago/blocker-rados`); the keys mirror the config's. */
export interface RadosBlockerPeerOptions {
  type: 'rados_blocker';
  /** The pool (must exist): blockerm's holds maps and locks, blockerb's data objects. */
  pool: string;
  /** RADOS namespace inside the pool (default none). */
  namespace?: string;
  /** ceph.conf path (absolute); default: librados' search (CEPH_CONF, /etc/ceph/ceph.conf). */
  cephConf?: string;
  /** cephx client id without "client." (default "admin"). */
  cephxId?: string;
  /** Keyring path, when ceph.conf names none. */
  keyring?: string;
  /** The peer fails to start when the cluster is not reached within this (default 10000 ms). */
  connectTimeoutMs?: number;
  /** OSD operations fail with ETIMEDOUT after this; 0 (default) waits for the cluster. */
  opTimeoutMs?: number;
  /**
   * `always` (default): a WRITE is answered once RADOS committed it. `flush`: write-back, answered
   * once librados has it; durable at the next FLUSH, or at once for a WRITE flagged XF_FUA (the
   * client must send that flag for a durable write).
   */
  sync?: 'always' | 'flush';
  /** Identity of locks taken without an identity (`<hostname>_<unique_str>`). */
  identity?: string;
}

export type BlockerPeerOptions = FileBlockerPeerOptions | RadosBlockerPeerOptions;

/** Default `connectTimeoutMs` of a rados_blocker peer (RadosBlocker's). */
export const RADOS_CONNECT_TIMEOUT_MS = 10_000;

/** mapperd: a Mapper over the blocker peers on these ports. */
export interface MapperdPeerOptions {
  type: 'mapperd';
  blockerbPort: number;
  blockermPort: number;
  /** The volume-lock identity of this mapperd (distinct from an embedded vlmc's). */
  identity: string;
  /** How long a write waits for another owner's volume lock, ms. */
  lockTimeoutMs?: number;
  /** The lease volume locks are held under, ms (0: none). */
  leaseMs?: number;
  /** Directory of the host locks (same-host serialization with the host's other processes). */
  hostLockDir?: string;
  /** `[mapperd] gc_interval`, ms: a garbage collection runs this often (absent: never). */
  gcIntervalMs?: number;
  /** `[mapperd] gc_grace`, ms (see @archipelago/mapper gc.ts). */
  gcGraceMs?: number;
  /** `[mapperd] trash_ttl`, ms: how long removed maps stay in the trash before a gc purges them. */
  trashTtlMs?: number;
  /** `[mapperd] sparse_maps`: new maps leave all-zero map blocks out (default true; see mapper). */
  sparseMaps?: boolean;
}

/** vlmcd: a Composer over mapperd and blockerb. */
export interface VlmcdPeerOptions {
  type: 'vlmcd';
  blockerPort: number;
  mapperPort: number;
}

export interface PeerOptions {
  /** Role name: "blockerb", "blockerm", … */
  role: string;
  segment: SegmentOptions;
  portStart: number;
  portEnd: number;
  /** Requests served concurrently. */
  nrOps: number;
  pidfile: string;
  logfile: string;
  /** 0 error, 1 warn, 2 info, 3 debug (the original's log_level). */
  logLevel: number;
  /** Exactly one of blocker, mapperd, vlmcd: what this peer serves. */
  blocker?: BlockerPeerOptions;
  mapperd?: MapperdPeerOptions;
  vlmcd?: VlmcdPeerOptions;
  /**
   * `[ARCHIPELAGO] USER`/`GROUP`, resolved: a peer started as root switches to this account once
   * it has opened what needs root (log, backend, segment, ports, pidfile). Absent: no switch.
   */
  account?: Account;
  /** The umask the peer applies before it creates anything (the section's `umask`, else `UMASK`). */
  umask?: number;
  /**
   * A blocker's `nr_threads`: the size of the libuv thread pool its file I/O runs on. It only takes
   * effect as `UV_THREADPOOL_SIZE` in the peer's environment at spawn (`peerEnvironment`); the peer
   * logs a warning when it started without it.
   */
  nrThreads?: number;
}

/** Largest libuv thread pool (libuv caps `UV_THREADPOOL_SIZE` there). */
export const MAX_THREADS = 1024;

/**
 * The environment a peer process is spawned with: its options as JSON, and for `nrThreads` the
 * thread-pool size (libuv reads `UV_THREADPOOL_SIZE` once, when the pool first starts, which is
 * before the peer's code runs: setting it later has no effect).
 */
export function peerEnvironment(opts: PeerOptions): Record<string, string> {
  return {
    [PEER_OPTIONS_ENV]: JSON.stringify(opts),
    ...(opts.nrThreads !== undefined ? { UV_THREADPOOL_SIZE: String(opts.nrThreads) } : {}),
  };
}

/** `logfile` values that mean syslog (facility LOCAL0): `syslog`, or `syslog:<socket path>`. */
export function syslogSocketOf(logfile: string): string | null {
  if (logfile === 'syslog') return '/dev/log';
  if (logfile.startsWith('syslog:') && logfile.length > 'syslog:'.length)
    return logfile.slice('syslog:'.length);
  return null;
}

/** The `xseg` spec string of the segment. */
export function segmentSpec(s: SegmentOptions): string {
  return `posix:${s.name}:${s.dynports}:${s.ports}:${s.sizeMiB}:12`;
}

function bad(problem: string): never {
  throw new ArchipelagoError('EINVAL_CONFIG', `peer options: ${problem}`, { details: { problem } });
}

function int(o: Record<string, unknown>, key: string, min: number, max: number): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    bad(`"${key}" must be an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
  return v;
}

function str(o: Record<string, unknown>, key: string): string {
  const v = o[key];
  if (typeof v !== 'string' || v === '') bad(`"${key}" must be a non-empty string`);
  return v;
}

function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(`${what} must be an object`);
  return v as Record<string, unknown>;
}

const NAME_RE = /^[A-Za-z0-9._-]+$/;

function pattern(o: Record<string, unknown>, key: string, re: RegExp, max: number, what: string): string {
  const v = o[key];
  if (typeof v !== 'string' || v.length > max || !re.test(v))
    bad(`"${key}" must be ${what}, got ${JSON.stringify(v)}`);
  return v;
}

function checkBlocker(b: Record<string, unknown>): BlockerPeerOptions {
  if (b.type === 'file_blocker') {
    const blocker: FileBlockerPeerOptions = { type: 'file_blocker', dir: str(b, 'dir') };
    if (b.lockDir !== undefined) blocker.lockDir = str(b, 'lockDir');
    if (b.fdcache !== undefined) blocker.fdcache = int(b, 'fdcache', 2, 1 << 20);
    if (b.direct !== undefined) blocker.direct = b.direct === true;
    if (b.sync !== undefined) blocker.sync = syncOf(b);
    if (b.identity !== undefined) blocker.identity = str(b, 'identity');
    if (b.revalidateWrites !== undefined) blocker.revalidateWrites = b.revalidateWrites === true;
    return blocker;
  }
  if (b.type === 'rados_blocker') {
    const known = [
      'type',
      'pool',
      'namespace',
      'cephConf',
      'cephxId',
      'keyring',
      'connectTimeoutMs',
      'opTimeoutMs',
      'sync',
      'identity',
    ];
    const unknown = Object.keys(b).filter((k) => !known.includes(k));
    if (unknown.length > 0)
      bad(
        `rados_blocker does not take ${unknown.map((k) => `"${k}"`).join(', ')} (it takes ${known.join(', ')})`,
      );
    const blocker: RadosBlockerPeerOptions = {
      type: 'rados_blocker',
      pool: str(b, 'pool'),
    };
    if (b.namespace !== undefined)
      blocker.namespace = pattern(
        b,
        'namespace',
        /^[A-Za-z0-9._-]*$/,
        64,
        '0..64 characters of [A-Za-z0-9._-]',
      );
    if (b.cephConf !== undefined) blocker.cephConf = absPath(b, 'cephConf');
    if (b.cephxId !== undefined)
      blocker.cephxId = pattern(b, 'cephxId', NAME_RE, 64, 'a client id like "admin" (without "client.")');
    if (b.keyring !== undefined) blocker.keyring = absPath(b, 'keyring');
    if (b.connectTimeoutMs !== undefined) blocker.connectTimeoutMs = int(b, 'connectTimeoutMs', 1, 3_600_000);
    if (b.opTimeoutMs !== undefined) blocker.opTimeoutMs = int(b, 'opTimeoutMs', 0, 86_400_000);
    if (b.sync !== undefined) blocker.sync = syncOf(b);
    if (b.identity !== undefined) blocker.identity = str(b, 'identity');
    return blocker;
  }
  bad(`blocker "type" must be "file_blocker" or "rados_blocker", got ${JSON.stringify(b.type)}`);
}

function syncOf(b: Record<string, unknown>): 'always' | 'flush' {
  if (b.sync !== 'always' && b.sync !== 'flush')
    bad(`"sync" must be "always" or "flush", got ${JSON.stringify(b.sync)}`);
  return b.sync;
}

function absPath(o: Record<string, unknown>, key: string): string {
  const v = str(o, key);
  if (!v.startsWith('/')) bad(`"${key}" must be an absolute path, got ${JSON.stringify(v)}`);
  return v;
}

/** Checks options that came from outside (JSON). */
export function checkPeerOptions(value: unknown): PeerOptions {
  const o = obj(value, 'options');
  const s = obj(o.segment, '"segment"');
  const segment: SegmentOptions = {
    name: str(s, 'name'),
    dynports: int(s, 'dynports', 1, 65535),
    ports: int(s, 'ports', 2, 65536),
    sizeMiB: int(s, 'sizeMiB', 1, 1 << 20),
  };
  if (segment.dynports >= segment.ports) bad('segment "dynports" must be below "ports"');
  const kinds = ['blocker', 'mapperd', 'vlmcd'].filter((k) => o[k] !== undefined);
  if (kinds.length !== 1) bad('exactly one of "blocker", "mapperd", "vlmcd" must be given');
  const port = (x: Record<string, unknown>, k: string) => int(x, k, 0, segment.ports - 1);
  const service: Pick<PeerOptions, 'blocker' | 'mapperd' | 'vlmcd'> = {};
  if (o.blocker !== undefined) {
    service.blocker = checkBlocker(obj(o.blocker, '"blocker"'));
  } else if (o.mapperd !== undefined) {
    const m = obj(o.mapperd, '"mapperd"');
    service.mapperd = {
      type: 'mapperd',
      blockerbPort: port(m, 'blockerbPort'),
      blockermPort: port(m, 'blockermPort'),
      identity: str(m, 'identity'),
      ...(m.lockTimeoutMs !== undefined ? { lockTimeoutMs: int(m, 'lockTimeoutMs', 0, 86_400_000) } : {}),
      ...(m.leaseMs !== undefined ? { leaseMs: int(m, 'leaseMs', 0, 86_400_000) } : {}),
      ...(m.hostLockDir !== undefined ? { hostLockDir: str(m, 'hostLockDir') } : {}),
      ...(m.gcIntervalMs !== undefined ? { gcIntervalMs: int(m, 'gcIntervalMs', 1, 2 ** 31 - 1) } : {}),
      ...(m.gcGraceMs !== undefined ? { gcGraceMs: int(m, 'gcGraceMs', 0, Number.MAX_SAFE_INTEGER) } : {}),
      ...(m.trashTtlMs !== undefined ? { trashTtlMs: int(m, 'trashTtlMs', 0, Number.MAX_SAFE_INTEGER) } : {}),
      ...(m.sparseMaps !== undefined ? { sparseMaps: m.sparseMaps === true } : {}),
    };
  } else {
    const v = obj(o.vlmcd, '"vlmcd"');
    service.vlmcd = { type: 'vlmcd', blockerPort: port(v, 'blockerPort'), mapperPort: port(v, 'mapperPort') };
  }
  const opts: PeerOptions = {
    role: str(o, 'role'),
    segment,
    portStart: int(o, 'portStart', 0, segment.dynports - 1),
    portEnd: int(o, 'portEnd', 0, segment.dynports - 1),
    nrOps: int(o, 'nrOps', 1, 1 << 16),
    pidfile: str(o, 'pidfile'),
    logfile: str(o, 'logfile'),
    logLevel: int(o, 'logLevel', 0, 3),
    ...service,
  };
  if (o.account !== undefined) {
    const a = obj(o.account, '"account"');
    opts.account = {
      user: str(a, 'user'),
      uid: int(a, 'uid', 0, 2 ** 32 - 2),
      group: str(a, 'group'),
      gid: int(a, 'gid', 0, 2 ** 32 - 2),
    };
  }
  if (o.umask !== undefined) opts.umask = int(o, 'umask', 0, 0o777);
  if (o.nrThreads !== undefined) opts.nrThreads = int(o, 'nrThreads', 1, MAX_THREADS);
  if (opts.portEnd < opts.portStart) bad('"portEnd" is below "portStart"');
  return opts;
}
