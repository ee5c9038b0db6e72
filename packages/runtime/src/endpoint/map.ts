/**
 * `vlmc map`, `unmap` and `showmapped`: a mapped volume is served by a background endpoint
 * process (host.ts) that holds it open, recorded in the run-state.
 *
 * An endpoint killed with kill -9 (or crashed) leaves its run-state entry, its sockets and the
 * volume lock behind; `vlmc map` of the same volume clears the first two (nobody answers on them)
 * and the new endpoint takes the lock over (its holder process is provably gone), so a client
 * that reconnects (qemu's `reconnect-delay`) goes on with no error: test-e2e/endpoint-restart/.
 */
import { mkdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { describeHolder } from '@archipelago/blocker';
import { isLoopDevice } from '@archipelago/fuse';
import { ArchipelagoError, pidAlive } from '@archipelago/libxseg';
import { validateVolumeName } from '@archipelago/mapfile';
import { removeStaleSocket } from '@archipelago/nbd';
import type { Session } from '../session.js';
import { spawnDetached } from '../spawn.js';
import { callControl } from './control.js';
import { attachFuseDevice, checkFuseRequest, releaseFuse } from './fuse.js';
import { ENDPOINT_ENV, type HostRequest } from './host.js';
import { attachDevice, detachDevice, nbdModuleAvailable } from './kernel.js';
import type { MappedEntry, MappedStatus } from './runstate.js';
import { checkVhostSocket } from './vhost.js';

/** The endpoint process's entry script (built; resolved when first needed, so importing works unbuilt). */
export function endpointMain(): string {
  return createRequire(import.meta.url).resolve('@archipelago/runtime/endpoint');
}

const READY_TIMEOUT_MS = 60_000;
const EXIT_WAIT_MS = 30_000;

export interface MapOptions {
  readonly?: boolean;
  /** Unix socket to listen on (default: `<run dir>/<volume>.sock`). */
  socket?: string;
  /** TCP port on 127.0.0.1 instead of a unix socket (0 picks one). */
  port?: number;
  /**
   * Also attach this kernel NBD device through nbd-client; with `fuse`, a loop device over the
   * file instead: `loop` (the first free one) or `/dev/loopN`.
   */
  device?: string;
  /** Also serve the volume as this regular file through FUSE (created when missing). */
  fuse?: string;
  /** Also serve a vhost-user-blk back-end on this unix socket (for qemu's vhost-user-blk-pci). */
  vhostUser?: string;
  /** The most virtqueues the vhost-user-blk device offers (default 1). */
  queues?: number;
}

/**
 * Starts the endpoint of `name` (it opens the volume, takes its lock, serves NBD), waits until it
 * accepts connections, and returns its run-state entry. What a dead endpoint of `name` left (its
 * entry, its sockets) is cleared first; refused with EBUSY when `name` is mapped by a live
 * endpoint or the socket (port) is in use by another one or another process, EINVAL when a
 * non-socket file is at the socket path.
 */
export async function mapVolume(s: Session, name: string, opts: MapOptions = {}): Promise<MappedEntry> {
  validateVolumeName(name);
  if (opts.device && !opts.fuse && (opts.device === 'loop' || isLoopDevice(opts.device))) {
    throw new ArchipelagoError(
      'EINVAL',
      `a loop device goes over a FUSE file: add --fuse PATH to attach ${opts.device}`,
      {
        details: { device: opts.device },
      },
    );
  }
  if (opts.device && !opts.fuse && !nbdModuleAvailable(opts.device)) {
    throw new ArchipelagoError(
      'ENOTSUP',
      `cannot attach ${opts.device}: this kernel has no nbd module loaded (try "modprobe nbd"); map without --device and use the NBD URI`,
      { details: { device: opts.device } },
    );
  }
  const state = s.runState();
  const existing = await state.read(name);
  if (existing?.alive) {
    throw new ArchipelagoError(
      'EBUSY',
      `"${name}" is already mapped at ${existing.uri} (pid ${existing.pid}); "vlmc unmap ${name}" first`,
      {
        details: { volume: name, uri: existing.uri, pid: existing.pid },
      },
    );
  }
  if (existing?.fuse) await releaseFuse(existing); // its loop device and dead FUSE mount
  if (existing) await state.remove(name); // stale: its process is gone
  // Fail early, in this process, for a volume that does not exist. A volume another owner holds
  // is mapped all the same (live migration's destination): the endpoint serves its reads
  // uncached and its first write asks the holder to hand the volume over.
  const rt = await s.runtime();
  await rt.mapper.info(name);
  // A host hold elsewhere (`vlmc open`/`vlmc lock` there) has no process that could hand the
  // volume over: refuse a writable mapping now rather than fail its first write later.
  const held = await rt.blockerm.lockInfo(name);
  if (held !== null && held.owner !== rt.identity && held.process === null && !opts.readonly) {
    throw new ArchipelagoError(
      'ELOCKED',
      `volume "${name}" is locked by ${describeHolder(held)}, which no process there can hand over; "vlmc close ${name}" there (or "vlmc unlock -f ${name}"), or map it --readonly`,
      { details: { volume: name, owner: held.owner } },
    );
  }
  // Where the endpoint will listen: what a dead endpoint (kill -9) left there is cleared, a socket
  // or port a live endpoint or another process uses is refused, before anything is started.
  const socket = await state.listenTarget(name, opts, existing);
  // The FUSE file: a regular file (created when missing) nothing is mounted on.
  const fuse = opts.fuse !== undefined ? await checkFuseRequest(opts.fuse, opts.device) : undefined;
  const vhostUser = opts.vhostUser ? await checkVhostSocket(opts.vhostUser) : undefined;
  await mkdir(state.dir, { recursive: true, mode: 0o770 });
  const req: HostRequest = {
    config: s.configuration().path,
    volume: name,
    readonly: opts.readonly ?? false,
    ...(socket ? { socket } : {}),
    ...(opts.port !== undefined ? { port: opts.port } : {}),
    runDir: state.dir,
    ...(fuse ? { fuse } : {}),
    ...(vhostUser ? { vhostUser: { socket: vhostUser, queues: opts.queues ?? 1 } } : {}),
  };
  const { ready: entry } = await spawnDetached<MappedEntry>({
    entry: endpointMain(),
    env: {
      [ENDPOINT_ENV]: JSON.stringify(req),
      UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '16',
      // libuv submits file I/O through io_uring by default here, and the kernel completes
      // buffered writes inline on the event-loop thread; with it off they run on the thread
      // pool, in parallel (bench/nbd: 4 KiB random write +35%, QD1 read +30%). libuv reads it
      // when the loop starts, so it must be in the process's environment, not set from JS.
      UV_USE_IO_URING: process.env.UV_USE_IO_URING ?? '0',
    },
    logFile: state.logPath(name),
    readiness: { kind: 'line' },
    timeoutMs: READY_TIMEOUT_MS,
    what: 'the endpoint',
  });
  if (opts.device) {
    try {
      if (entry.fuse) entry.device = (await attachFuseDevice(entry, opts.device)).device;
      else await attachDevice(entry, opts.device);
    } catch (e) {
      process.kill(entry.pid, 'SIGTERM');
      throw e;
    }
    entry.device ??= opts.device;
    await state.write(entry);
  }
  return entry;
}

/**
 * Stops the endpoint of a mapped volume (by name, NBD URI or device): it drains, closes the
 * volume and exits. A stale mapping (its process died) is cleaned up: the entry is removed and
 * this host's lock on the volume released.
 */
export async function unmapVolume(
  s: Session,
  target: string,
): Promise<{ volume: string; stale: boolean; pid: number }> {
  const state = s.runState();
  const entry = await state.find(target);
  if (!entry) {
    throw new ArchipelagoError(
      'ENOENT_VOLUME',
      `"${target}" is not mapped on this host (see "vlmc showmapped")`,
      {
        details: { target },
      },
    );
  }
  if (entry.fuse) await releaseFuse(entry);
  else if (entry.device) await detachDevice(entry.device);
  if (!entry.alive) {
    await state.remove(entry.volume, entry.socket);
    if (entry.vhostUser) await removeStaleSocket(entry.vhostUser); // nobody answers there any more
    const rt = await s.runtime();
    if ((await rt.blockerm.lockOwner(entry.volume)) === rt.identity) await rt.mapper.unlock(entry.volume);
    return { volume: entry.volume, stale: true, pid: entry.pid };
  }
  await callControl(entry.control, { op: 'unmap' });
  const deadline = Date.now() + EXIT_WAIT_MS;
  while (pidAlive(entry.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  if (pidAlive(entry.pid)) {
    throw new ArchipelagoError(
      'ETIMEDOUT',
      `the endpoint of "${entry.volume}" (pid ${entry.pid}) did not exit in ${EXIT_WAIT_MS / 1000} s`,
      { details: { volume: entry.volume, pid: entry.pid } },
    );
  }
  return { volume: entry.volume, stale: false, pid: entry.pid };
}

/** The volumes mapped on this host, stale ones (their process died) included. */
export function listMapped(s: Session): Promise<MappedStatus[]> {
  return s.runState().list();
}
