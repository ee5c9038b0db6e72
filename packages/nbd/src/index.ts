export * as nbdConstants from './constants.js';
export { errnoFor } from './errno.js';
export { FileExport, type FileExportOptions, MemoryExport, type MemoryExportOptions } from './exports.js';
export { ReadBufferPool, type ReadLease, type ReadPoolOptions, type ReadPoolStats } from './read-pool.js';
export { NbdServer } from './server.js';
export type {
  ListenAddress,
  ListenTarget,
  NbdExport,
  NbdExtent,
  NbdLogger,
  NbdServerOptions,
} from './types.js';
export {
  removeStaleSocket,
  type UnixSocketState,
  unixSocketState,
  unlinkIfPresent,
} from './unix-socket.js';
export { type VolumeBackend, type VolumeExportOptions, volumeExport } from './volume-export.js';
