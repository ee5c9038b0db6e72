/**
 * The background process behind `vlmc map`: it holds one volume open (its lock), serves it over
 * NBD, answers the control channel (snapshot, info, unmap) so that other `vlmc` commands reach
 * the holder instead of touching the map behind its back, and records itself in the run-state.
 *
 * Started by `vlmc map` (`mapVolume`, through `spawnDetached`) with the request in
 * ARCHIPELAGO_ENDPOINT (JSON); its entry is main.ts. It reports readiness with one line on stdout,
 * `READY <json entry>` or `ERROR <json error>`, then keeps running.
 */
import { dirname } from 'node:path';
import { describeHolder } from '@archipelago/blocker';
import { ArchipelagoError } from '@archipelago/libxseg';
import { Mapper } from '@archipelago/mapper';
import { NbdServer, volumeExport } from '@archipelago/nbd';
import pino from 'pino';
import { loadConfig } from '../config.js';
import { reportReady } from '../spawn.js';
import type { Runtime } from '../types.js';
import { openRuntime } from '../wiring.js';
import { type ControlRequest, serveControl } from './control.js';
import { serveVolumeFile } from './fuse.js';
import { type MappedEntry, RunState } from './runstate.js';
import { guardStop } from './stop-guard.js';
import { serveVhostUser, type VhostUserRequest } from './vhost.js';

/** The environment variable carrying the `HostRequest` as JSON. */
export const ENDPOINT_ENV = 'ARCHIPELAGO_ENDPOINT';

/** What `vlmc map` asks of the endpoint process. */
export interface HostRequest {
  config: string;
  volume: string;
  readonly: boolean;
  socket?: string;
  port?: number;
  runDir: string;
  /** Also serve the volume as this regular file through FUSE (fuse.ts). */
  fuse?: string;
  /** Also serve the volume as a vhost-user-blk back-end (vhost.ts). */
  vhostUser?: VhostUserRequest;
}

function nbdUri(volume: string, socket: string | undefined, port: number | undefined): string {
  return socket ? `nbd+unix:///${volume}?socket=${socket}` : `nbd://127.0.0.1:${port}/${volume}`;
}

/**
 * Opens the volume (its lock taken, its map cached); when another owner holds it (a live
 * migration's destination), serves it without the lock: reads uncached, and the first write asks
 * the holder to hand the volume over (docs/ARCHITECTURE.md, "Hand-over").
 */
async function openOrFollow(rt: Runtime, name: string, log: pino.Logger) {
  try {
    return await rt.mapper.openVolume(name);
  } catch (e) {
    if (!ArchipelagoError.is(e, 'ELOCKED')) throw e;
    const holder = await rt.blockerm.lockInfo(name);
    rt.mapper.markYielded?.(name);
    log.info(
      { volume: name, holder },
      `volume ${name} is held by ${holder ? describeHolder(holder) : 'another owner'}: serving reads uncached; the first write asks for it`,
    );
    return await rt.mapper.info(name);
  }
}

export async function runHost(req: HostRequest): Promise<void> {
  const log = pino({ level: process.env.ARCHIPELAGO_LOG_LEVEL ?? 'info' }, pino.destination(2));
  const state = new RunState(req.runDir);
  const loaded = loadConfig(req.config);
  const rt = await openRuntime(loaded, { logger: log, compose: 'local', handOver: true });
  const name = req.volume;
  let info = await openOrFollow(rt, name, log);
  const readonly = req.readonly || info.readonly;
  const server = new NbdServer({
    exports: (n) =>
      n === name || n === ''
        ? volumeExport(rt.composer, { name, size: info.size, readonly, blocksize: info.blocksize })
        : undefined,
    list: () => [name],
    defaultExport: name,
    logger: log,
  });
  const socket = req.port === undefined ? (req.socket ?? state.socketPath(name)) : undefined;
  const addr = await server.listen(socket ? { path: socket } : { port: req.port ?? 0, host: '127.0.0.1' });
  const fuse = req.fuse
    ? await serveVolumeFile(rt, {
        volume: name,
        size: info.size,
        readonly,
        path: req.fuse,
        logger: log,
      }).catch(async (e: unknown) => {
        await server.close();
        throw e;
      })
    : null;
  const vhost = req.vhostUser
    ? await serveVhostUser(req.vhostUser, rt, name, info, readonly, log).catch(async (e: unknown) => {
        await fuse?.close().catch(() => false);
        await server.close();
        throw e;
      })
    : null;
  let stopping: Promise<void> | null = null;
  const stop = (why: string) => {
    stopping ??= (async () => {
      log.info({ volume: name, why }, 'unmapping');
      const t0 = Date.now();
      // Bounded even when the daemons are gone (stop-guard.ts).
      const guard = guardStop(rt, log);
      // The FUSE file first: its users' last requests are served before the volume closes.
      if (fuse && !(await fuse.close().catch(() => false)))
        log.warn({ path: fuse.path }, 'the FUSE file was in use: unmounted lazily');
      await server.close();
      await vhost?.close();
      log.debug({ ms: Date.now() - t0 }, 'nbd server closed');
      try {
        // Drains, then closes: the lock is released, or given back to the host if it held the
        // volume (`vlmc open`) before it was mapped.
        // A write-back blockerb is flushed first: an unmap leaves nothing only in the page cache.
        await rt.composer.frozen(name, async () => {
          await rt.blockerb
            .flush()
            .catch((e: unknown) => log.warn({ volume: name, err: String(e) }, 'flush failed'));
          await rt.mapper.closeVolume(name, { restoreHostHold: true });
        });
      } catch (e) {
        log.warn({ volume: name, err: String(e) }, 'close failed');
      }
      log.debug({ ms: Date.now() - t0 }, 'volume closed');
      try {
        await rt.close();
      } catch (e) {
        log.warn({ volume: name, err: String(e) }, 'closing the runtime failed');
      }
      guard.done();
      await state.remove(name);
      control.close();
      log.info({ volume: name, ms: Date.now() - t0 }, 'unmapped');
    })();
    return stopping;
  };
  const control = await serveControl(state.controlPath(name), async (r: ControlRequest) => {
    switch (r.op) {
      case 'ping':
        return { volume: name, pid: process.pid };
      case 'info':
        info = await rt.mapper.info(name);
        return info;
      case 'snapshot':
        return rt.composer.snapshot(name, r.snap);
      case 'rollback':
      case 'flatten': {
        // The holder does it (mapper README "Lineage, rollback, flatten"): its own mapper in the
        // embedded wiring; in the daemon wiring mapperd does a rollback for the client that holds
        // the volume (MapperOp.ROLLBACK with the caching flag), and a flatten for anyone (vlmc
        // sends it to mapperd, not here).
        const m = rt.mapper;
        if (r.op === 'flatten') {
          if (!(m instanceof Mapper)) {
            throw new ArchipelagoError(
              'EBUSY',
              `cannot flatten "${name}" through its endpoint in the daemon wiring (pid ${process.pid}); "vlmc flatten ${name}" asks mapperd`,
              { details: { volume: name, pid: process.pid } },
            );
          }
          return m.flatten(name);
        }
        const rollback = m.rollback?.bind(m);
        if (!rollback)
          throw new ArchipelagoError('ENOTSUP', `this endpoint's mapper cannot roll back "${name}"`);
        const snap = r.snap;
        info = await rt.composer.frozen(name, async () => {
          const to = await m.info(snap);
          if (to.size !== info.size) {
            throw new ArchipelagoError(
              'EBUSY',
              `cannot roll mapped "${name}" back to "${snap}": the size would change (${info.size} to ${to.size} bytes) under its NBD clients; run "vlmc unmap ${name}" first`,
              { details: { volume: name, pid: process.pid } },
            );
          }
          return rollback(name, snap);
        });
        return info;
      }
      case 'close':
        // Drops the cache and releases the lock; the export stays up and the next I/O reopens.
        await rt.composer.close(name);
        return { volume: name };
      case 'unmap':
        setImmediate(() => void stop('unmap requested').then(() => process.exit(0)));
        return { volume: name };
      default:
        throw new ArchipelagoError('ENOTSUP', `unknown control op "${(r as { op: string }).op}"`);
    }
  });
  const entry: MappedEntry = {
    volume: name,
    pid: process.pid,
    uri: nbdUri(name, addr.path, addr.port),
    ...(addr.path ? { socket: addr.path } : {}),
    ...(addr.port !== undefined ? { port: addr.port } : {}),
    ...(fuse ? { fuse: fuse.path } : {}),
    ...(req.vhostUser ? { vhostUser: req.vhostUser.socket } : {}),
    readonly,
    control: state.controlPath(name),
    config: loaded.path,
    started: new Date().toISOString(),
  };
  await state.write(entry);
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(sig, () => void stop(sig).then(() => process.exit(0)));
  }
  reportReady(entry);
  log.info({ volume: name, uri: entry.uri, dir: dirname(state.controlPath(name)) }, 'volume mapped');
}
