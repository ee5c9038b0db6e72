export {
  AbstractBlocker,
  type AbstractBlockerOptions,
  type LockHolder,
  type LockSession,
} from './base.js';
export * from './contract.js';
export { type FaultPlan, FaultyBlocker } from './faulty.js';
export { CallGate } from './gate.js';
export * from './holder.js';
export * from './rules.js';
