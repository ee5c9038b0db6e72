export { volumeModelTest, type VolumeModelOptions, type Stack } from './model.js';
