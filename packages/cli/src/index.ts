export { describeError, jsonReplacer, VlmcCommand } from './base.js';
export * from './config.js';
export * from './daemons.js';
export { ProgressBar } from './progress.js';
export {
  type EmbeddedRuntime,
  identityOf,
  openEmbeddedRuntime,
  openRuntime,
  type Runtime,
  type RuntimeOptions,
} from './runtime.js';
export { formatRate, formatSize, parseSize } from './size.js';
export * from './transfer.js';
