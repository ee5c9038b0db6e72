/**
 * The two wirings (DESIGN "Two wirings"). Embedded: blockers, mapper and composer built in this
 * process from the configuration, with no daemons and no segment. Daemons: when `archipelago
 * start` runs mapperd and vlmcd (daemons.ts `chooseWiring`), the same interfaces are clients over
 * the segment (daemon-runtime.ts), each on its own dynamic port.
 */
import { hostname } from 'node:os';
import type { Blocker } from '@archipelago/blocker';
import { FileBlocker } from '@archipelago/blocker-file';
import { Composer, type VolumeApi } from '@archipelago/composer';
import { ArchipelagoError } from '@archipelago/libxseg';
import { type Logger, Mapper, type MapperApi } from '@archipelago/mapper';
import type { ArchipelagoConfig, BlockerSection, LoadedConfig } from './config.js';
import { type Compose, chooseWiring, type Wiring } from './daemons.js';

export interface Runtime {
  /** Which wiring this runtime is: in process, or clients of the daemons. */
  readonly wiring: Wiring;
  readonly config: ArchipelagoConfig;
  /** The file the configuration came from, when known. */
  readonly configPath: string | null;
  /** Blocker of maps and locks. */
  readonly blockerm: Blocker;
  /** Blocker of data objects. */
  readonly blockerb: Blocker;
  readonly mapper: MapperApi;
  readonly composer: VolumeApi;
  /** The lock-owner identity of this runtime (`<hostname>_<unique_str>`, or mapperd's). */
  readonly identity: string;
  /**
   * Closes the mapper (releasing the locks of every volume it opened, unless `keepLocks`) and
   * then the blockers. Idempotent.
   */
  close(opts?: { keepLocks?: boolean }): Promise<void>;
}

/** The embedded runtime: the mapper and composer are in this process. */
export interface EmbeddedRuntime extends Runtime {
  readonly wiring: 'embedded';
  readonly mapper: Mapper;
  readonly composer: Composer;
}

export interface RuntimeOptions {
  logger?: Logger;
  /**
   * A bulk copy into new objects (import) or out of a volume (export): embedded blockers write
   * back (`sync: 'flush'`: every write is durable at the flush the operation ends with, not one by
   * one) and a file blockerb moves data with O_DIRECT, so the copy neither fills the page cache
   * nor waits for a disk flush (or a RADOS commit) per object.
   * Ignored by the daemon wiring (the daemons' blockers are configured there).
   */
  bulk?: boolean;
  /** Force a wiring (default: `chooseWiring`, which also honours ARCHIPELAGO_WIRING). */
  wiring?: Wiring;
  /**
   * The daemon wiring only: who composes volume I/O (default: `vlmcd`, or ARCHIPELAGO_COMPOSE).
   * See `connectDaemons`.
   */
  compose?: Compose;
}

/** The lock-owner identity a blocker section gives: `<hostname>_<unique_str or "embedded">`. */
export function identityOf(section: BlockerSection): string {
  return `${hostname()}_${section.unique_str ?? 'embedded'}`;
}

/** The part of @archipelago/blocker-rados the runtime uses (loaded on demand: it is native). */
interface RadosModule {
  RadosBlocker: {
    open(opts: {
      pool: string;
      namespace?: string;
      cephConf?: string;
      cephxId?: string;
      keyring?: string;
      identity?: string;
      connectTimeoutMs?: number;
      opTimeoutMs?: number;
      sync?: 'always' | 'flush';
    }): Promise<Blocker>;
  };
}

const RADOS_PACKAGE = '@archipelago/blocker-rados';

/**
 * A RadosBlocker for a `type = rados_blocker` section; connects (or fails) within connect_timeout.
 * `sync` as the section says, or write-back in bulk mode (as for file blockers).
 */
async function radosBlocker(
  role: string,
  s: BlockerSection,
  file: string | null,
  bulk: boolean,
): Promise<Blocker> {
  if (s.pool === undefined) {
    throw new ArchipelagoError('EINVAL_CONFIG', `${file ?? 'configuration'}: ${role}.pool is missing`, {
      details: { role, file },
    });
  }
  let mod: RadosModule;
  try {
    mod = (await import(RADOS_PACKAGE)) as RadosModule;
  } catch (e) {
    throw new ArchipelagoError(
      'ENOTSUP',
      `[${role}] has type rados_blocker: RADOS support is not available yet in this installation (${RADOS_PACKAGE} is not installed); install it or use type = file_blocker${file ? ` in ${file}` : ''}`,
      { cause: e, details: { role, file } },
    );
  }
  return mod.RadosBlocker.open({
    pool: s.pool,
    identity: identityOf(s),
    ...(s.namespace !== undefined ? { namespace: s.namespace } : {}),
    ...(s.ceph_conf !== undefined ? { cephConf: s.ceph_conf } : {}),
    ...(s.cephx_id !== undefined ? { cephxId: s.cephx_id } : {}),
    ...(s.keyring !== undefined ? { keyring: s.keyring } : {}),
    ...(s.connect_timeout !== undefined ? { connectTimeoutMs: Math.round(s.connect_timeout * 1000) } : {}),
    ...(s.op_timeout !== undefined ? { opTimeoutMs: Math.round(s.op_timeout * 1000) } : {}),
    ...(bulk ? { sync: 'flush' as const } : s.sync !== undefined ? { sync: s.sync } : {}),
  });
}

async function openBlocker(
  role: string,
  s: BlockerSection,
  file: string | null,
  bulk: { direct: boolean } | null,
): Promise<Blocker> {
  return s.type === 'rados_blocker'
    ? radosBlocker(role, s, file, bulk !== null)
    : fileBlocker(role, s, file, bulk);
}

function fileBlocker(
  role: string,
  s: BlockerSection,
  file: string | null,
  bulk: { direct: boolean } | null,
): FileBlocker {
  if (s.archip_dir === undefined) {
    throw new ArchipelagoError('EINVAL_CONFIG', `${file ?? 'configuration'}: ${role}.archip_dir is missing`, {
      details: { role, file },
    });
  }
  return new FileBlocker({
    dir: s.archip_dir,
    ...(s.lock_dir !== undefined ? { lockDir: s.lock_dir } : {}),
    identity: identityOf(s),
    direct: s.direct || (bulk?.direct ?? false),
    fdCache: s.fdcache,
    sync: bulk ? 'flush' : s.sync,
  });
}

const isLoaded = (v: LoadedConfig | ArchipelagoConfig): v is LoadedConfig =>
  typeof (v as LoadedConfig).path === 'string' && typeof (v as LoadedConfig).config === 'object';

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
    const { connectDaemons } = await import('./daemon-runtime.js');
    return connectDaemons(loaded, opts.compose);
  }
  return openEmbeddedRuntime(loaded, opts);
}

/** Builds blockerm, blockerb, mapper and composer in this process from a (validated) configuration. */
export async function openEmbeddedRuntime(
  loaded: LoadedConfig | ArchipelagoConfig,
  opts: RuntimeOptions = {},
): Promise<EmbeddedRuntime> {
  const config = isLoaded(loaded) ? loaded.config : loaded;
  const file = isLoaded(loaded) ? loaded.path : null;
  const blockerm = await openBlocker('blockerm', config.blockerm, file, opts.bulk ? { direct: false } : null);
  let blockerb: Blocker;
  try {
    blockerb = await openBlocker('blockerb', config.blockerb, file, opts.bulk ? { direct: true } : null);
  } catch (e) {
    await blockerm.close().catch(() => {});
    throw e;
  }
  const mapper = new Mapper({
    blockerm,
    blockerb,
    lockTimeoutMs: Math.round(config.mapperd.lock_timeout * 1000),
    ...(opts.logger ? { logger: opts.logger } : {}),
  });
  const composer = new Composer({ mapper, blockerb, ...(opts.logger ? { logger: opts.logger } : {}) });
  let closing: Promise<void> | null = null;
  return {
    wiring: 'embedded',
    config,
    configPath: file,
    blockerm,
    blockerb,
    mapper,
    composer,
    identity: blockerm.identity,
    close(closeOpts = {}) {
      closing ??= (async () => {
        try {
          if (!closeOpts.keepLocks) await mapper.close();
        } finally {
          await Promise.allSettled([blockerm.close(), blockerb.close()]);
        }
      })();
      return closing;
    },
  };
}
