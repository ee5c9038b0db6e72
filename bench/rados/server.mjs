#!/usr/bin/env node
/**
 * Our NBD endpoint on RADOS for the bench, in its own process: RadosBlocker x2 (pools "maps" and
 * "blocks"), a Mapper, a Composer and an NbdServer serving one volume on a unix socket. Prints one
 * JSON line `{"ready":...}` once listening; exits cleanly on SIGTERM.
 *
 *   node bench/rados/server.mjs --conf CEPH_CONF --socket S [--name bench] [--size-mib 1024]
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
  },
});
if (!o.conf || !o.socket) throw new Error('server.mjs: --conf and --socket are required');

const [{ RadosBlocker }, { Mapper }, { Composer }, { NbdServer, volumeExport }] = await Promise.all([
  load('blocker-rados'),
  load('mapper'),
  load('composer'),
  load('nbd'),
]);

const identity = 'bench_rados';
const blockerm = await RadosBlocker.open({ cephConf: o.conf, pool: 'maps', identity });
const blockerb = await RadosBlocker.open({ cephConf: o.conf, pool: 'blocks', identity });
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
console.log(JSON.stringify({ ready: true, socket: o.socket, size: info.size }));

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
