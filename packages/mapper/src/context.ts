import type { Blocker } from '@archipelago/blocker';
import type { MapStore } from './map-store.js';
import type { Logger } from './types.js';
import type { VolumeLocks } from './volume-locks.js';

/**
 * What an operation (`ops/*.ts`) works with. Maps are read and written only through `store`,
 * locks are taken and checked only through `locks`; `blockerb` holds the data objects.
 */
export interface MapperContext {
  readonly store: MapStore;
  readonly locks: VolumeLocks;
  /** Blocker holding data objects. */
  readonly blockerb: Blocker;
  /** Blocker holding maps: lineage sidecars are read and written here directly (ops/lineage.ts). */
  readonly blockerm: Blocker;
  /** Deletes and copies issued at once. */
  readonly parallelism: number;
  readonly log: Logger;
  /** Throws ECLOSED once the mapper is closed. */
  checkOpen(): void;
}
