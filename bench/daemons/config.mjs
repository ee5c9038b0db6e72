/**
 * What bench/daemons scripts share: a configuration for the four daemons on a segment of their
 * own, in a temporary directory under `base`.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Creates `<base>/<prefix>XXXX/archipelago.conf`; returns the directory, file and segment name. */
export async function daemonsConfig(base, prefix, segmentSizeMiB) {
  const dir = await mkdtemp(join(base, `${prefix}-`));
  const conf = join(dir, 'archipelago.conf');
  const segment = `${prefix.replace(/[^a-z]/g, '')}${process.pid}`;
  await writeFile(
    conf,
    // The daemons stay root: the temporary directory (mode 0700) is not reachable by the service
    // account (docs/PRIVILEGES.md).
    `[ARCHIPELAGO]
USER = root
GROUP = root
[XSEG]
SEGMENT_PORTS = 128
SEGMENT_DYNPORTS = 64
SEGMENT_SIZE = ${segmentSizeMiB}
VTOOL_START = 100
VTOOL_END = 110
segment_name = ${segment}
[PEERS]
ROLES = blockerb blockerm mapperd vlmcd
[blockerb]
type = file_blocker
portno_start = 10
portno_end = 10
nr_ops = 64
archip_dir = blocks
[blockerm]
type = file_blocker
portno_start = 12
portno_end = 12
nr_ops = 64
archip_dir = maps
[mapperd]
type = mapperd
portno_start = 11
portno_end = 11
nr_ops = 512
blockerb_port = 10
blockerm_port = 12
[vlmcd]
type = vlmcd
portno_start = 20
portno_end = 20
nr_ops = 512
blocker_port = 10
mapper_port = 11
`,
  );
  return { dir, conf, segment };
}
