export * from './contract.js';
export { FaultyBlocker, type FaultPlan } from './faulty.js';
