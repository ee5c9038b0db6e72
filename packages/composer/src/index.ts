export type { Extent, VolumeApi, WriteOptions, ZeroOptions } from './api.js';
export { Composer, type ComposerOptions } from './composer.js';
export { RangeOrder, type Ticket } from './range-order.js';
