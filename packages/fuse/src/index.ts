export { DevFuseChannel, type FuseChannel } from './channel.js';
export {
  type AttachLoopOptions,
  attachLoop,
  detachLoop,
  isLoopDevice,
  type LoopAttachment,
  loopBackingFile,
  loopInUse,
  loopOf,
} from './loop.js';
export {
  abortFuseConnection,
  FUSE_SUBTYPE,
  type FuseMount,
  type FuseMountOptions,
  fuseMountAt,
  listMounts,
  type MountInfo,
  mountAt,
  mountFuseFile,
  prepareMountpoint,
  unmountFuse,
} from './mount.js';
export * as fuseProtocol from './protocol.js';
export { type ServedFile, serveFuseFile } from './serve.js';
export {
  errnoOf,
  type FuseFileBackend,
  FuseFileServer,
  type FuseLogger,
  type FuseServerOptions,
  type FuseServerStats,
} from './server.js';
