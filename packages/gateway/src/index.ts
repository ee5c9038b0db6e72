export type { Gateway, GatewayAuth, GatewayOptions, GatewayUser } from './context.js';
export * from './names.js';
export { type ByteRange, parseRange } from './ranges.js';
export { startGateway } from './server.js';
export { type ContainerRecord, type FileRecord, FileStore, type StoreOptions, Upload } from './store.js';
