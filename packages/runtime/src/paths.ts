/**
 * Where a configuration puts things: the run directory, the daemons' pidfiles and logs, the
 * segment and the ports. Only `node:path` here: nothing is opened.
 */
import { dirname, join, resolve } from 'node:path';
import { ArchipelagoError } from '@archipelago/libxseg';
import { syslogSocketOf } from '@archipelago/peer/options';
import type { LoadedConfig } from './config.js';

/**
 * The run-state directory (mapped volumes, daemons' pidfiles and logs): `[ARCHIPELAGO] RUN_DIR`
 * if set; `/var/run/archipelago` for the system-wide configuration; otherwise `run/` next to the
 * configuration file, so that each configuration (and each test) has its own.
 */
export function runDirectory(loaded: LoadedConfig): string {
  const set = loaded.config.ARCHIPELAGO.RUN_DIR;
  if (typeof set === 'string' && set !== '') return resolve(dirname(loaded.path), set);
  if (loaded.source === 'system') return '/var/run/archipelago';
  return join(dirname(loaded.path), 'run');
}

/** `[XSEG] segment_name`, or "archipelago". */
export function segmentName(loaded: LoadedConfig): string {
  const n = loaded.config.XSEG.segment_name;
  return typeof n === 'string' && n !== '' ? n : 'archipelago';
}

/** The segment spec of a configuration (page shift 12, as the original's tool insisted). */
export function segmentSpecOf(loaded: LoadedConfig): string {
  const x = loaded.config.XSEG;
  return `posix:${segmentName(loaded)}:${x.SEGMENT_DYNPORTS}:${x.SEGMENT_PORTS}:${x.SEGMENT_SIZE}:12`;
}

/** The `[role]` section of a configuration; EINVAL_CONFIG when there is none. */
export function sectionOf(loaded: LoadedConfig, role: string): Record<string, unknown> {
  const s = loaded.config[role];
  if (typeof s !== 'object' || s === null)
    throw new ArchipelagoError('EINVAL_CONFIG', `${loaded.path}: no [${role}] section for role ${role}`, {
      details: { file: loaded.path, role },
    });
  return s as Record<string, unknown>;
}

/** The first port of a role (its clients send there). */
export function portOf(loaded: LoadedConfig, role: string): number {
  const p = sectionOf(loaded, role).portno_start;
  if (typeof p !== 'number')
    throw new ArchipelagoError('EINVAL_CONFIG', `${loaded.path}: [${role}] portno_start`);
  return p;
}

/** `[role] pidfile` (relative to the file), or `<run dir>/<role>.pid`. */
export function pidfileOf(loaded: LoadedConfig, role: string): string {
  const s = sectionOf(loaded, role);
  return typeof s.pidfile === 'string' && s.pidfile !== ''
    ? resolve(dirname(loaded.path), s.pidfile)
    : join(runDirectory(loaded), `${role}.pid`);
}

const isSyslog = (logfile: string) => syslogSocketOf(logfile) !== null;

/** The log destination of a role: its `logfile` (absolute), `syslog[:socket]`, or `<run dir>/<role>.log`. */
export function logfileOf(loaded: LoadedConfig, role: string): string {
  const s = sectionOf(loaded, role);
  if (typeof s.logfile === 'string' && s.logfile !== '')
    return isSyslog(s.logfile) ? s.logfile : resolve(dirname(loaded.path), s.logfile);
  return join(runDirectory(loaded), `${role}.log`);
}

/** Where a peer's stdout/stderr go: its logfile, or `<run dir>/<role>.log` when it logs to syslog. */
export function outputOf(loaded: LoadedConfig, role: string): string {
  const l = logfileOf(loaded, role);
  return isSyslog(l) ? join(runDirectory(loaded), `${role}.log`) : l;
}
