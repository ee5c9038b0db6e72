export * from './names.js';
export { type ByteRange, parseRange } from './ranges.js';
export {
  type Gateway,
  type GatewayAuth,
  type GatewayOptions,
  type GatewayUser,
  startGateway,
} from './server.js';
export { type ContainerRecord, type FileRecord, FileStore, type StoreOptions, Upload } from './store.js';
