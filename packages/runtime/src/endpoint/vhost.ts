/**
 * The vhost-user-blk side of a mapped volume (`vlmc map NAME --vhost-user SOCKET`): the endpoint
 * process (host.ts) serves the volume over NBD as always and, with this, also as a vhost-user-blk
 * back-end for qemu's `vhost-user-blk-pci` on SOCKET (@archipelago/vhost). Both go through the
 * same composer, so the control channel (snapshot while mapped, info, unmap) and the lock behave
 * as for any map.
 */
import { resolve } from 'node:path';
import { ArchipelagoError } from '@archipelago/libxseg';
import { unixSocketState } from '@archipelago/nbd';
import { available, VhostUserBlkServer } from '@archipelago/vhost';
import type pino from 'pino';
import type { Runtime } from '../types.js';

/** What `vlmc map --vhost-user` adds to the endpoint's request. */
export interface VhostUserRequest {
  socket: string;
  queues: number;
}

/**
 * Checks, in `vlmc map`'s own process, that SOCKET can be served: no process answers on it, no
 * other file is there. Returns the absolute path. (Whether the addon is built is the endpoint
 * process's check: `vlmc` itself is a bundle that does not load it.)
 */
export async function checkVhostSocket(socket: string): Promise<string> {
  const path = resolve(socket);
  const there = await unixSocketState(path).catch(() => 'absent' as const);
  if (there === 'live') {
    throw new ArchipelagoError(
      'EBUSY',
      `socket ${path} is in use by another process; map with another --vhost-user path`,
      {
        details: { socket: path },
      },
    );
  }
  if (there === 'not-socket') {
    throw new ArchipelagoError('EINVAL', `cannot listen on ${path}: a file that is not a socket is there`, {
      details: { socket: path },
    });
  }
  return path;
}

/** Starts the vhost-user-blk back-end of `name` on `req.socket`; `close()` stops it. */
export async function serveVhostUser(
  req: VhostUserRequest,
  rt: Runtime,
  name: string,
  info: { size: number; blocksize: number },
  readonly: boolean,
  log: pino.Logger,
): Promise<VhostUserBlkServer> {
  if (!available()) {
    throw new ArchipelagoError(
      'ENOTSUP',
      'vhost-user-blk needs the @archipelago/vhost native addon, which is not built here (a C++ compiler and the Node headers are needed: pnpm run build)',
    );
  }
  const c = rt.composer;
  const server = new VhostUserBlkServer({
    path: req.socket,
    size: info.size,
    readonly,
    queues: req.queues,
    discardAlignment: info.blocksize,
    serial: name,
    logger: log,
    backend: {
      readInto: c.readInto
        ? (off, out) => c.readInto!(name, off, out)
        : (off, out) => c.read(name, off, out.length).then((b) => b.copy(out)),
      write: (off, data) => c.write(name, off, data),
      flush: () => c.flush(name),
      trim: (off, len) => c.trim(name, off, len),
      writeZeroes: (off, len, o) => c.writeZeroes(name, off, len, o),
    },
  });
  await server.listen();
  log.info({ volume: name, socket: req.socket, queues: req.queues }, 'vhost-user-blk listening');
  return server;
}
