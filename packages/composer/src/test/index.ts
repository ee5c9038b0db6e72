export { type ConcurrentVolumeModelOptions, concurrentVolumeModelTest } from './concurrent-model.js';
export { type Stack, type VolumeModelOptions, volumeModelTest } from './model.js';
export { type ChildConfig, type OpenBlockers, serveModelChild } from './model-child.js';
