export * from './entries.js';
export { type CorruptMapFault, corruptMap } from './errors.js';
export * from './format.js';
export * from './hash.js';
export * from './header.js';
export * from './legacy.js';
export * from './lineage.js';
export * from './names.js';
export type { MapEntry, MapHeader, MapIntent } from './types.js';
