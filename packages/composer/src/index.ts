export {
  Composer,
  type ComposerOptions,
  type Extent,
  type WriteOptions,
  type ZeroOptions,
} from './composer.js';
export { RangeOrder, type Ticket } from './range-order.js';
