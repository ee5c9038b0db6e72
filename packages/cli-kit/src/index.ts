export { normalizeArgv } from './argv.js';
export { configFlag, describeError, jsonReplacer, ToolCommand } from './command.js';
export { ProgressBar, type ProgressStream } from './progress.js';
export { formatRate, formatSize, formatSizeExact, parseSize } from './size.js';
