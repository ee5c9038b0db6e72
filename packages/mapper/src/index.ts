export type { MapperApi } from './api.js';
export { FlockHostLocks } from './flock-host-locks.js';
export {
  collectGarbage,
  DEFAULT_GC_GRACE_MS,
  DEFAULT_HOLD_LEASE_MS,
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
  listGcHolds,
  takeGcHold,
  withGcHold,
} from './gc.js';
export type { HostLockHandle, HostLocks } from './host-locks.js';
export { MAX_VOLUME_SIZE, Mapper, type MapperOptions, type OpenMapView } from './mapper.js';
export { KeyedMutex, Mutex } from './mutex.js';
export { checkMapSpace, mapStorageBytes } from './ops/create.js';
export * from './types.js';
export { type StoreUsage, storeUsage, type UsageSource, type VolumeUsage, volumeUsage } from './usage.js';
export type { ReleaseHandler } from './volume-locks.js';
