/** The `archipelago` oclif tool; see src/commands/. The logic lives in @archipelago/runtime. */
export { ArchipelagoCommand } from './base.js';
