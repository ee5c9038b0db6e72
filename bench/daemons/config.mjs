/**
 * What bench/daemons scripts share: a configuration for the four daemons on a segment of their
 * own, in a temporary directory under `base`.
 */
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
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

/**
 * Puts both blockers of the configuration `conf` (made by daemonsConfig) on RADOS: pools blocks
 * and maps, namespace `ns`, the cluster of `cephConf`, the ports daemonsConfig gives them.
 */
export async function useRadosBlockers(conf, cephConf, ns) {
  const text = await readFile(conf, 'utf8');
  const section = (role, pool, port) =>
    `[${role}]\ntype = rados_blocker\nportno_start = ${port}\nportno_end = ${port}\nnr_ops = 64\npool = ${pool}\nnamespace = ${ns}\nceph_conf = ${cephConf}\n`;
  await writeFile(
    conf,
    `${text.slice(0, text.indexOf('[blockerb]'))}${section('blockerb', 'blocks', 10)}${section('blockerm', 'maps', 12)}${text.slice(text.indexOf('[mapperd]'))}`,
  );
}
