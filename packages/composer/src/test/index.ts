export { type Stack, type VolumeModelOptions, volumeModelTest } from './model.js';
