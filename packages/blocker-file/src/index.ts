export { dirSpace, FileBlocker, type FileBlockerOptions, RESERVE_FILE } from './file-blocker.js';
export { hashDirs, isValidObjectName, MAX_NAME_LENGTH } from './names.js';
