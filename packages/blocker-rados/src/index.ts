export { NOT_BUILT_MESSAGE, radosAvailable } from './native.js';
export { ownerOf, RADOS_LOCK_NAME, RadosBlocker, type RadosBlockerOptions } from './rados-blocker.js';
