export { describeError, jsonReplacer, VlmcCommand } from './base.js';
export * from './config.js';
export { ProgressBar } from './progress.js';
export { identityOf, openRuntime, type Runtime, type RuntimeOptions } from './runtime.js';
export { formatRate, formatSize, parseSize } from './size.js';
export * from './transfer.js';
