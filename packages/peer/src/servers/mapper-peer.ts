/**
 * mapperd's request handler: each segment request becomes one call on a Mapper whose blockers are
 * SegmentBlockers to blockerm and blockerb (mapper-wire.ts). The volume lock is taken with this
 * mapperd's identity, so an embedded `vlmc` (another identity) and the daemons never write one
 * volume at once: the lock decides.
 *
 * Map leases (mapper-wire.ts, "Map cache"): mapperd grants vlmcd's SegmentMapper a lease on a
 * volume's map while it holds the volume open and no change runs on it, and takes the lease back
 * (INVALIDATE to the holder's port, answered once the holder dropped its cache and drained the
 * volume's I/O) before any map change that does not come from the holder itself. Such changes
 * also wait, after a restart of mapperd, until a lease time has passed since the start (the
 * leases of the previous mapperd have run out by then), and stopping waits for the leases to run
 * out. Stopping keeps the volume locks: they belong to the host's identity, not to this process.
 *
 * Hand-over: when another owner asks for a volume this mapperd holds (its lease renewal through
 * blockerm reports the request), the volume is handed over as a change by nobody: the lease is
 * recalled (the clients' I/O drains), no copy-up runs meanwhile, blockerb flushes and the volume
 * is yielded (lock released; reads served uncached; the next write asks for the lock back).
 */
import { ArchipelagoError, decodeTargetPayload, opName, XF } from '@archipelago/libxseg';
import type { Port, RespondOptions, Segment, XsegRequest } from '@archipelago/libxseg/segment';
import {
  type CloneOptions,
  type CreateFromEntriesOptions,
  collectGarbage,
  FlockHostLocks,
  KeyedMutex,
  type LoadOptions,
  type Logger,
  Mapper,
  type ObjectSegment,
} from '@archipelago/mapper';
import { SegmentBlocker } from '../clients/segment-blocker.js';
import type { MapperdPeerOptions } from '../options.js';
import {
  encodeLease,
  encodeSegments,
  type LeaseInfo,
  MapperFlag,
  MapperOp,
} from '../protocol/mapper-wire.js';
import { daemonSpin, fromJson, payloadOf, toJson } from '../protocol/wire.js';
import { notServed, type PeerService, peerService } from './service.js';

/** The environment variable with the map lease time in ms (0: vlmcd caches no maps). */
export const MAP_LEASE_ENV = 'ARCHIPELAGO_MAP_LEASE_MS';
/** Default map lease: short, since a restarted mapperd makes map changes wait this long. */
export const DEFAULT_MAP_LEASE_MS = 1000;
/** How long a map change waits for a live lease holder to give the lease back. */
const RECALL_TIMEOUT_MS = 30_000;
/** How often a recall checks that the holder still lives. */
const RECALL_POLL_MS = 200;
/** How long a hand-over holds this mapperd's next writes of the volume for the asker to take it. */
const TAKE_WAIT_MS = 1000;
const TAKE_POLL_MS = 10;
/** How long a stopping mapperd tries to hand its open volumes to the host (host holds). */
const HANDOVER_TIMEOUT_MS = 5_000;

/**
 * A lease that ran out longer ago than this is not recalled: the holder stopped using its cache
 * then (an I/O that looked a mapping up just before would have finished since).
 */
const STALE_LEASE_MS = 10_000;

export function mapLeaseMs(env: NodeJS.ProcessEnv = process.env): number {
  const v = env[MAP_LEASE_ENV];
  if (v === undefined || v === '') return DEFAULT_MAP_LEASE_MS;
  const n = Number(v);
  return Number.isInteger(n) && n >= 0 && n <= 60_000 ? n : DEFAULT_MAP_LEASE_MS;
}

const now = () => performance.now();
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const json = (v: unknown): RespondOptions => {
  const data = toJson(v);
  return { data, serviced: data.length };
};

function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new ArchipelagoError('EINVAL', `${what}: the payload must be a JSON object`);
  return v as Record<string, unknown>;
}

function optNum(o: Record<string, unknown>, key: string, what: string): number | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    throw new ArchipelagoError('EINVAL', `${what}: "${key}" must be an integer >= 0`);
  return v;
}

/** A Mapper over SegmentBlockers to blockerm and blockerb, served on the segment. */
export function createMapperService(
  o: MapperdPeerOptions,
  segment: Segment,
  logger?: Logger,
): PeerService & { mapper: Mapper } {
  const blockerm = new SegmentBlocker({
    segment,
    port: o.blockermPort,
    identity: o.identity,
    kind: 'blockerm',
  });
  const blockerb = new SegmentBlocker({
    segment,
    port: o.blockerbPort,
    identity: o.identity,
    kind: 'blockerb',
  });
  const mapper = new Mapper({
    blockerm,
    blockerb,
    ...(o.lockTimeoutMs !== undefined ? { lockTimeoutMs: o.lockTimeoutMs } : {}),
    ...(o.leaseMs !== undefined ? { leaseMs: o.leaseMs } : {}),
    ...(o.sparseMaps !== undefined ? { sparseMaps: o.sparseMaps } : {}),
    // Same-host serialization with this host's other processes (an embedded vlmc, the gateway).
    ...(o.hostLockDir !== undefined ? { hostLocks: new FlockHostLocks(o.hostLockDir) } : {}),
    ...(logger ? { logger } : {}),
  });

  const load = (req: XsegRequest): LoadOptions => ((req.flags & XF.ASSUMEV0) !== 0 ? { assumeV0: true } : {});
  const args = (req: XsegRequest) => obj(fromJson(payloadOf(req), opName(req.op)), opName(req.op));
  const leases = new Leases(mapper, segment, mapLeaseMs(), logger);
  /**
   * Volumes held open for the host (handed over to it: `vlmc open`, MapperFlag.HOST_HOLD on
   * OPEN): an endpoint's unmap leaves them open. Dropped when the volume is closed, unlocked,
   * renamed or removed. Not kept across a restart of mapperd: its stop hands every volume over to
   * the host, mapped ones too, and the next mapperd cannot tell them apart.
   */
  const hostHolds = new Set<string>();

  // Cooperative hand-over (README, "Hand-over in the daemon wiring"): another owner asked for a
  // volume this mapperd holds (its renewal through blockerm reported the request). Its clients'
  // I/O drains as before a map change (the lease recalled with INVALIDATE), blockerb flushes, and
  // the volume is yielded: its lock released, reads through mapperd served uncached; a client's
  // next write asks for the lock back. (The Mapper logs the request and the hand-over's time.)
  mapper.onReleaseRequest = (name) =>
    leases.handOver(name, async () => {
      await blockerb.flush();
      // The asker polls for the free lock: let it take it before this host's writes, queued
      // behind the hand-over, take it back at once (they would starve the asker).
      await mapper.yieldVolume(name, { awaitTakerMs: 0 });
      await untilTaken(blockerm, name);
    });

  /** MapperOp.TRASH: the trash calls, by `a.action`. */
  function trash(name: string, a: Record<string, unknown>): Promise<unknown> {
    const ttlMs = optNum(a, 'ttlMs', 'trash');
    switch (a.action) {
      case 'list':
        return mapper.listTrash(ttlMs === undefined ? {} : { ttlMs });
      case 'restore':
        if (a.entry !== undefined && typeof a.entry !== 'string')
          throw new ArchipelagoError('EINVAL', 'trash restore: "entry" must be a string');
        return mapper.restoreTrash(name, a.entry === undefined ? {} : { entry: a.entry });
      case 'purge':
        return mapper.purgeTrash(name);
      case 'purge-expired': {
        const nowMs = optNum(a, 'nowMs', 'trash');
        if (nowMs === undefined)
          throw new ArchipelagoError('EINVAL', 'trash purge-expired: "nowMs" is required');
        return mapper.purgeExpiredTrash(nowMs, ttlMs);
      }
      default:
        throw new ArchipelagoError('EINVAL', `trash: unknown action ${JSON.stringify(a.action)}`);
    }
  }

  /**
   * A rollback changes what a volume reads under its clients: refused (EBUSY) when this mapperd
   * holds `name` open and the request does not come from a caching client (the one that serves
   * it: a `vlmc map` endpoint, vlmcd) — it is mapped, or kept open by `vlmc open`.
   */
  function refuseOpenForOthers(name: string, req: XsegRequest, action: string): void {
    if ((req.flags & MapperFlag.CACHE) !== 0 || !mapper.openVolumes().includes(name)) return;
    throw new ArchipelagoError(
      'EBUSY',
      `cannot ${action} "${name}": mapperd (pid ${process.pid}) holds it open for its clients (mapped, or kept open by "vlmc open"); run "vlmc unmap ${name}" (or "vlmc close ${name}") first`,
      { details: { volume: name, pid: process.pid } },
    );
  }

  async function serve(req: XsegRequest): Promise<RespondOptions> {
    const name = req.target;
    const caching = (req.flags & MapperFlag.CACHE) !== 0;
    switch (req.op) {
      case MapperOp.HELLO:
        return json({ identity: o.identity, open: mapper.openVolumes() });
      case MapperOp.MAPR: {
        const segs = await mapper.mapRead(name, req.offset, req.size, load(req));
        return resp(caching ? leases.reply(name, req.src, segs) : encodeSegments(segs));
      }
      case MapperOp.MAPW: {
        const map = () => mapper.mapWrite(name, req.offset, req.size, load(req));
        // A copy-up changes the map: one by anyone but the lease holder takes the lease back
        // first. The holder's own copy-ups do not end its lease (it caches what they answer).
        const segs = leases.mustRecall(name, req) ? await leases.change(name, req, map) : await map();
        return resp(caching ? leases.reply(name, req.src, segs) : encodeSegments(segs));
      }
      case MapperOp.LEASE:
        return resp(encodeLease(leases.grant(name, req.src)));
      case MapperOp.INFO:
        return json(await mapper.info(name, load(req)));
      case MapperOp.OPEN: {
        const info = await mapper.openVolume(name, load(req));
        if (req.flags & MapperFlag.HOST_HOLD) hostHolds.add(name);
        return json(info);
      }
      case MapperOp.CLOSE:
        if (req.flags & MapperFlag.HOST_HOLD && hostHolds.has(name) && mapper.openVolumes().includes(name)) {
          // An unmapping endpoint, on a volume the host holds (`vlmc open`): it stays open.
          await leases.change(name, req, async () => {});
          return { serviced: 0 };
        }
        hostHolds.delete(name);
        await leases.change(name, req, () => mapper.closeVolume(name));
        return { serviced: 0 };
      case MapperOp.SNAPSHOT: {
        const snap = decodeTargetPayload(Buffer.from(payloadOf(req)));
        return json(await leases.change(name, req, () => mapper.snapshot(name, snap)));
      }
      case MapperOp.RENAME: {
        hostHolds.delete(name);
        const to = decodeTargetPayload(Buffer.from(payloadOf(req)));
        return json(await leases.change(name, req, () => mapper.rename(name, to)));
      }
      case MapperOp.TRUNCATE:
        return json(await leases.change(name, req, () => mapper.resize(name, req.offset)));
      case MapperOp.DELETE:
        hostHolds.delete(name);
        await leases.change(name, req, () => mapper.remove(name, load(req)));
        return { serviced: 0 };
      case MapperOp.CLONE: {
        const a = args(req);
        const size = optNum(a, 'size', 'clone');
        if (a.source === undefined || a.source === '') {
          const blocksize = optNum(a, 'blocksize', 'create');
          if (size === undefined) throw new ArchipelagoError('EINVAL_SIZE', 'create: "size" is required');
          return json(
            await mapper.create(name, {
              size,
              ...(blocksize ? { blocksize } : {}),
              ...(a.incomplete === true ? { incomplete: true } : {}),
            }),
          );
        }
        if (typeof a.source !== 'string')
          throw new ArchipelagoError('EINVAL', 'clone: "source" must be a string');
        const co: CloneOptions = { ...(size !== undefined ? { size } : {}) };
        if (a.assumeV0 === true) co.assumeV0 = true;
        const v0Size = optNum(a, 'v0Size', 'clone');
        if (v0Size !== undefined) co.v0Size = v0Size;
        return json(await mapper.clone(a.source, name, co));
      }
      case MapperOp.COMPLETE:
        return json(await mapper.complete(name));
      case MapperOp.TRASH:
        return json(await trash(name, args(req)));
      case MapperOp.ROLLBACK: {
        const snap = decodeTargetPayload(Buffer.from(payloadOf(req)));
        refuseOpenForOthers(name, req, 'roll back'); // before recalling anyone's lease
        return json(
          await leases.change(name, req, async () => {
            refuseOpenForOthers(name, req, 'roll back');
            return mapper.rollback(name, snap);
          }),
        );
      }
      case MapperOp.FLATTEN:
        // Online: behind the change gate the lease is recalled (its holder drains its I/O), then
        // no lease is granted until the flatten is done, so the holder's lookups come here
        // uncached; its copy-ups run beside the flatten's, as in a mapper that serves its writes.
        return json(await leases.change(name, req, () => mapper.flatten(name)));
      case MapperOp.CREATE:
        // The mapper checks every field of the options (sizes, entry names, counts).
        return json(await mapper.createFromEntries(name, args(req) as unknown as CreateFromEntriesOptions));
      case MapperOp.HASH:
        return json(await mapper.hash(name));
      case MapperOp.FLUSH:
        // With a volume name: the client acknowledges a FLUSH/FUA of it, so re-check it is ours.
        await mapper.flush(name === '' ? undefined : name);
        return { serviced: 0 };
      case MapperOp.LOCK:
        await mapper.lock(name);
        return { serviced: 0 };
      case MapperOp.UNLOCK:
        hostHolds.delete(name);
        await leases.change(name, req, () => mapper.unlock(name, { force: (req.flags & XF.FORCE) !== 0 }));
        return { serviced: 0 };
      case MapperOp.LIST:
        return json(await mapper.list());
      case MapperOp.ENTRIES:
        return json(await mapper.entries(name, load(req)));
      case MapperOp.ADD_CLIENT: {
        const addr = args(req).addr;
        if (typeof addr !== 'string' || addr === '')
          throw new ArchipelagoError('EINVAL', `addClient ${name}: "addr" must be a client address`);
        // Held by this mapperd (taken back if it was yielded), as before a write; then recorded.
        await mapper.assertWritable(name, load(req));
        return json(await blockerm.addClient(name, addr));
      }
      case MapperOp.REMOVE_CLIENT: {
        const addr = args(req).addr;
        if (typeof addr !== 'string' || addr === '')
          throw new ArchipelagoError('EINVAL', `removeClient ${name}: "addr" must be a client address`);
        // Not taken back if yielded: a record of another holder does not list it (taking over
        // rewrites the record), and a free lock has no record.
        return json(await blockerm.removeClient(name, addr));
      }
      case MapperOp.ASSERTWRITABLE:
        await mapper.assertWritable(name, load(req));
        return { serviced: 0 };
      case MapperOp.DISCARD:
        await leases.change(name, req, () => mapper.discard(name, req.offset, load(req)));
        return { serviced: 0 };
      default:
        throw notServed(req, 'mapperd');
    }
  }

  // `[mapperd] gc_interval`: a garbage collection now and then (@archipelago/mapper gc.ts). Over
  // the segment the blockers cannot tell objects' ages, so these runs free what is provably dead
  // (objects and map blocks of removed volumes); `vlmc gc` frees old orphans too.
  let gcRun: Promise<unknown> | null = null;
  const gcTimer =
    o.gcIntervalMs !== undefined
      ? setInterval(() => {
          if (gcRun) return;
          gcRun = collectGarbage({
            blockerm,
            blockerb,
            ...(o.gcGraceMs !== undefined ? { graceMs: o.gcGraceMs } : {}),
            // Trash entries past `[mapperd] trash_ttl` go first, so their objects are garbage now.
            prepare: () => mapper.purgeExpiredTrash(Date.now(), o.trashTtlMs ?? 0),
            ...(logger ? { log: logger } : {}),
          })
            .catch((e: unknown) => logger?.warn({ err: String(e) }, 'periodic gc failed'))
            .finally(() => {
              gcRun = null;
            });
        }, o.gcIntervalMs)
      : null;
  gcTimer?.unref();

  const close = async () => {
    if (gcTimer) clearInterval(gcTimer);
    await gcRun;
    try {
      // The leases on cached maps run out first, so no client uses a cache across the stop. The
      // volume locks stay: they belong to the host (its one identity), not to this process, so a
      // volume opened with `vlmc open` (or mapped) is still this host's after a restart: each is
      // handed to the host (a host hold), not left to a dead process's lease.
      await leases.close();
      // Bounded: a dead blockerm must not hold the stop (the locks then stay as they are, and the
      // next holder takes over a dead process's lock by itself).
      let timer: NodeJS.Timeout | undefined;
      const handedOver = await Promise.race([
        mapper.close({ keepLocks: true }).then(() => true),
        new Promise<false>((r) => {
          timer = setTimeout(() => r(false), HANDOVER_TIMEOUT_MS);
        }),
      ]).finally(() => clearTimeout(timer));
      if (!handedOver)
        logger?.warn({ ms: HANDOVER_TIMEOUT_MS }, 'stop: handing the open volumes to the host timed out');
    } finally {
      await Promise.allSettled([blockerm.close(), blockerb.close()]);
    }
  };
  return { mapper, ...peerService(serve, close) };
}

/**
 * Waits (up to TAKE_WAIT_MS, checking every TAKE_POLL_MS) until lock `name`, just released, is
 * held again: by the owner that asked for it, normally within one of its lock polls.
 */
async function untilTaken(blockerm: SegmentBlocker, name: string): Promise<void> {
  const end = now() + TAKE_WAIT_MS;
  while (now() < end) {
    if ((await blockerm.lockInfo(name).catch(() => null)) !== null) return;
    await sleep(TAKE_POLL_MS);
  }
}

function resp(data: Buffer): RespondOptions {
  return { data, serviced: data.length };
}

interface Lease {
  /** The holder's port (its SegmentMapper's dynamic port). */
  port: number;
  /** When it runs out, by this process's clock (ms). */
  expires: number;
}

/**
 * The map leases of one mapperd (see the file comment and mapper-wire.ts, "Map cache"). One
 * holder per volume. `change` wraps every map change: the holder's own changes run at once (it
 * dropped its cache itself; its lease ends), anyone else's take the volume's gate, wait out the
 * restart grace, recall the lease and then run. No lease is granted while a change runs or
 * waits, nor for a volume this mapperd does not hold open.
 */
class Leases {
  private readonly leases = new Map<string, Lease>();
  /** Changes running, per volume. */
  private readonly changing = new Map<string, number>();
  /** Volumes being handed over to another owner (handOver). */
  private readonly handing = new Set<string>();
  private readonly gate = new KeyedMutex<string>();
  private readonly startedAt = now();
  private port: Port | undefined;
  private closed = false;

  constructor(
    private readonly mapper: Mapper,
    private readonly segment: Segment,
    readonly leaseMs: number,
    private readonly log?: Logger,
  ) {}

  private busy(name: string): boolean {
    return (this.changing.get(name) ?? 0) > 0;
  }

  /**
   * Grants (or renews) `src` the lease on `name` when it can: the map is open here, no change
   * runs or waits, and no other port holds a lease that has not run out.
   */
  grant(name: string, src: number): LeaseInfo {
    const m = this.mapper.openMap(name);
    if (!m) return { size: 0, leaseMs: 0, readonly: false };
    const out: LeaseInfo = { size: m.size, leaseMs: 0, readonly: m.readonly };
    if (this.leaseMs === 0 || this.closed || this.busy(name)) return out;
    const t = now();
    const l = this.leases.get(name);
    if (l && l.port !== src && l.expires > t) return out;
    this.leases.set(name, { port: src, expires: t + this.leaseMs });
    out.leaseMs = this.leaseMs;
    return out;
  }

  /**
   * A map reply for a caching client: the lease (if granted) and which segments are writable, as
   * the open map says right now; a segment whose entry changed since the lookup (a copy-up or
   * discard that finished in between) makes the reply uncacheable.
   */
  reply(name: string, src: number, segs: readonly ObjectSegment[]): Buffer {
    const lease = this.grant(name, src);
    const m = this.mapper.openMap(name);
    const writable = segs.map((s) => {
      const e = m?.entryAt(s.index);
      if (!e || e.name !== s.target) lease.leaseMs = 0;
      return e?.writable === true && e.name === s.target;
    });
    return encodeSegments(segs, { lease, writable });
  }

  /**
   * Whether a copy-up request must go through `change`: it does not come from the caching client
   * that holds the lease (or could take it), and a lease is out or a change runs; or the volume
   * is being handed over (then every copy-up waits for that to end).
   */
  mustRecall(name: string, req: XsegRequest): boolean {
    if (this.handing.has(name)) return true;
    const l = this.leases.get(name);
    if ((req.flags & MapperFlag.CACHE) !== 0 && (l === undefined || l.port === req.src)) return false;
    return this.busy(name) || l !== undefined;
  }

  /** Runs a map change on `name` requested by `req` (see the class comment). */
  async change<T>(name: string, req: XsegRequest, fn: () => Promise<T>): Promise<T> {
    const l = this.leases.get(name);
    // During a hand-over even the holder's own changes (its copy-ups) wait for it to end: none
    // may use the volume's map while its lock goes to another owner.
    const own = (req.flags & MapperFlag.CACHE) !== 0 && (!l || l.port === req.src) && !this.handing.has(name);
    if (own) {
      this.leases.delete(name);
      return this.counted(name, fn);
    }
    return this.exclusive(name, fn);
  }

  /**
   * Hands volume `name` over to another owner (`fn` yields it), as a change by nobody: behind the
   * volume's gate, the lease is recalled from its holder (which drains the volume's I/O: the
   * holder's copy-ups asked meanwhile still run, its drain waits for them), then no copy-up runs
   * on the volume, the holder's included (mustRecall, change), until `fn` is done.
   */
  handOver(name: string, fn: () => Promise<void>): Promise<void> {
    return this.exclusive(name, async () => {
      this.handing.add(name);
      try {
        await fn();
      } finally {
        this.handing.delete(name);
      }
    });
  }

  /** Runs `fn` on `name` behind the volume's gate, after the restart grace and the recall. */
  private async exclusive<T>(name: string, fn: () => Promise<T>): Promise<T> {
    // Counted from here: no lease is granted while this change waits for the gate either.
    this.enter(name);
    try {
      return await this.gate.run(name, async () => {
        const wait = this.startedAt + this.leaseMs - now();
        if (this.leaseMs > 0 && wait > 0) await sleep(wait);
        await this.recall(name);
        return fn();
      });
    } finally {
      this.leave(name);
    }
  }

  private counted<T>(name: string, fn: () => Promise<T>): Promise<T> {
    this.enter(name);
    return fn().finally(() => this.leave(name));
  }

  private enter(name: string): void {
    this.changing.set(name, (this.changing.get(name) ?? 0) + 1);
  }

  private leave(name: string): void {
    const n = (this.changing.get(name) ?? 1) - 1;
    if (n <= 0) this.changing.delete(name);
    else this.changing.set(name, n);
  }

  /** Takes the lease on `name` back from its holder, if any: returns once the holder dropped its cache, or died. */
  private async recall(name: string): Promise<void> {
    const l = this.leases.get(name);
    if (!l) return;
    this.leases.delete(name);
    if (now() > l.expires + STALE_LEASE_MS) return;
    this.port ??= this.segment.bindDynamicPort().setSpin(daemonSpin());
    const t0 = now();
    let answer: 'ok' | 'gone' | undefined;
    const call = this.port.call({ dst: l.port, op: MapperOp.INVALIDATE, target: name, reserve: 0 }).then(
      (r) => {
        answer = r.ok ? 'ok' : 'gone';
        r.release();
      },
      () => {
        answer = 'gone';
      },
    );
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([call, new Promise<void>((r) => (timer = setTimeout(r, RECALL_POLL_MS)))]);
      clearTimeout(timer);
      // A failed answer: nobody serves that port any more (the holder died; the port was
      // recovered or taken by a process that caches nothing).
      if (answer !== undefined) break;
      if (!this.holderAlive(l.port)) {
        answer = 'gone';
        break;
      }
      if (now() - t0 > RECALL_TIMEOUT_MS)
        throw new ArchipelagoError(
          'ETIMEDOUT',
          `volume "${name}": the map cache on port ${l.port} (vlmcd) did not give its lease back within ${RECALL_TIMEOUT_MS} ms; retry`,
          { details: { volume: name, port: l.port } },
        );
    }
    this.log?.debug({ volume: name, port: l.port, answer, ms: Math.round(now() - t0) }, 'map lease recalled');
  }

  private holderAlive(port: number): boolean {
    try {
      const p = this.segment.report().ports.find((x) => x.port === port);
      return p?.bound === true && p.ownerAlive;
    } catch {
      return true;
    }
  }

  /** Stops granting and waits until every lease granted has run out. */
  async close(): Promise<void> {
    this.closed = true;
    const until = Math.max(0, ...[...this.leases.values()].map((l) => l.expires));
    const wait = Math.min(this.leaseMs, until - now());
    if (wait > 0) await sleep(wait);
    try {
      this.port?.close();
    } catch {
      // the segment is closed already
    }
  }
}
