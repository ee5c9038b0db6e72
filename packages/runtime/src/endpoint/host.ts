/**
 * The background process behind `vlmc map`: it holds mapped volumes open (their locks), serves
 * each over NBD (and FUSE, vhost-user), answers each volume's control channel (snapshot, info,
 * unmap) so that other `vlmc` commands reach the holder instead of touching the map behind its
 * back, and records each volume in the run-state.
 *
 * One process per (configuration, user) serves all the host's mapped volumes (the shared mode,
 * the default): one runtime (blockers, mapper, composer, segment connection), and per volume its
 * own NBD socket, control socket, run-state entry, lock, lease and stop. The process answers
 * `map` requests on its own control socket `<run dir>/endpoint-<key>.ctl` (`EndpointProcess`,
 * `hostKey`) and exits after its last volume is unmapped; a `map` arriving once it decided to
 * exit is refused with ECLOSED (`details.exiting`), and `vlmc map` starts a new process. With
 * `ARCHIPELAGO_ENDPOINT_MODE=per-volume` every `vlmc map` starts its own process, as before.
 *
 * Started by `vlmc map` (`mapVolume`, through `spawnDetached`) with the first volume's request in
 * ARCHIPELAGO_ENDPOINT (JSON); its entry is main.ts. It reports readiness with one line on stdout,
 * `READY <json entry>` or `ERROR <json error>`, then keeps running.
 */
import { createHash, randomBytes } from 'node:crypto';
import { symlink } from 'node:fs/promises';
import type { Server } from 'node:net';
import { basename, dirname, resolve } from 'node:path';
import { describeHolder } from '@archipelago/blocker';
import { ArchipelagoError, describeError } from '@archipelago/libxseg';
import { Mapper } from '@archipelago/mapper';
import { NbdServer, unlinkIfPresent, volumeExport } from '@archipelago/nbd';
import pino from 'pino';
import { type LoadedConfig, loadConfig } from '../config.js';
import { dataPathOf, openVolumeRuntime } from '../daemons-client.js';
import { chooseDataPath, DATA_PATH_ENV } from '../direct-data.js';
import { sectionOf } from '../paths.js';
import { reportReady, reportStartFailure } from '../spawn.js';
import type { Runtime } from '../types.js';
import { chooseWiring, openRuntime } from '../wiring.js';
import { type ControlRequest, serveControl } from './control.js';
import { serveVolumeFile } from './fuse.js';
import { type MappedEntry, RunState } from './runstate.js';
import { guardStop, HARD_EXIT_AFTER_MS, stopGraceMs } from './stop-guard.js';
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
  /**
   * The process serves this and later volumes (`map` on its control socket) and exits after the
   * last is unmapped; false or absent: this volume alone, and it exits when it is unmapped.
   */
  shared?: boolean;
}

/** `per-volume`: every `vlmc map` starts its own endpoint process (the mode before issue 18). */
export const ENDPOINT_MODE_ENV = 'ARCHIPELAGO_ENDPOINT_MODE';

/** Whether `vlmc map` uses the host's shared endpoint process (the default, or `shared`). */
export function sharedEndpoint(env: NodeJS.ProcessEnv = process.env): boolean {
  const mode = env[ENDPOINT_MODE_ENV];
  if (mode === undefined || mode === '' || mode === 'shared') return true;
  if (mode === 'per-volume') return false;
  throw new ArchipelagoError(
    'EINVAL',
    `${ENDPOINT_MODE_ENV} is "${mode}": "shared" (one endpoint process per host, the default) or "per-volume"`,
    { details: { [ENDPOINT_MODE_ENV]: mode } },
  );
}

/**
 * Whether the volumes of an endpoint process of `loaded` each need a RADOS client of their own,
 * and why (null: they share the process's runtime). Ceph fences a client, not a volume: a break
 * of one volume's lock blocklists the client that holds it (and the clients its record lists), so
 * a client that served every volume of the process would fail them all with EIO, and every later
 * map there too. So in the embedded wiring over a `rados_blocker`, each volume has a runtime of
 * its own (blockers, mapper, composer) with a librados client of its own (`radosClientTag`); in
 * the daemon wiring with the direct data path over RADOS, each volume has its own data client and
 * composer over the process's clients of the daemons (`openVolumeRuntime`).
 */
export function ownRadosClientsOf(loaded: LoadedConfig, env: NodeJS.ProcessEnv = process.env): string | null {
  if (chooseWiring(loaded, env) === 'embedded') {
    for (const role of ['blockerb', 'blockerm'])
      if (sectionOf(loaded, role).type === 'rados_blocker')
        return `[${role}] is a rados_blocker in the embedded wiring: each mapped volume has a RADOS client of its own, so that a lock break fences only its volume`;
  } else if (
    sectionOf(loaded, 'blockerb').type === 'rados_blocker' &&
    chooseDataPath(loaded, env).path === 'direct'
  ) {
    return `the direct data path over a rados_blocker (${DATA_PATH_ENV}): each mapped volume's data client is its own, registered in that volume's lock record alone`;
  }
  return null;
}

/**
 * Whether the volumes of `loaded` share the host's endpoint process: unless asked not to
 * (`sharedEndpoint`). Over RADOS each volume then has a client of its own in that process
 * (`ownRadosClientsOf`), so a lock break still fences only its volume.
 */
export function shareEndpointOf(
  loaded: LoadedConfig,
  env: NodeJS.ProcessEnv = process.env,
): { shared: boolean; why: string } {
  if (!sharedEndpoint(env)) return { shared: false, why: `${ENDPOINT_MODE_ENV}=per-volume` };
  const own = ownRadosClientsOf(loaded, env);
  return {
    shared: true,
    why: own === null ? 'one endpoint process per host' : `one endpoint process per host; ${own}`,
  };
}

/** Which shared endpoint process serves a configuration: a digest of its absolute path. */
export function hostKey(configPath: string): string {
  return createHash('sha256').update(resolve(configPath)).digest('hex').slice(0, 12);
}

/** Requests on the shared endpoint process's own control socket. */
export type HostControlRequest = { op: 'ping' } | { op: 'map'; request: HostRequest };

/** What `ping` answers on the process's control socket. */
export interface HostStatus {
  pid: number;
  config: string;
  volumes: string[];
  exiting: boolean;
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

/**
 * Fails early for a volume that does not exist, or one that a host hold elsewhere (`vlmc
 * open`/`vlmc lock` there) keeps: no process there could hand it over, so a writable mapping is
 * refused now rather than fail its first write later. A volume another owner's process holds is
 * mapped all the same (live migration's destination: `openOrFollow`).
 */
async function checkMappable(rt: Runtime, name: string, readonly: boolean): Promise<void> {
  await rt.mapper.info(name);
  const held = await rt.blockerm.lockInfo(name);
  if (held !== null && held.owner !== rt.identity && held.process === null && !readonly) {
    throw new ArchipelagoError(
      'ELOCKED',
      `volume "${name}" is locked by ${describeHolder(held)}, which no process there can hand over; "vlmc close ${name}" there (or "vlmc unlock -f ${name}"), or map it --readonly`,
      { details: { volume: name, owner: held.owner } },
    );
  }
}

/** A volume the process serves. */
interface Served {
  entry: MappedEntry;
  stop(why: string): Promise<void>;
}

/**
 * The volumes one endpoint process serves over one runtime. Per volume: its NBD server and
 * socket, FUSE file, vhost-user back-end, control socket, run-state entry and stop; a failure of
 * one (its map fails, its handlers throw, its blocker fails, it is fenced) is that volume's.
 */
export class EndpointProcess {
  private readonly volumes = new Map<string, Served>();
  /** Volumes whose map is under way. */
  private readonly starting = new Set<string>();
  /** Decided to exit: maps are refused from then on. */
  private exiting = false;
  private hostControl: Server | null = null;
  /** Set once the first volume is served: before that a failure is the start's (main.ts). */
  private ready = false;

  /**
   * `rt`: the process's runtime, or null when every volume has one of its own. `runtimeOf`: the
   * runtime a volume is served over (default: `rt`); one other than `rt` is closed at its unmap.
   */
  constructor(
    readonly rt: Runtime | null,
    readonly config: string,
    readonly state: RunState,
    readonly log: pino.Logger,
    readonly shared: boolean,
    private readonly runtimeOf: (volume: string) => Promise<Runtime> = async () => {
      if (rt === null) throw new ArchipelagoError('EINVAL', 'an endpoint process without a runtime');
      return rt;
    },
  ) {}

  /** The process's own control socket (shared mode). */
  get controlPath(): string {
    return this.state.hostControlPath(hostKey(this.config));
  }

  /**
   * Answers `ping` and `map` on `controlPath`. EBUSY when a live process answers there already:
   * the host's endpoint process runs (the map request's flock makes that a rare race).
   */
  async listen(): Promise<void> {
    this.hostControl = await serveControl<HostControlRequest>(this.controlPath, async (r) => {
      switch (r.op) {
        case 'ping':
          return this.status();
        case 'map':
          return this.map(r.request);
        default:
          throw new ArchipelagoError('ENOTSUP', `unknown endpoint op "${(r as { op: string }).op}"`);
      }
    });
  }

  status(): HostStatus {
    return {
      pid: process.pid,
      config: this.config,
      volumes: [...this.volumes.keys()].sort(),
      exiting: this.exiting,
    };
  }

  /** Serves one more volume; ECLOSED once the process is exiting, EBUSY when it serves it already. */
  async map(req: HostRequest): Promise<MappedEntry> {
    const name = req.volume;
    if (this.exiting) {
      throw new ArchipelagoError(
        'ECLOSED',
        `the endpoint process (pid ${process.pid}) is exiting: its last volume was unmapped; map again`,
        { details: { pid: process.pid, exiting: true } },
      );
    }
    if (this.volumes.has(name) || this.starting.has(name)) {
      throw new ArchipelagoError(
        'EBUSY',
        `"${name}" is already mapped by the endpoint process (pid ${process.pid}); "vlmc unmap ${name}" first`,
        { details: { volume: name, pid: process.pid } },
      );
    }
    if (resolve(req.config) !== resolve(this.config)) {
      throw new ArchipelagoError(
        'EINVAL',
        `the endpoint process (pid ${process.pid}) serves ${this.config}, not ${req.config}`,
        { details: { pid: process.pid, config: this.config } },
      );
    }
    this.starting.add(name);
    try {
      const served = await this.serve(req);
      this.volumes.set(name, served);
      this.ready = true;
      return served.entry;
    } finally {
      this.starting.delete(name);
      this.exitIfIdle();
    }
  }

  /**
   * The first volume's map failed: true when other maps arrived meanwhile, and the process goes on
   * for them (it exits after the last, as after an unmap); false when it is idle and may just exit.
   */
  startFailed(): boolean {
    if (this.volumes.size === 0 && this.starting.size === 0) return false;
    this.ready = true;
    for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
      process.on(sig, () => void this.shutdown(sig).then(() => process.exit(0)));
    }
    return true;
  }

  /** Stops every volume, then the process's runtime (a signal, or the last unmap). */
  async shutdown(why: string): Promise<void> {
    if (this.shared) this.exiting = true; // no new volume while the others stop
    await Promise.all([...this.volumes.values()].map((v) => v.stop(why)));
    if (this.shared) await this.exit(why);
  }

  /** Shared mode: exits once nothing is served nor being mapped (after the last unmap). */
  private exitIfIdle(): boolean {
    if (!this.shared || !this.ready || this.exiting) return this.exiting;
    if (this.volumes.size > 0 || this.starting.size > 0) return false;
    // Decided here, synchronously: a map arriving from now on is refused (ECLOSED) and its
    // `vlmc map` starts a new process once this one's control socket is gone.
    this.exiting = true;
    setImmediate(() => void this.exit('the last volume was unmapped').then(() => process.exit(0)));
    return true;
  }

  private exit(why: string): Promise<void> {
    this.exiting = true;
    const run = async () => {
      const t0 = Date.now();
      this.hostControl?.close(); // unlinks the socket: the next `vlmc map` starts a new process
      if (this.rt !== null) {
        const guard = guardStop(this.rt, this.log);
        try {
          await this.rt.close();
        } catch (e) {
          this.log.warn({ err: String(e) }, 'closing the runtime failed');
        }
        guard.done();
      }
      this.log.info({ why, ms: Date.now() - t0 }, 'endpoint process exiting');
    };
    return run();
  }

  private async serve(req: HostRequest): Promise<Served> {
    const { state } = this;
    const name = req.volume;
    const log = this.shared ? this.log.child({ volume: name }) : this.log;
    const rt = await this.runtimeOf(name);
    /** The volume's own runtime (a RADOS client of its own): closed with the volume. */
    const own = rt !== this.rt;
    const closeOwn = async () => {
      if (!own) return;
      const guard = guardStop(rt, log, { whole: false });
      await rt
        .close()
        .catch((e: unknown) => log.warn({ err: String(e) }, "closing the volume's runtime failed"));
      guard.done();
    };
    let info = await (async () => {
      await checkMappable(rt, name, req.readonly);
      return openOrFollow(rt, name, log);
    })().catch(async (e: unknown) => {
      await closeOwn();
      throw e;
    });
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
    // What was opened is closed again when the map fails past this point.
    const undo: Array<() => Promise<unknown>> = [
      closeOwn,
      () => rt.mapper.closeVolume(name, { restoreHostHold: true }),
    ];
    const fail = async (e: unknown): Promise<never> => {
      for (const u of undo.reverse()) await u().catch(() => undefined);
      throw e;
    };
    const socket = req.port === undefined ? (req.socket ?? state.socketPath(name)) : undefined;
    const addr = await server
      .listen(socket ? { path: socket } : { port: req.port ?? 0, host: '127.0.0.1' })
      .catch(fail);
    undo.push(() => server.close());
    const fuse = req.fuse
      ? await serveVolumeFile(rt, {
          volume: name,
          size: info.size,
          readonly,
          path: req.fuse,
          logger: log,
        }).catch(fail)
      : null;
    if (fuse) undo.push(() => fuse.close());
    const vhost = req.vhostUser
      ? await serveVhostUser(req.vhostUser, rt, name, info, readonly, log).catch(fail)
      : null;
    if (vhost) undo.push(() => vhost.close());
    let stopping: Promise<void> | null = null;
    const closeVolume = async () => {
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
      // Its own runtime (RADOS client) goes with it: the client shut down, its address taken off
      // a lock record that stays held (RadosDirectDataBlocker.retire).
      await closeOwn();
    };
    const stop = (why: string) => {
      stopping ??= (async () => {
        log.info({ volume: name, why }, 'unmapping');
        const t0 = Date.now();
        // Bounded even when the daemons are gone (stop-guard.ts). Shared mode: the guard fails
        // the daemon calls only when the daemons are gone for every volume, never exits the
        // process, and this volume's close is bounded alone; the process's exit is guarded
        // (`exit`) as a per-volume process's stop is.
        const guard = guardStop(rt, log, { whole: !this.shared });
        // The FUSE file first: its users' last requests are served before the volume closes.
        if (fuse && !(await fuse.close().catch(() => false)))
          log.warn({ path: fuse.path }, 'the FUSE file was in use: unmounted lazily');
        await server.close();
        await vhost?.close();
        log.debug({ ms: Date.now() - t0 }, 'nbd server closed');
        if (this.shared) {
          const limit = stopGraceMs() + HARD_EXIT_AFTER_MS;
          let timer: NodeJS.Timeout | undefined;
          const late = new Promise<'late'>((r) => {
            timer = setTimeout(() => r('late'), limit);
          });
          if ((await Promise.race([closeVolume(), late])) === 'late')
            log.warn({ volume: name, ms: limit }, 'close did not finish: unmapped without it');
          clearTimeout(timer);
        } else {
          await closeVolume();
          log.debug({ ms: Date.now() - t0 }, 'volume closed');
          try {
            await rt.close();
          } catch (e) {
            log.warn({ volume: name, err: String(e) }, 'closing the runtime failed');
          }
        }
        guard.done();
        this.volumes.delete(name);
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
          if (!this.shared) {
            setImmediate(() => void stop('unmap requested').then(() => process.exit(0)));
            return { volume: name };
          }
          // Answered once the volume is closed; `exiting`: the process goes too (its last volume).
          await stop('unmap requested');
          return { volume: name, exiting: this.exitIfIdle() };
        default:
          throw new ArchipelagoError('ENOTSUP', `unknown control op "${(r as { op: string }).op}"`);
      }
    }).catch(fail);
    undo.push(async () => control.close());
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
      config: this.config,
      started: new Date().toISOString(),
    };
    await state.write(entry).catch(fail);
    if (this.shared) {
      // `<volume>.log` names the process's log, where this volume's lines are (tagged `volume`).
      const link = state.logPath(name);
      await unlinkIfPresent(link).catch(() => undefined);
      await symlink(basename(state.hostLogPath(hostKey(this.config))), link).catch(() => undefined);
    }
    log.info({ volume: name, uri: entry.uri, dir: dirname(state.controlPath(name)) }, 'volume mapped');
    return { entry, stop };
  }
}

export async function runHost(req: HostRequest): Promise<void> {
  const log = pino({ level: process.env.ARCHIPELAGO_LOG_LEVEL ?? 'info' }, pino.destination(2));
  const state = new RunState(req.runDir);
  const loaded = loadConfig(req.config);
  const shared = req.shared === true;
  const opts = { logger: log, compose: 'local', handOver: true } as const;
  // Shared over RADOS: each volume gets a librados client of its own (ownRadosClientsOf).
  const own = shared ? ownRadosClientsOf(loaded) : null;
  let proc: EndpointProcess;
  if (own !== null && chooseWiring(loaded) === 'embedded') {
    // A runtime per volume, none for the process.
    log.info({ why: own }, 'a runtime per volume');
    proc = new EndpointProcess(null, loaded.path, state, log, shared, (volume) =>
      openRuntime(loaded, { ...opts, radosClientTag: `volume ${volume} ${randomBytes(6).toString('hex')}` }),
    );
  } else {
    const rt = await openRuntime(loaded, { ...opts, volumeRuntimes: own !== null });
    const dataPath = dataPathOf(rt);
    if (dataPath) log.info({ path: dataPath.path, why: dataPath.why }, `data path: ${dataPath.path}`);
    if (own !== null) log.info({ why: own }, 'a data client per volume');
    proc = new EndpointProcess(rt, loaded.path, state, log, shared, (volume) =>
      openVolumeRuntime(rt, volume),
    );
  }
  if (shared) {
    // One volume's fault is its own: an exception escaping its handlers is logged, and the other
    // volumes' I/O goes on (a per-volume process would die of it and lose only that volume).
    process.on('uncaughtException', (e) =>
      log.error({ err: String(e), stack: e.stack }, 'uncaught exception'),
    );
    process.on('unhandledRejection', (e) => log.error({ err: String(e) }, 'unhandled rejection'));
    await proc.listen();
  }
  let entry: MappedEntry;
  try {
    entry = await proc.map(req);
  } catch (e) {
    // The first volume failed. Maps that other `vlmc map` sent meanwhile go on, and the process
    // exits after them (`exitIfIdle`); else main.ts reports it and exits, the socket gone first.
    if (shared && proc.startFailed()) {
      reportStartFailure(describeError(e));
      return;
    }
    if (shared) await unlinkIfPresent(proc.controlPath).catch(() => undefined);
    throw e;
  }
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(sig, () => void proc.shutdown(sig).then(() => process.exit(0)));
  }
  reportReady(entry);
}
