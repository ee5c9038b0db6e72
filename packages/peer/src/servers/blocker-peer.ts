/**
 * The blocker peer's request handler: each segment request becomes one Blocker call on the peer's
 * blocker (a FileBlocker or a RadosBlocker); the answer (or the error, see wire.ts) goes back in
 * the reply. Locks belong to the client's identity, so acquire, renew, break, release and
 * release requests go through a blocker with that identity (`lockerFor`), kept in a small LRU
 * (a RENEW's record carries `releaseRequested` when another owner asked); and they are held for
 * the client's process (`as`, lock-wire.ts), never for this peer's: the lock records the pid of
 * mapperd or of a `vlmc map` endpoint.
 */
import { hostname } from 'node:os';
import { type Blocker, type BreakReport, readIntoBuffer } from '@archipelago/blocker';
import { FileBlocker } from '@archipelago/blocker-file';
import type { RadosBlocker } from '@archipelago/blocker-rados';
import {
  ArchipelagoError,
  decodeTargetPayload,
  encodeInfoReply,
  encodeTargetPayload,
  Op,
  opName,
  XF,
} from '@archipelago/libxseg';
import type { RespondOptions, XsegRequest } from '@archipelago/libxseg/segment';
import { KeyedMutex } from '@archipelago/mapper';
import {
  type FileBlockerPeerOptions,
  RADOS_CONNECT_TIMEOUT_MS,
  type RadosBlockerPeerOptions,
} from '../options.js';
import { type BreakReply, decodeLockArgs, holderOf, type LockArgs } from '../protocol/lock-wire.js';
import { LIST_PAGE_BYTES, PeerFlag, PeerOp, payloadOf, toJson } from '../protocol/wire.js';
import { notServed, type PeerService, peerService } from './service.js';

export type { PeerService };

/** Per-identity lock blockers kept open. */
const MAX_LOCKERS = 256;
/** How long the report of a break nobody collected is kept, ms. */
const BREAK_KEEP_MS = 60_000;

/** A breakLock under way: a BREAK with `join` collects its report. */
interface BreakJob {
  report: Promise<BreakReport>;
  /** Resolves when the break starts waiting for a holder's lease to run out. */
  waiting: Promise<{ what: string; ms: number }>;
  done: boolean;
}

export type BlockerService = PeerService;

const nothing = () => null;

/** A reply carrying `value` as JSON. */
function json(value: unknown): RespondOptions {
  const data = toJson(value);
  return { data, serviced: data.length };
}

/**
 * The blocker peer over any blocker. `main` serves every object call and the locks of requests
 * without an identity; `lockerFor(identity)` gives a blocker whose locks belong to `identity`
 * (used for acquire, renew, breakLock and release; closed when it falls out of the LRU of
 * `MAX_LOCKERS`, and at close). The service owns `main` and the lockers: `close()` closes them.
 */
export function createBlockerService(
  main: Blocker,
  lockerFor: (identity: string) => Blocker,
): BlockerService {
  const lockers = new Map<string, Blocker>();
  const locker = (identity: string): Blocker => {
    if (identity === '' || identity === main.identity) return main;
    let b = lockers.get(identity);
    if (b) {
      lockers.delete(identity);
      lockers.set(identity, b);
      return b;
    }
    b = lockerFor(identity);
    lockers.set(identity, b);
    if (lockers.size > MAX_LOCKERS) {
      const [oldest, ob] = lockers.entries().next().value as [string, Blocker];
      lockers.delete(oldest);
      void ob.close().catch(() => {});
    }
    return b;
  };

  const argsOf = (req: XsegRequest): LockArgs => decodeLockArgs(payloadOf(req), opName(req.op));

  /**
   * One identity's calls on one lock run one at a time: a blocker rewrites a lock it holds
   * (renew, re-acquire) by reading it and then renaming a new record over it, so a release of
   * that identity running in between would be undone (the lock back, for a holder that let it
   * go: a hand-over's asker would wait in vain). Waiting calls (BREAK, a blocking ACQUIRE) are not
   * serialized: they would hold the others up.
   */
  const serial = new KeyedMutex<string>();
  const inTurn = <T>(a: LockArgs, name: string, fn: () => Promise<T>): Promise<T> =>
    serial.run(`${a.identity}\n${name}`, fn);

  /** Breaks under way, by identity and lock: a client that was told of a wait comes back (join). */
  const breaks = new Map<string, BreakJob>();
  const startBreak = (key: string, b: Blocker, name: string, a: LockArgs): BreakJob => {
    let signal: (w: { what: string; ms: number }) => void = () => {};
    const waiting = new Promise<{ what: string; ms: number }>((r) => {
      signal = r;
    });
    const report = b.breakLock(name, {
      ...(a.waitMs !== undefined ? { waitMs: a.waitMs } : {}),
      onWait: (what, ms) => signal({ what, ms }),
    });
    const job: BreakJob = { report, waiting, done: false };
    const settled = () => {
      job.done = true;
      setTimeout(() => {
        if (breaks.get(key) === job) breaks.delete(key);
      }, BREAK_KEEP_MS).unref();
    };
    report.then(settled, settled);
    breaks.set(key, job);
    return job;
  };
  const breakLock = async (name: string, a: LockArgs): Promise<BreakReply> => {
    const key = `${a.identity}\n${name}`;
    const found = breaks.get(key);
    if (a.join && found === undefined)
      throw new ArchipelagoError(
        'EIO',
        `breakLock ${name}: no break of it by ${a.identity} is under way here (the blocker peer restarted?); see who holds it now and break it again`,
        { details: { lock: name } },
      );
    // A break this identity started on the lock and has not finished: join it.
    const job =
      found !== undefined && (a.join || !found.done) ? found : startBreak(key, locker(a.identity), name, a);
    if (a.progress && !a.join) {
      const waiting = await Promise.race([job.report.then(nothing, nothing), job.waiting]);
      if (waiting !== null) return { waiting };
    }
    try {
      return { report: await job.report };
    } finally {
      if (breaks.get(key) === job) breaks.delete(key);
    }
  };

  const payload = payloadOf;
  const readInto: (name: string, offset: number, target: Buffer) => Promise<void> =
    main.readInto?.bind(main) ?? ((n, off, t) => readIntoBuffer(main, n, off, t));

  async function serve(req: XsegRequest): Promise<RespondOptions> {
    const name = req.target;
    const missingOk = (req.flags & PeerFlag.MISSINGOK) !== 0;
    switch (req.op) {
      case Op.READ: {
        const out = payload(req);
        // Straight into the request's shared data: no fresh buffer per read (first touches of
        // fresh memory cost far more than the copy here). readInto reads a missing object as
        // zeros, so only missingOk reads can use it.
        if (missingOk) await readInto(name, req.offset, out);
        else (await main.read(name, req.offset, req.size)).copy(out);
        return { serviced: req.size };
      }
      case Op.WRITE:
        // XF_FUA: durable before the reply also when the blocker writes back.
        await main.write(name, req.offset, payload(req), { durable: (req.flags & XF.FUA) !== 0 });
        return { serviced: req.size };
      case PeerOp.WRITEFULL:
        await main.writeFull(name, payload(req));
        return { serviced: req.size };
      case Op.DELETE: {
        if (!(await main.delete(name)))
          throw new ArchipelagoError('ENOENT_OBJECT', `delete ${name}: no such object`, {
            details: { name },
          });
        return { serviced: 0 };
      }
      case Op.INFO: {
        const info = await main.info(name);
        if (info === null)
          throw new ArchipelagoError('ENOENT_OBJECT', `info ${name}: no such object`, { details: { name } });
        return { data: encodeInfoReply(BigInt(info.size)), serviced: 8 };
      }
      case Op.COPY: {
        const src = decodeTargetPayload(Buffer.from(payload(req)));
        await main.copy(src, name, { missingOk });
        return { serviced: 0 };
      }
      case Op.HASH: {
        if (!main.hash)
          throw new ArchipelagoError('ENOTSUP', `hash ${name}: this ${main.kind} blocker cannot hash`);
        const h = await main.hash(name, req.size);
        const data = encodeTargetPayload(h);
        return { data, serviced: data.length };
      }
      case Op.FLUSH:
        await main.flush();
        return { serviced: 0 };
      case Op.ACQUIRE: {
        const a = argsOf(req);
        const wait = (req.flags & XF.NOSYNC) === 0;
        const acquire = () =>
          locker(a.identity).acquire(name, {
            wait,
            ...(wait && req.flags & PeerFlag.TIMEOUT ? { timeoutMs: req.offset } : {}),
            ...(a.hold === 'host' ? { hold: 'host' as const } : { as: holderOf(a, 'acquire') }),
            ...(a.leaseMs !== undefined ? { leaseMs: a.leaseMs } : {}),
          });
        return json(await (wait ? acquire() : inTurn(a, name, acquire)));
      }
      case Op.RELEASE: {
        const a = argsOf(req);
        const force = (req.flags & XF.FORCE) !== 0;
        await inTurn(a, name, () => locker(a.identity).release(name, { force }));
        return { serviced: 0 };
      }
      case PeerOp.RENEW: {
        const a = argsOf(req);
        const as = holderOf(a, 'renew');
        const leaseMs = a.leaseMs !== undefined ? { leaseMs: a.leaseMs } : {};
        return json(await inTurn(a, name, () => locker(a.identity).renew(name, { as, ...leaseMs })));
      }
      case PeerOp.BREAK:
        return json(await breakLock(name, argsOf(req)));
      case PeerOp.REQUEST_RELEASE: {
        // Recorded by the blocker of the asking identity (the file blocker: a request file next
        // to the lock, which the holder's renewal reads, wherever its blocker peer runs).
        const a = argsOf(req);
        return json(await locker(a.identity).requestRelease(name, a.by !== undefined ? { by: a.by } : {}));
      }
      case PeerOp.ADD_CLIENT:
      case PeerOp.REMOVE_CLIENT: {
        // RADOS only: the lock record lists further clients (an endpoint's own data client) that
        // every break blocklists too (RadosBlocker.addClient), until they stop writing for the
        // holder (RadosBlocker.removeClient).
        const op = req.op === PeerOp.ADD_CLIENT ? 'addClient' : 'removeClient';
        const a = argsOf(req);
        const b = locker(a.identity) as Blocker & Partial<Pick<RadosBlocker, 'addClient' | 'removeClient'>>;
        if (a.addr === undefined) throw new ArchipelagoError('EINVAL', `${op} ${name}: no "addr"`);
        const call = b[op]?.bind(b);
        if (call === undefined)
          throw new ArchipelagoError(
            'ENOTSUP',
            `${op} ${name}: a ${main.kind} blocker cuts off no clients (a break waits out the holder's lease)`,
          );
        // Without `as`: any hold of the identity (a host hold too). Registering is never unsafe.
        const { addr } = a;
        const holder = { owner: a.identity, process: a.as ?? null };
        return json(await inTurn(a, name, () => call(name, addr, holder)));
      }
      case PeerOp.LOCKINFO:
        return json(await main.lockInfo(name));
      case PeerOp.LOCKOWNER: {
        const owner = await main.lockOwner(name);
        if (owner === null) return { serviced: 0, data: Buffer.alloc(0) };
        const data = Buffer.from(owner);
        return { data, serviced: data.length };
      }
      case PeerOp.LIST: {
        const cursor = payload(req).toString('utf8');
        const names: string[] = [];
        for await (const n of main.list(name)) if (n > cursor) names.push(n);
        names.sort();
        const page: string[] = [];
        let bytes = 0;
        for (const n of names) {
          if (bytes + n.length + 1 > LIST_PAGE_BYTES) break;
          page.push(n);
          bytes += n.length + 1;
        }
        const more = page.length < names.length;
        const data = Buffer.from(page.join('\n'));
        // serviced: 1 when another page follows.
        return { data, serviced: more ? 1 : 0 };
      }
      default:
        throw notServed(req, 'a blocker peer');
    }
  }

  return peerService(serve, async () => {
    await Promise.all([main.close(), ...[...lockers.values()].map((b) => b.close())]);
    lockers.clear();
  });
}

/** A blocker peer over files: per-identity lockers are FileBlockers with a tiny fd cache. */
export function createFileBlockerService(o: FileBlockerPeerOptions, role: string): BlockerService {
  const base = {
    dir: o.dir,
    ...(o.lockDir !== undefined ? { lockDir: o.lockDir } : {}),
    ...(o.direct !== undefined ? { direct: o.direct } : {}),
  };
  const main = new FileBlocker({
    ...base,
    ...(o.fdcache !== undefined ? { fdCache: o.fdcache } : {}),
    ...(o.sync !== undefined ? { sync: o.sync } : {}),
    identity: o.identity ?? `${hostname()}_${role}`,
  });
  // Lockers touch lock files only, never object data, so their fd caches stay tiny.
  return createBlockerService(main, (identity) => new FileBlocker({ ...base, fdCache: 4, identity }));
}

/**
 * A blocker peer over a Ceph pool. Resolves once connected and the pool is open, and rejects
 * (ETIMEDOUT naming the conf, EINVAL_CONFIG naming the pool or file, ENOTSUP without the native
 * addon) within `connectTimeoutMs`, so an unreachable cluster fails the start, never hangs it.
 * Per-identity lockers are `withIdentity` views: one connection and one pool context in all.
 */
export async function createRadosBlockerService(
  o: RadosBlockerPeerOptions,
  role: string,
): Promise<BlockerService> {
  let mod: typeof import('@archipelago/blocker-rados');
  try {
    mod = await import('@archipelago/blocker-rados');
  } catch (e) {
    throw new ArchipelagoError(
      'ENOTSUP',
      `${role}: type rados_blocker needs @archipelago/blocker-rados, which could not be loaded: ${(e as Error).message}`,
      { cause: e },
    );
  }
  const main: RadosBlocker = await mod.RadosBlocker.open({
    pool: o.pool,
    identity: o.identity ?? `${hostname()}_${role}`,
    connectTimeoutMs: o.connectTimeoutMs ?? RADOS_CONNECT_TIMEOUT_MS,
    ...(o.namespace !== undefined ? { namespace: o.namespace } : {}),
    ...(o.cephConf !== undefined ? { cephConf: o.cephConf } : {}),
    ...(o.cephxId !== undefined ? { cephxId: o.cephxId } : {}),
    ...(o.keyring !== undefined ? { keyring: o.keyring } : {}),
    ...(o.opTimeoutMs !== undefined ? { opTimeoutMs: o.opTimeoutMs } : {}),
    ...(o.sync !== undefined ? { sync: o.sync } : {}),
  });
  return createBlockerService(main, (identity) => main.withIdentity(identity));
}
