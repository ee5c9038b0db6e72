/**
 * The peer runtime: one process per role. It applies its umask before it creates anything, and
 * writes nothing to the segment before its checks pass: refuses a live pidfile, makes its data
 * directories, opens its backend (a blocker peer's RADOS connection fails the start here, within
 * its connect timeout), joins (or creates) the segment and shares it with its group, binds its
 * ports (a dead previous owner's accepted requests are failed back by the bind), creates the
 * pidfile, switches to its account (when started as root; see privileges.ts) and checks that
 * account can use its directories, then writes its pid into the pidfile — the sign that it is
 * ready — and serves up to `nrOps` requests at once. SIGTERM/SIGINT drain what was accepted,
 * leave the ports and remove the pidfile; SIGUSR1 lowers and SIGUSR2 raises the log level.
 */
import { closeSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { ArchipelagoError, XS } from '@archipelago/libxseg';
import { type Port, Segment, type XsegRequest } from '@archipelago/libxseg/segment';
import { type Logger, pino } from 'pino';
import { type PeerOptions, segmentSpec, syslogSocketOf } from './options.js';
import { commitPidfile, createPidfile, readPidfile, removePidfile } from './pidfile.js';
import { applyUmask, checkServiceDirs, isRoot, makeServiceDir, switchAccount } from './privileges.js';
import { daemonSpin, encodeError } from './protocol/wire.js';
import {
  createFileBlockerService,
  createRadosBlockerService,
  type PeerService,
} from './servers/blocker-peer.js';
import { createMapperService } from './servers/mapper-peer.js';
import { createVlmcService } from './servers/vlmc-peer.js';
import { syslogStream } from './syslog.js';

/** pino levels for the original's log_level 0..3. */
export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;

/**
 * The peer's pino logger: to `logfile`, or to syslog (LOCAL0) when `logfile` is `syslog` or
 * `syslog:<socket>`; without that socket, to stderr (which the tool sends to `<run dir>/<role>.log`).
 */
export function createLogger(logfile: string, logLevel: number, role: string): Logger {
  const o = { name: role, level: LOG_LEVELS[logLevel] ?? 'info', base: { pid: process.pid, role } };
  const socket = syslogSocketOf(logfile);
  if (socket !== null) {
    const stream = syslogStream(socket, `archipelago-${role}`);
    if (stream) return pino(o, stream);
    const log = pino(o, pino.destination({ dest: 2, sync: true }));
    log.warn({ socket }, 'no syslog socket: logging to stderr');
    return log;
  }
  mkdirSync(dirname(logfile), { recursive: true });
  return pino(o, pino.destination({ dest: logfile, sync: true, mkdir: true }));
}

/**
 * What the options say this peer serves. A blocker's backend is opened before the segment is
 * touched: a rados_blocker connects first, and an unreachable cluster rejects here, within its
 * connect timeout, before anything is bound or the pidfile written.
 */
async function createBlockerService(opts: PeerOptions, log: Logger): Promise<PeerService | undefined> {
  const b = opts.blocker;
  if (b === undefined) return undefined;
  if (b.type === 'file_blocker') return createFileBlockerService(b, opts.role);
  log.info(blockerSummary(b), 'connecting to the Ceph cluster');
  return createRadosBlockerService(b, opts.role);
}

function createSegmentService(opts: PeerOptions, seg: Segment, log: Logger): PeerService {
  if (opts.mapperd) return createMapperService(opts.mapperd, seg, log);
  if (opts.vlmcd) return createVlmcService(opts.vlmcd, seg, log);
  throw new ArchipelagoError('EINVAL_CONFIG', `${opts.role}: the options name nothing to serve`);
}

/** What the start log line says about the blocker. */
function blockerSummary(b: NonNullable<PeerOptions['blocker']>): Record<string, unknown> {
  if (b.type === 'file_blocker') return { dir: b.dir };
  return {
    pool: b.pool,
    ...(b.namespace ? { namespace: b.namespace } : {}),
    cephConf: b.cephConf ?? null,
    cephxId: b.cephxId ?? 'admin',
  };
}

/**
 * The directories this peer writes into, with the configuration key that names them: made (mode
 * 2770, owned by its account when root) before the switch, checked after it.
 */
function serviceDirs(opts: PeerOptions): Array<{ key: string; path: string }> {
  const r = opts.role;
  const b = opts.blocker;
  if (b?.type === 'file_blocker')
    return [
      { key: `[${r}] archip_dir`, path: b.dir },
      ...(b.lockDir !== undefined ? [{ key: `[${r}] lock_dir`, path: b.lockDir }] : []),
    ];
  if (opts.mapperd?.hostLockDir !== undefined)
    return [{ key: 'the host locks (<RUN_DIR>/host-locks)', path: opts.mapperd.hostLockDir }];
  return [];
}

/** `nrThreads` only works when the process was spawned with it (`peerEnvironment`): say when not. */
function checkThreadPool(opts: PeerOptions, log: Logger): void {
  if (opts.nrThreads === undefined) return;
  const env = process.env.UV_THREADPOOL_SIZE;
  if (env !== String(opts.nrThreads))
    log.warn(
      { nrThreads: opts.nrThreads, UV_THREADPOOL_SIZE: env ?? null },
      'nr_threads has no effect: the peer was not started with UV_THREADPOOL_SIZE set to it',
    );
}

export interface RunningPeer {
  readonly ports: readonly number[];
  readonly logger: Logger;
  /** Current log_level (0..3). */
  logLevel(): number;
  setLogLevel(level: number): void;
  /** Drains, leaves the ports, closes the segment and removes the pidfile. */
  stop(reason?: string): Promise<void>;
  /** Resolves once stopped. */
  readonly stopped: Promise<void>;
}

interface Job {
  port: Port;
  req: XsegRequest;
}

const DRAIN_TIMEOUT_MS = 12_000;

/** Starts the peer in this process. */
export async function startPeer(opts: PeerOptions): Promise<RunningPeer> {
  applyUmask(opts.umask);
  const log = createLogger(opts.logfile, opts.logLevel, opts.role);
  let level = opts.logLevel;
  checkThreadPool(opts, log);

  // A live pidfile refuses the start before anything touches the segment.
  const pre = readPidfile(opts.pidfile);
  if (pre.state === 'running' && pre.pid !== process.pid)
    throw new ArchipelagoError(
      'EBUSY',
      `${opts.role} is already running (pid ${pre.pid}, pidfile ${opts.pidfile})`,
      {
        details: { pid: pre.pid, pidfile: opts.pidfile },
      },
    );
  if (pre.state === 'stale') log.warn({ pidfile: opts.pidfile, pid: pre.pid }, 'replacing a stale pidfile');

  const spec = segmentSpec(opts.segment);
  const account = opts.account ?? null;
  const dirs = serviceDirs(opts);
  for (const d of dirs) makeServiceDir(d.path, account);
  const blockerService = await createBlockerService(opts, log);
  let seg: Segment;
  try {
    seg = Segment.open(spec, daemonSpin());
    // The segment and its wake-up files: user and group read-write, so that the peers after
    // their switch and every member of the group can join and use it.
    if (account && isRoot()) Segment.share(seg.name, account);
  } catch (e) {
    await blockerService?.close();
    throw e;
  }
  let service: PeerService;
  try {
    service = blockerService ?? createSegmentService(opts, seg, log);
  } catch (e) {
    seg.close();
    throw e;
  }
  const ports: Port[] = [];
  try {
    for (let n = opts.portStart; n <= opts.portEnd; n++) {
      const p = seg.bindPort(n);
      ports.push(p);
      if (p.recovered.failed || p.recovered.freed)
        log.warn({ ...p.recovered }, 'recovered the port from a dead previous owner');
    }
  } catch (e) {
    for (const p of ports) p.close();
    seg.close();
    await service.close();
    throw e;
  }

  const queue: Job[] = [];
  let inflight = 0;
  let idle: (() => void) | undefined;

  const respondError = (job: Job, e: unknown) => {
    const data = encodeError(e);
    try {
      job.port.respond(job.req, { state: XS.FAILED, serviced: 0, data });
    } catch (err) {
      log.error({ err }, 'could not send an error reply');
    }
  };

  const run = async (job: Job) => {
    const { req } = job;
    const t0 = level >= 3 ? process.hrtime.bigint() : 0n;
    try {
      const r = await service.serve(req);
      job.port.respond(req, r);
      if (level >= 3)
        log.debug(
          {
            op: req.op,
            target: req.target,
            offset: req.offset,
            size: req.size,
            us: Number((process.hrtime.bigint() - t0) / 1000n),
          },
          'served',
        );
    } catch (e) {
      if (level >= 3 || !ArchipelagoError.isInstance(e))
        log[ArchipelagoError.isInstance(e) ? 'debug' : 'warn'](
          { op: req.op, target: req.target, err: e },
          'request failed',
        );
      respondError(job, e);
    }
  };

  const pump = () => {
    while (inflight < opts.nrOps && queue.length > 0) {
      const job = queue.shift() as Job;
      inflight++;
      void run(job).finally(() => {
        inflight--;
        pump();
      });
    }
    if (inflight === 0 && queue.length === 0) idle?.();
  };

  for (const p of ports) {
    p.onError((e) => log.error({ port: p.number, err: e }, 'segment error on the port'));
    p.onRequest((req) => {
      queue.push({ port: p, req });
      pump();
    });
  }

  // The pidfile is made while still root (any directory), the pid written once switched.
  let fd: number | undefined;
  let switched: string;
  try {
    const made = createPidfile(opts.pidfile, process.pid, account ?? undefined);
    fd = made.fd;
    if (made.replacedStale !== false) log.warn({ stalePid: made.replacedStale }, 'replaced a stale pidfile');
    switched = account ? switchAccount(account) : 'no account';
    checkServiceDirs(dirs, account);
    const ready = fd;
    fd = undefined;
    commitPidfile(ready);
  } catch (e) {
    try {
      if (fd !== undefined) closeSync(fd);
      removePidfile(opts.pidfile);
    } catch {
      // after the switch the pidfile's directory may be out of reach: an empty pidfile reads as stale
    }
    for (const p of ports) p.close();
    seg.close();
    await service.close();
    throw e;
  }
  log.info(
    {
      segment: spec,
      ports: ports.map((p) => p.number),
      nrOps: opts.nrOps,
      uid: process.getuid?.(),
      gid: process.getgid?.(),
      ...(opts.account ? { user: opts.account.user, group: opts.account.group, switched } : {}),
      umask: `0${process.umask().toString(8).padStart(3, '0')}`,
      ...(opts.nrThreads !== undefined ? { nrThreads: opts.nrThreads } : {}),
      ...(opts.blocker ? blockerSummary(opts.blocker) : {}),
      ...(opts.mapperd ? { mapperd: opts.mapperd } : {}),
      ...(opts.vlmcd ? { vlmcd: opts.vlmcd } : {}),
    },
    `${opts.role} started`,
  );

  let resolveStopped!: () => void;
  const stopped = new Promise<void>((r) => {
    resolveStopped = r;
  });
  let stopping$: Promise<void> | undefined;

  const stop = (reason = 'stop'): Promise<void> => {
    stopping$ ??= (async () => {
      log.info({ reason, inflight, queued: queue.length }, 'stopping: draining accepted requests');
      if (inflight > 0 || queue.length > 0) {
        await Promise.race([
          new Promise<void>((r) => {
            idle = r;
          }),
          new Promise<void>((r) => setTimeout(r, DRAIN_TIMEOUT_MS).unref()),
        ]);
      }
      for (const job of queue.splice(0))
        respondError(
          job,
          new ArchipelagoError('ECLOSED', `${opts.role} is stopping`, { details: { stopping: true } }),
        );
      for (const p of ports) {
        try {
          p.close();
        } catch (err) {
          log.warn({ err, port: p.number }, 'leaving the port failed');
        }
      }
      // The service first: mapperd's close still talks to blockerm (it hands its volumes to the host).
      await service.close();
      seg.close();
      removePidfile(opts.pidfile);
      log.info(`${opts.role} stopped`);
      log.flush();
      resolveStopped();
    })();
    return stopping$;
  };

  const setLogLevel = (n: number) => {
    level = Math.max(0, Math.min(3, n));
    log.level = LOG_LEVELS[level] as string;
    // warn, so the change shows at every level but 0 (error only)
    log.warn({ logLevel: level, level_name: log.level }, 'log level changed');
  };

  return {
    ports: ports.map((p) => p.number),
    logger: log,
    logLevel: () => level,
    setLogLevel,
    stop,
    stopped,
  };
}

/** Runs the peer as the process's main: signals, fatal errors, exit status. */
export async function runPeerMain(opts: PeerOptions): Promise<void> {
  let peer: RunningPeer;
  try {
    peer = await startPeer(opts);
  } catch (e) {
    const msg = ArchipelagoError.isInstance(e)
      ? `${e.code}: ${e.message}`
      : String((e as Error)?.message ?? e);
    try {
      createLogger(opts.logfile, 0, opts.role).error({ err: e }, `${opts.role} failed to start: ${msg}`);
    } catch {
      // no log file either
    }
    process.stderr.write(`${opts.role}: ${msg}\n`);
    process.exitCode = 1;
    return;
  }
  const onStop = (sig: NodeJS.Signals) => {
    void peer.stop(sig).then(() => process.exit(0));
  };
  process.on('SIGTERM', onStop);
  process.on('SIGINT', onStop);
  process.on('SIGUSR1', () => peer.setLogLevel(peer.logLevel() - 1));
  process.on('SIGUSR2', () => peer.setLogLevel(peer.logLevel() + 1));
  process.on('uncaughtException', (err) => {
    peer.logger.fatal({ err }, 'uncaught exception');
    void peer.stop('uncaughtException').then(() => process.exit(1));
  });
}
