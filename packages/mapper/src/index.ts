export { Mapper, type MapperOptions, MAX_VOLUME_SIZE } from './mapper.js';
export * from './types.js';
export { KeyedMutex, Mutex } from './mutex.js';
