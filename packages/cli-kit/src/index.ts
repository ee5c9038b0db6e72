export { normalizeArgv } from './argv.js';
export { configFlag, describeError, jsonReplacer, ToolCommand } from './command.js';
export { ProgressBar, type ProgressStream } from './progress.js';
export { formatRate, formatSize, parseSize } from './size.js';
