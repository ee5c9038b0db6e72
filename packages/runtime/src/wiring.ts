/**
 * The two wirings (DESIGN "Two wirings"), behind one `Runtime`. Embedded: blockers, mapper and
 * composer built in this process from the configuration (embedded.ts). Daemons: when
 * `archipelago start` runs mapperd and vlmcd, the same interfaces are clients over the segment
 * (daemons-client.ts). `openRuntime` picks one; both take the host's one identity.
 */
import { existsSync } from 'node:fs';
import { ArchipelagoError } from '@archipelago/libxseg';
import { type ArchipelagoConfig, isLoaded, type LoadedConfig } from './config.js';
import { connectDaemons, VOLUME_DAEMONS } from './daemons-client.js';
import { openEmbeddedRuntime } from './embedded.js';
import { pidfileOf, segmentName } from './paths.js';
import type { Compose, Runtime, RuntimeOptions, Wiring } from './types.js';

/** The environment variable that forces a wiring: `embedded` or `daemons`. */
export const WIRING_ENV = 'ARCHIPELAGO_WIRING';

/** The environment variable that picks who composes volume I/O in the daemon wiring. */
export const COMPOSE_ENV = 'ARCHIPELAGO_COMPOSE';

/**
 * Which wiring to use: `daemons` when the segment exists and mapperd and vlmcd have pidfiles (a
 * live or a stale one: a crashed daemon is reported, never silently bypassed); `embedded`
 * otherwise.
 */
export function chooseWiring(loaded: LoadedConfig, env: NodeJS.ProcessEnv = process.env): Wiring {
  const forced = env[WIRING_ENV];
  if (forced === 'embedded' || forced === 'daemons') return forced;
  if (!existsSync(`/dev/shm/${segmentName(loaded)}`)) return 'embedded';
  const roles = String(loaded.config.PEERS.ROLES ?? '').split(/[\s,]+/);
  if (!VOLUME_DAEMONS.every((r) => roles.includes(r))) return 'embedded';
  return VOLUME_DAEMONS.some((r) => existsSync(pidfileOf(loaded, r))) ? 'daemons' : 'embedded';
}

export function composeOf(requested: Compose | undefined, env: NodeJS.ProcessEnv = process.env): Compose {
  const forced = env[COMPOSE_ENV];
  if (forced === undefined || forced === '') return requested ?? 'vlmcd';
  if (forced === 'local' || forced === 'vlmcd') return forced;
  throw new ArchipelagoError(
    'EINVAL',
    `${COMPOSE_ENV}=${forced}: expected "local" (compose in this process) or "vlmcd"`,
  );
}

/**
 * Opens the runtime of a configuration: clients of the daemons when they run (a loaded
 * configuration tells where their pidfiles and segment are), the embedded wiring otherwise.
 */
export async function openRuntime(
  loaded: LoadedConfig | ArchipelagoConfig,
  opts: RuntimeOptions = {},
): Promise<Runtime> {
  const wiring = opts.wiring ?? (isLoaded(loaded) ? chooseWiring(loaded) : 'embedded');
  if (wiring === 'daemons') {
    if (!isLoaded(loaded))
      throw new ArchipelagoError('EINVAL', 'the daemon wiring needs a loaded configuration (its file path)');
    return connectDaemons(loaded, composeOf(opts.compose), { volumeRuntimes: opts.volumeRuntimes === true });
  }
  return openEmbeddedRuntime(loaded, opts);
}
