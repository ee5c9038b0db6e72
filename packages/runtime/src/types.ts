/**
 * What both wirings give: one `Runtime` (blockers, mapper, composer, the host identity).
 */
import type { Blocker } from '@archipelago/blocker';
import type { Composer, VolumeApi } from '@archipelago/composer';
import type { Logger, Mapper, MapperApi } from '@archipelago/mapper';
import type { ArchipelagoConfig } from './config.js';

/** Which wiring a runtime is: in process, or clients of the daemons. */
export type Wiring = 'embedded' | 'daemons';

export interface Runtime {
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
  /** The host's lock-owner identity (`hostIdentity`), in either wiring. */
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

/**
 * Who composes volume I/O in the daemon wiring: `vlmcd` (requests go to vlmcd, which asks mapperd
 * and blockerb) or `local` (this process runs a Composer over mapperd, with vlmcd's lease-guarded
 * map cache, and sends data straight to blockerb: one segment hop per I/O instead of two).
 * `vlmc map`'s endpoint, a long-lived process, asks for `local`; one-shot `vlmc` commands use
 * vlmcd. ARCHIPELAGO_COMPOSE overrides both.
 */
export type Compose = 'local' | 'vlmcd';

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
  /** The daemon wiring only: who composes volume I/O (default: `vlmcd`, or ARCHIPELAGO_COMPOSE). */
  compose?: Compose;
  /**
   * The embedded wiring: answer another owner's release request for a volume this process holds
   * (cooperative hand-over, live migration) by draining its I/O, flushing and handing it over;
   * its reads then go uncached. For long-lived holders (the NBD endpoint); a short command keeps
   * its volume until it ends. In the daemon wiring mapperd answers them.
   */
  handOver?: boolean;
  /**
   * RADOS: the tag of this runtime's librados client (`RadosBlocker.connectionTag`). A runtime
   * with a tag of its own has a client of its own (embedded: shared by its blockerm and blockerb),
   * so that a lock break, which blocklists a client, fences this runtime's volumes and no other
   * runtime's of the process. The shared `vlmc map` endpoint gives each volume's runtime one.
   * Ignored by the daemon wiring (see `openVolumeRuntime`).
   */
  radosClientTag?: string;
  /**
   * The daemon wiring with a local composer: the endpoint serves each volume over a runtime of
   * its own (`openVolumeRuntime`); with the direct data path over RADOS, each volume's runtime
   * then has its own data client, and the process's runtime none.
   */
  volumeRuntimes?: boolean;
}

/** A `Runtime.close` that runs `fn` once: later calls get the first call's promise. */
export function closeOnce(fn: (opts: { keepLocks?: boolean }) => Promise<void>): Runtime['close'] {
  let closing: Promise<void> | null = null;
  return (opts = {}) => {
    closing ??= fn(opts);
    return closing;
  };
}
