/**
 * Where the daemons of a configuration leave their traces (pidfiles, segment) and whether they
 * run. Shared by `vlmc` (to choose the wiring) and the `archipelago` tool. Only `node:fs` here:
 * the peer package is loaded when the daemons are actually used.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { ArchipelagoError } from '@archipelago/libxseg';
import { type LoadedConfig, runDirectory } from './config.js';

export function segmentName(loaded: LoadedConfig): string {
  const n = loaded.config.XSEG.segment_name;
  return typeof n === 'string' && n !== '' ? n : 'archipelago';
}

/** The `[role]` section of a configuration; EINVAL_CONFIG when there is none. */
export function sectionOf(loaded: LoadedConfig, role: string): Record<string, unknown> {
  const s = loaded.config[role];
  if (typeof s !== 'object' || s === null)
    throw new ArchipelagoError('EINVAL_CONFIG', `${loaded.path}: no [${role}] section for role ${role}`);
  return s as Record<string, unknown>;
}

/** `[role] pidfile`, or `<run dir>/<role>.pid`. */
export function pidfileOf(loaded: LoadedConfig, role: string): string {
  const s = sectionOf(loaded, role);
  return typeof s.pidfile === 'string' && s.pidfile !== ''
    ? resolve(dirname(loaded.path), s.pidfile)
    : join(runDirectory(loaded), `${role}.pid`);
}

/** The roles whose daemons carry volume I/O for `vlmc` and the NBD endpoint. */
export const VOLUME_DAEMONS = ['mapperd', 'vlmcd'] as const;

/** The environment variable that forces a wiring: `embedded` or `daemons`. */
export const WIRING_ENV = 'ARCHIPELAGO_WIRING';

export type Wiring = 'embedded' | 'daemons';

/**
 * Which wiring to use: `daemons` when the segment exists and mapperd and vlmcd have pidfiles (a
 * live or a stale one: a crashed daemon is reported, never silently bypassed, since an embedded
 * writer would take the volume lock under another identity); `embedded` otherwise.
 */
export function chooseWiring(loaded: LoadedConfig, env: NodeJS.ProcessEnv = process.env): Wiring {
  const forced = env[WIRING_ENV];
  if (forced === 'embedded' || forced === 'daemons') return forced;
  if (!existsSync(`/dev/shm/${segmentName(loaded)}`)) return 'embedded';
  const roles = String(loaded.config.PEERS.ROLES ?? '').split(/[\s,]+/);
  if (!VOLUME_DAEMONS.every((r) => roles.includes(r))) return 'embedded';
  return VOLUME_DAEMONS.some((r) => existsSync(pidfileOf(loaded, r))) ? 'daemons' : 'embedded';
}

/** The environment variable that picks who composes volume I/O in the daemon wiring. */
export const COMPOSE_ENV = 'ARCHIPELAGO_COMPOSE';

/**
 * Who composes volume I/O in the daemon wiring: `vlmcd` (requests go to vlmcd, which asks mapperd
 * and blockerb) or `local` (this process runs a Composer over mapperd, with vlmcd's lease-guarded
 * map cache, and sends data straight to blockerb: one segment hop per I/O instead of two).
 * `vlmc map`'s endpoint, a long-lived process, asks for `local`; one-shot `vlmc` commands use
 * vlmcd. ARCHIPELAGO_COMPOSE overrides both.
 */
export type Compose = 'local' | 'vlmcd';

export function composeOf(requested: Compose | undefined, env: NodeJS.ProcessEnv = process.env): Compose {
  const forced = env[COMPOSE_ENV];
  if (forced === undefined || forced === '') return requested ?? 'vlmcd';
  if (forced === 'local' || forced === 'vlmcd') return forced;
  throw new ArchipelagoError(
    'EINVAL',
    `${COMPOSE_ENV}=${forced}: expected "local" (compose in this process) or "vlmcd"`,
  );
}

/** The first port of a role (its clients send there). */
export function portOf(loaded: LoadedConfig, role: string): number {
  const p = sectionOf(loaded, role).portno_start;
  if (typeof p !== 'number')
    throw new ArchipelagoError('EINVAL_CONFIG', `${loaded.path}: [${role}] portno_start`);
  return p;
}

/** The segment spec of a configuration (page shift 12, as the original's tool insisted). */
export function segmentSpecOf(loaded: LoadedConfig): string {
  const x = loaded.config.XSEG;
  return `posix:${segmentName(loaded)}:${x.SEGMENT_DYNPORTS}:${x.SEGMENT_PORTS}:${x.SEGMENT_SIZE}:12`;
}

/** The pid in a pidfile, or null. */
export function pidInFile(path: string): number | null {
  try {
    const t = readFileSync(path, 'utf8').trim();
    return /^\d+$/.test(t) ? Number(t) : null;
  } catch {
    return null;
  }
}
