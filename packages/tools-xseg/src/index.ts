/** The `xseg` oclif tool; see src/commands/. The shared helpers are exported for tests. */
export { formatPort, formatReport, XsegCommand } from './base.js';
