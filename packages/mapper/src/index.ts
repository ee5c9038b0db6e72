export type { MapperApi } from './api.js';
export { changedRuns, DIFF_GRANULE, type DiffExtent, type DiffSide, diffBytes, diffEntries } from './diff.js';
export { FlockHostLocks } from './flock-host-locks.js';
export {
  collectGarbage,
  DEFAULT_GC_GRACE_MS,
  DEFAULT_HOLD_LEASE_MS,
  disownHashedMap,
  GATEWAY_OWNED_PREFIX,
  GC_HOLD_PREFIX,
  GC_LOCK,
  GC_STATE,
  type GcHold,
  type GcHoldKind,
  type GcHoldOptions,
  type GcHoldRecord,
  type GcOptions,
  type GcProgress,
  type GcReport,
  gatewayOwnedMarker,
  type HashedMapLock,
  hashedMapRoot,
  isGatewayOwned,
  listGcHolds,
  lockHashedMap,
  ownHashedMap,
  takeGcHold,
  withGcHold,
  withHashedMapLock,
} from './gc.js';
export type { HostLockHandle, HostLocks } from './host-locks.js';
export { MAX_VOLUME_SIZE, Mapper, type MapperOptions, type OpenMapView } from './mapper.js';
export { KeyedMutex, Mutex } from './mutex.js';
export { checkMapSpace, type MapSpaceOptions, mapStorageBytes } from './ops/create.js';
export { type FlattenOptions, type FlattenResult, isOwnObject, sharedBlocks } from './ops/flatten.js';
export {
  childrenOf,
  type LineageLink,
  type LineageRecord,
  type LineageSource,
  type MapLineage,
  mapLineage,
  readLineage,
  type SnapshotEntry,
  snapshotsOf,
} from './ops/lineage.js';
export {
  isTrashName,
  parseTrashName,
  type RestoreOptions,
  TRASH_PREFIX,
  type TrashEntry,
  type TrashOptions,
  trashName,
} from './ops/trash.js';
export * from './types.js';
export { type StoreUsage, storeUsage, type UsageSource, type VolumeUsage, volumeUsage } from './usage.js';
export type { ReleaseHandler } from './volume-locks.js';
