export { NOT_BUILT_MESSAGE, radosAvailable } from './native.js';
export {
  DEFAULT_MAX_DIRTY_BYTES,
  MAX_DIRTY_BYTES_LIMIT,
  MAX_DIRTY_WRITES,
  ownerOf,
  RADOS_LOCK_NAME,
  RadosBlocker,
  type RadosBlockerOptions,
} from './rados-blocker.js';
