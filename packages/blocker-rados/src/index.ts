export type { ClsLocker } from './cls-lock.js';
export { connectionCount } from './connection.js';
export { NOT_BUILT_MESSAGE, radosAvailable } from './native.js';
export {
  DEFAULT_MAX_DIRTY_BYTES,
  MAX_DIRTY_BYTES_LIMIT,
  MAX_DIRTY_WRITES,
  ownerOf,
  RadosBlocker,
  type RadosBlockerOptions,
} from './rados-blocker.js';
export { RADOS_LOCK_NAME, RECORD_XATTR, RELEASE_XATTR } from './rados-locks.js';
