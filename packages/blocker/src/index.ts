export * from './contract.js';
export { type FaultPlan, FaultyBlocker } from './faulty.js';
export { CallGate } from './gate.js';
