export * as nbdConstants from './constants.js';
export { errnoFor } from './errno.js';
export { FileExport, type FileExportOptions, MemoryExport, type MemoryExportOptions } from './exports.js';
export { NbdServer } from './server.js';
export type {
  ListenAddress,
  ListenTarget,
  NbdExport,
  NbdExtent,
  NbdLogger,
  NbdServerOptions,
} from './types.js';
export { type VolumeBackend, type VolumeExportOptions, volumeExport } from './volume-export.js';
