export * from './errors.js';
export * from './process.js';
export * from './protocol.js';
