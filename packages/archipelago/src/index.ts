/** The `archipelago` oclif tool; see src/commands/. The logic lives in daemons.ts. */
export { ArchipelagoCommand, describeError } from './base.js';
export * from './daemons.js';
