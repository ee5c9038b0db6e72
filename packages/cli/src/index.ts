/** `vlmc`, an oclif assembly over @archipelago/runtime: see src/commands/. */
export { VlmcCommand } from './base.js';
