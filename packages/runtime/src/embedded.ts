/**
 * The embedded wiring: blockerm, blockerb, mapper and composer in this process, built from the
 * configuration with the same options the daemons get (`blockerOptions`). It never switches
 * account (it is the caller's command); it applies `[ARCHIPELAGO] UMASK` and makes missing data
 * directories 2770, owned by USER:GROUP when run as root (see docs/PRIVILEGES.md).
 */
import type { Blocker } from '@archipelago/blocker';
import { FileBlocker } from '@archipelago/blocker-file';
import { Composer } from '@archipelago/composer';
import { ArchipelagoError } from '@archipelago/libxseg';
import { FlockHostLocks, Mapper } from '@archipelago/mapper';
import type { BlockerPeerOptions, RadosBlockerPeerOptions } from '@archipelago/peer/options';
import { type ArchipelagoConfig, isLoaded, type LoadedConfig } from './config.js';
import {
  blockerOptions,
  hostIdentity,
  hostLockDir,
  leaseMs,
  lockTimeoutMs,
  makeDataDirs,
  umaskOf,
} from './sections.js';
import { closeOnce, type EmbeddedRuntime, type RuntimeOptions } from './types.js';

/** The part of @archipelago/blocker-rados the runtime uses (loaded on demand: it is native). */
interface RadosModule {
  RadosBlocker: {
    open(opts: Omit<RadosBlockerPeerOptions, 'type'> & { connectionTag?: string }): Promise<Blocker>;
  };
}

const RADOS_PACKAGE = '@archipelago/blocker-rados';

/**
 * Opens the blocker a section describes. Bulk mode (import, export) writes back, and a bulk
 * file blockerb (`direct`) moves data with O_DIRECT.
 */
export async function openBlocker(
  o: BlockerPeerOptions,
  bulk: { direct: boolean } | null,
  where: { role: string; file: string | null },
  client: { connectionTag?: string } = {},
): Promise<Blocker> {
  if (o.type === 'file_blocker') {
    return new FileBlocker({
      dir: o.dir,
      ...(o.lockDir !== undefined ? { lockDir: o.lockDir } : {}),
      ...(o.identity !== undefined ? { identity: o.identity } : {}),
      ...(o.revalidateWrites ? { revalidateWrites: true } : {}),
      direct: (o.direct ?? false) || (bulk?.direct ?? false),
      ...(o.fdcache !== undefined ? { fdCache: o.fdcache } : {}),
      sync: bulk ? 'flush' : (o.sync ?? 'always'),
    });
  }
  let mod: RadosModule;
  try {
    mod = (await import(RADOS_PACKAGE)) as RadosModule;
  } catch (e) {
    throw new ArchipelagoError(
      'ENOTSUP',
      `[${where.role}] has type rados_blocker: RADOS support is not available yet in this installation (${RADOS_PACKAGE} is not installed); install it or use type = file_blocker${where.file ? ` in ${where.file}` : ''}`,
      { cause: e, details: { role: where.role, file: where.file } },
    );
  }
  const { type: _type, ...rados } = o;
  return mod.RadosBlocker.open({
    ...rados,
    ...(bulk ? { sync: 'flush' as const } : {}),
    ...(client.connectionTag !== undefined ? { connectionTag: client.connectionTag } : {}),
  });
}

/** Builds blockerm, blockerb, mapper and composer in this process from a (validated) configuration. */
export async function openEmbeddedRuntime(
  input: LoadedConfig | ArchipelagoConfig,
  opts: RuntimeOptions = {},
): Promise<EmbeddedRuntime> {
  const loaded: LoadedConfig = isLoaded(input)
    ? input
    : { path: 'configuration', source: 'default', created: false, config: input };
  const file = isLoaded(input) ? input.path : null;
  const { config } = loaded;
  const identity = hostIdentity(input);
  // Everything this process creates: user and group read-write (UMASK), in directories made
  // 2770 (USER:GROUP when root) so the daemons, as USER, can use them too (docs/PRIVILEGES.md).
  process.umask(umaskOf(input));
  if (isLoaded(input)) makeDataDirs(input);
  const client = opts.radosClientTag !== undefined ? { connectionTag: opts.radosClientTag } : {};
  const blockerm = await openBlocker(
    blockerOptions(loaded, 'blockerm'),
    opts.bulk ? { direct: false } : null,
    {
      role: 'blockerm',
      file,
    },
    client,
  );
  let blockerb: Blocker;
  try {
    blockerb = await openBlocker(
      blockerOptions(loaded, 'blockerb'),
      opts.bulk ? { direct: true } : null,
      { role: 'blockerb', file },
      client,
    );
  } catch (e) {
    await blockerm.close().catch(() => {});
    throw e;
  }
  const mapper = new Mapper({
    blockerm,
    blockerb,
    lockTimeoutMs: lockTimeoutMs(config),
    leaseMs: leaseMs(config),
    sparseMaps: config.mapperd.sparse_maps !== false,
    // Same-host serialization needs the run directory, which only a configuration file has.
    ...(isLoaded(input) ? { hostLocks: new FlockHostLocks(hostLockDir(input)) } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
  });
  const composer = new Composer({ mapper, blockerb, ...(opts.logger ? { logger: opts.logger } : {}) });
  if (opts.handOver)
    mapper.onReleaseRequest = (name) =>
      composer.frozen(name, async () => {
        await blockerb.flush();
        await mapper.yieldVolume(name);
      });
  return {
    wiring: 'embedded',
    config,
    configPath: file,
    blockerm,
    blockerb,
    mapper,
    composer,
    identity,
    close: closeOnce(async ({ keepLocks }) => {
      try {
        // keepLocks: the volumes still open stay this host's (host holds), as `vlmc open` asks.
        await mapper.close({ keepLocks: keepLocks === true });
      } finally {
        await Promise.allSettled([blockerm.close(), blockerb.close()]);
      }
    }),
  };
}
