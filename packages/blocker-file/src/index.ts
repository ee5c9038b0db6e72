export { dirSpace, FileBlocker, type FileBlockerOptions } from './file-blocker.js';
export { hashDirs, isValidObjectName, MAX_NAME_LENGTH } from './names.js';
