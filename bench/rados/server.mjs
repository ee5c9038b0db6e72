#!/usr/bin/env node
/**
 * Our NBD endpoint on RADOS for the bench, in its own process: RadosBlocker x2 (pools "maps" and
 * "blocks"), a Mapper, a Composer and an NbdServer serving one volume on a unix socket. Prints one
 * JSON line `{"ready":...}` once listening; exits cleanly on SIGTERM.
 *
 *   node bench/rados/server.mjs --conf CEPH_CONF --socket S [--name bench] [--size-mib 1024]
 *                               [--sync always|flush]
 *
 * --sync: the data blocker's (pool "blocks") RadosBlocker `sync`. `always` (default): a write is
 * acknowledged once RADOS committed it. `flush`: write-back (as librbd's default writearound
 * cache): acknowledged once handed to librados, at most 24 MiB uncommitted; NBD FLUSH waits for
 * them, a FUA write waits for its own commit. The map blocker (pool "maps") stays `always`: NBD
 * FLUSH would cover its writes too (the composer flushes the mapper), but a FUA write that
 * allocates a block writes its map entry without FUA, so a write-back map entry could lose a FUA
 * write in a crash. Map writes happen once per newly written 4 MiB block, so this costs little.
 *
 * Imports the built packages (packages/<pkg>/dist): run `pnpm build` at the root first.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const load = (pkg) => import(pathToFileURL(join(ROOT, 'packages', pkg, 'dist', 'index.js')).href);

const { values: o } = parseArgs({
  options: {
    conf: { type: 'string' },
    socket: { type: 'string' },
    name: { type: 'string', default: 'bench' },
    'size-mib': { type: 'string', default: '1024' },
    sync: { type: 'string', default: 'always' },
  },
});
if (!o.conf || !o.socket) throw new Error('server.mjs: --conf and --socket are required');
if (o.sync !== 'always' && o.sync !== 'flush') throw new Error('server.mjs: --sync must be always or flush');

const [{ RadosBlocker }, { Mapper }, { Composer }, { NbdServer, volumeExport }] = await Promise.all([
  load('blocker-rados'),
  load('mapper'),
  load('composer'),
  load('nbd'),
]);

const identity = 'bench_rados';
const blockerm = await RadosBlocker.open({ cephConf: o.conf, pool: 'maps', identity, sync: 'always' });
const blockerb = await RadosBlocker.open({ cephConf: o.conf, pool: 'blocks', identity, sync: o.sync });
const mapper = new Mapper({ blockerm, blockerb });
const composer = new Composer({ mapper, blockerb });
let info;
try {
  info = await mapper.info(o.name);
} catch {
  info = await mapper.create(o.name, { size: Number(o['size-mib']) * 1024 * 1024 });
}
await mapper.openVolume(o.name);
const exp = volumeExport(composer, {
  name: o.name,
  size: info.size,
  readonly: false,
  blocksize: info.blocksize,
});
const quiet = { info() {}, warn() {}, error() {}, debug() {} };
const server = new NbdServer({
  exports: (n) => (n === o.name ? exp : undefined),
  list: () => [o.name],
  logger: quiet,
  // NBD_READ_POOL=<bytes>: NbdServer's readPoolBytes (an A/B knob; 0 = a fresh Buffer per READ,
  // unset = the default pool).
  readPoolBytes: process.env.NBD_READ_POOL === undefined ? undefined : Number(process.env.NBD_READ_POOL),
});
await server.listen({ path: o.socket });
console.log(
  JSON.stringify({ ready: true, socket: o.socket, size: info.size, sync: o.sync, mapsSync: blockerm.sync }),
);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  await server.close();
  await mapper.close();
  await Promise.all([blockerm.close(), blockerb.close()]);
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
