#!/usr/bin/env node
/**
 * Our NBD endpoint for the bench, in its own process: two FileBlockers (maps and data) under
 * --dir, a Mapper, a Composer and an NbdServer serving one volume (volumeExport) on a unix
 * socket. Creates the volume when it does not exist. Prints one JSON line `{"ready":...}` on
 * stdout once listening; exits cleanly on SIGTERM/SIGINT (closes the server, then the runtime).
 *
 *   node bench/nbd/server.mjs --dir D --socket S [--name bench] [--size-mib 1024]
 *                             [--blocksize-kib 4096] [--direct] [--sync always|flush]
 *
 * Run it under `node --cpu-prof --cpu-prof-dir=...` to profile (bench/nbd/run.mjs --profile).
 * Imports the built packages (packages/<pkg>/dist): run `pnpm build` at the root first.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const load = (pkg) => import(pathToFileURL(join(ROOT, 'packages', pkg, 'dist', 'index.js')).href);

const { values: o } = parseArgs({
  options: {
    dir: { type: 'string' },
    socket: { type: 'string' },
    name: { type: 'string', default: 'bench' },
    'size-mib': { type: 'string', default: '1024' },
    'blocksize-kib': { type: 'string', default: '4096' },
    direct: { type: 'boolean', default: false },
    sync: { type: 'string', default: 'always' },
    // A/B knobs to make this server more like the endpoint `vlmc map` runs: a lock lease (ms),
    // same-host serialization (host locks under DIR).
    'lease-ms': { type: 'string' },
    'host-locks': { type: 'string' },
  },
});
if (!o.dir || !o.socket) throw new Error('server.mjs: --dir and --socket are required');

const [{ FileBlocker }, { Mapper, FlockHostLocks }, { Composer }, { NbdServer, volumeExport }] =
  await Promise.all([load('blocker-file'), load('mapper'), load('composer'), load('nbd')]);

const size = Number(o['size-mib']) * 1024 * 1024;
const blocksize = Number(o['blocksize-kib']) * 1024;
const identity = 'bench_nbd';
const blockerm = new FileBlocker({ dir: join(o.dir, 'maps'), identity, direct: o.direct });
const blockerb = new FileBlocker({ dir: join(o.dir, 'data'), identity, direct: o.direct, sync: o.sync });
const mapper = new Mapper({
  blockerm,
  blockerb,
  ...(o['lease-ms'] ? { leaseMs: Number(o['lease-ms']) } : {}),
  ...(o['host-locks'] ? { hostLocks: new FlockHostLocks(o['host-locks']) } : {}),
});
const composer = new Composer({ mapper, blockerb });

let info;
try {
  info = await mapper.info(o.name);
} catch {
  info = await mapper.create(o.name, { size, blocksize });
}
await mapper.openVolume(o.name);
const exp = volumeExport(composer, {
  name: o.name,
  size: info.size,
  readonly: false,
  blocksize: info.blocksize,
});
const server = new NbdServer({
  exports: (n) => (n === o.name ? exp : undefined),
  defaultExport: o.name,
  // NBD_SNDBUF=<bytes> in the environment: SO_SNDBUF on accepted sockets (an A/B knob; 0 is the
  // kernel's default, unset is NbdServer's default of 4 MiB).
  sendBufferBytes: process.env.NBD_SNDBUF === undefined ? undefined : Number(process.env.NBD_SNDBUF),
  // NBD_READ_POOL=<bytes>: NbdServer's readPoolBytes (an A/B knob; 0 = a fresh Buffer per READ,
  // unset = the default pool).
  readPoolBytes: process.env.NBD_READ_POOL === undefined ? undefined : Number(process.env.NBD_READ_POOL),
  // NBD_DIRECT_SEND=0: replies through socket.write only (NbdServer's directSend, an A/B knob).
  directSend: process.env.NBD_DIRECT_SEND !== '0',
  // NBD_DIRECT_RECV=0: WRITE payloads through the socket stream only (NbdServer's directRecv).
  directRecv: process.env.NBD_DIRECT_RECV !== '0',
});
await server.listen({ path: o.socket });
process.stdout.write(
  `${JSON.stringify({ ready: true, pid: process.pid, socket: o.socket, size: info.size, blocksize: info.blocksize })}\n`,
);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  try {
    await server.close();
    await composer.close(o.name).catch(() => {});
    await mapper.close();
    await blockerm.close?.();
    await blockerb.close?.();
  } finally {
    // process.exit() still writes the --cpu-prof profile.
    process.exit(0);
  }
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
