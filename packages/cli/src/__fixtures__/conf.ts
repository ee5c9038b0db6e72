/** The configuration the CLI tests give `vlmc`: file blockers under `dataDir`, one host identity. */
import { join } from 'node:path';

export function testConf(dataDir: string, uniqueStr: string, extra = ''): string {
  return `[ARCHIPELAGO]
USER = archipelago
GROUP = archipelago
BLKTAP_ENABLED = False
UMASK = 0o007

[blockerb]
type = file_blocker
archip_dir = ${join(dataDir, 'blocks')}
unique_str = ${uniqueStr}

[blockerm]
type = file_blocker
archip_dir = ${join(dataDir, 'maps')}
unique_str = ${uniqueStr}
${extra}
[mapperd]
lock_timeout = 1
`;
}
