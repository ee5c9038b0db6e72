/**
 * `vlmc map`, `unmap` and `showmapped`: a mapped volume is served by a background endpoint
 * process (host.ts) that holds it open, recorded in the run-state.
 *
 * An endpoint killed with kill -9 (or crashed) leaves its run-state entry, its sockets and the
 * volume lock behind; `vlmc map` of the same volume clears the first two (nobody answers on them)
 * and the new endpoint takes the lock over (its holder process is provably gone), so a client
 * that reconnects (qemu's `reconnect-delay`) goes on with no error: test-e2e/endpoint-restart/.
 *
 * One endpoint process serves all of a configuration's mapped volumes on this host (host.ts,
 * `EndpointProcess`): `vlmc map` asks it, on `<run dir>/endpoint-<key>.ctl`, to serve one more;
 * when none answers there it starts one, under a flock of `<run dir>/endpoint-<key>.lock` so that
 * two `vlmc map` at once start one process, not two. A process that is exiting (its last volume
 * was just unmapped) refuses with ECLOSED, and the map is tried again (a new process).
 */
import { closeSync, openSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { flock, flockAvailable } from '@archipelago/fastio';
import { isLoopDevice } from '@archipelago/fuse';
import { ArchipelagoError, pidAlive } from '@archipelago/libxseg';
import { validateVolumeName } from '@archipelago/mapfile';
import { removeStaleSocket, unixSocketState } from '@archipelago/nbd';
import type { Session } from '../session.js';
import { spawnDetached } from '../spawn.js';
import { callControl } from './control.js';
import { attachFuseDevice, checkFuseRequest, releaseFuse } from './fuse.js';
import { ENDPOINT_ENV, type HostRequest, hostKey, shareEndpointOf } from './host.js';
import { attachDevice, detachDevice, nbdModuleAvailable } from './kernel.js';
import type { MappedEntry, MappedStatus, RunState } from './runstate.js';
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
  const shared = shareEndpointOf(s.configuration()).shared;
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
  // Whether the volume exists, and whether a host hold elsewhere refuses a writable map, is the
  // endpoint's check (host.ts `checkMappable`): this process opens no runtime.
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
  const entry = shared
    ? await mapShared(state, { ...req, shared: true })
    : await startEndpoint(req, state.logPath(name));
  if (opts.device) {
    try {
      if (entry.fuse) entry.device = (await attachFuseDevice(entry, opts.device)).device;
      else await attachDevice(entry, opts.device);
    } catch (e) {
      if (shared) await callControl(entry.control, { op: 'unmap' }).catch(() => undefined);
      else process.kill(entry.pid, 'SIGTERM');
      throw e;
    }
    entry.device ??= opts.device;
    await state.write(entry);
  }
  return entry;
}

/** Starts an endpoint process serving `req` (its first volume); resolves once it serves it. */
async function startEndpoint(req: HostRequest, logFile: string): Promise<MappedEntry> {
  const { ready } = await spawnDetached<MappedEntry>({
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
    logFile,
    readiness: { kind: 'line' },
    timeoutMs: READY_TIMEOUT_MS,
    what: 'the endpoint',
  });
  return ready;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Errors after which the map is tried again: the process was exiting, or went meanwhile. */
function retryable(e: unknown): boolean {
  if (!ArchipelagoError.isInstance(e)) return false;
  if (e.code === 'ECLOSED' && e.details.exiting === true) return true;
  const cause = (e as { cause?: NodeJS.ErrnoException }).cause;
  // Refused or gone, or went while it had our request (reset, closed without an answer): an
  // exiting process; a map it did serve is found mapped (or stale) by the next try.
  return e.code === 'EIO' && ['ECONNREFUSED', 'ENOENT', 'ECONNRESET', 'EPIPE'].includes(cause?.code ?? '');
}

/**
 * Takes the flock of `path`, polling (the addon's flock never blocks the event loop) until
 * `deadline`; returns its release. Without the addon: no lock (the endpoint's own control socket
 * still refuses a second process, and the map is tried again).
 */
async function lockFile(path: string, deadline: number): Promise<() => void> {
  if (!flockAvailable) return () => {};
  const fd = openSync(path, 'a', 0o660);
  for (let pause = 2; !flock(fd, 'ex'); pause = Math.min(2 * pause, 50)) {
    if (Date.now() > deadline) {
      closeSync(fd);
      throw new ArchipelagoError('ETIMEDOUT', `another "vlmc map" holds ${path}: gave up waiting`, {
        details: { lock: path },
      });
    }
    await sleep(pause);
  }
  return () => closeSync(fd);
}

/**
 * Has the host's endpoint process of this configuration serve `req`: asks the one answering on
 * its control socket, or starts one (under the flock) when none does.
 */
async function mapShared(state: RunState, req: HostRequest): Promise<MappedEntry> {
  const key = hostKey(req.config);
  const ctl = state.hostControlPath(key);
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if ((await unixSocketState(ctl)) === 'live') {
      try {
        return (await callControl(ctl, { op: 'map', request: req })) as MappedEntry;
      } catch (e) {
        if (!retryable(e)) throw e;
      }
    } else {
      const release = await lockFile(state.hostLockPath(key), deadline);
      try {
        // Another `vlmc map` may have started it while this one waited for the lock.
        if ((await unixSocketState(ctl)) !== 'live') return await startEndpoint(req, state.hostLogPath(key));
      } catch (e) {
        // Lost a race to bind the control socket (no flock without the addon): ask that one.
        if (!(ArchipelagoError.is(e, 'EBUSY') && e.details.control === ctl)) throw e;
      } finally {
        release();
      }
    }
    if (Date.now() > deadline) {
      throw new ArchipelagoError(
        'ETIMEDOUT',
        `no endpoint process would map "${req.volume}" within ${READY_TIMEOUT_MS / 1000} s; see ${state.hostLogPath(key)}`,
        { details: { volume: req.volume } },
      );
    }
    await sleep(20);
  }
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
  const r = (await callControl(entry.control, { op: 'unmap' })) as { exiting?: boolean };
  // A shared endpoint answers once the volume is closed, and stays up while it serves others.
  if (r.exiting === false) return { volume: entry.volume, stale: false, pid: entry.pid };
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
