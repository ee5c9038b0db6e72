/**
 * Garbage collection: an online mark-and-sweep over one blocker pair (`vlmc gc`, `[mapperd]
 * gc_interval`), and the gc holds that producers take while they make objects no map names yet.
 *
 * Gateway maps first: a hashed map the HTTP gateway made (marked `gwm.<map>`) that no gateway
 * file record (`gwo.*`) names any more is removed (marked DELETED) under its lock, so its blocks
 * are garbage in this run (see "gateway-owned hashed maps" below).
 *
 * Mark: every map header in blockerm that is not DELETED is a root (volumes, snapshots, hashed
 * maps, INCOMPLETE maps, trash entries, the new name of a rename under way; the maps gateway
 * file records name are among them). Their entries name the live objects. Maps change while
 * the mark runs, so it goes in rounds: each round lists blockerm again and reads every header; a
 * map that is new, or whose header changed since it was read (every operation that puts names into
 * a map rewrites its header: create, clone, snapshot, rename, resize, complete, restore), is read
 * again; the rounds end with one that read no map that was not live when read before: no new
 * live map, and no map newly read DELETED (at most MAX_ROUNDS, else it gives up and deletes
 * nothing). The second half is what makes a move safe (a rename, a remove to the trash, a
 * restore): a move writes the new name whole before it marks the old one DELETED, so a run that
 * read the old name DELETED and the new one before it was written sees the new header changed,
 * or the name new, in the round after. A map changed in place (a copy-up writes an entry, not
 * the header) names nothing a candidate could be: see the round below.
 *
 * Sweep: an object of blockerb is deleted only when no root named it, it was listed after the
 * mark began (so it existed before), it is no map object (a store shared by both roles: headers,
 * their map blocks and gc or gateway records stay), and either
 * - it is provably dead: a copy-up object `<vol>_<epoch>_<index>` of a map that is DELETED, or of
 *   an epoch older than its live map's (no copy-up makes those names any more); or
 * - it is older (mtime) than the cutoff: the mark's start, or the start of the oldest gc hold
 *   that overlapped the run if earlier, minus a grace (`graceMs`). Objects whose age the blocker
 *   cannot tell stay. Content objects (64 hex) stay whenever a `dedup` hold overlapped the run
 *   (a producer that finds a content object present reuses it without writing it); or
 * - it was named by a removed gateway map (removed by this run, or by an earlier one that could
 *   not judge its objects: its marker and map blocks stay until a run did) and no hold at all
 *   overlapped the run (every producer that may reuse an object holds one, so nothing can be
 *   naming it anew).
 * Map blocks (`<vol>_<hex16>`) of DELETED maps go too (the headers stay: epochs survive), under
 * the map's lock, re-checked DELETED, and only blocks older than the mark.
 *
 * Holds (`takeGcHold`): a record `archip_gc.hold.<id>` in blockerm with the holder's start time
 * and a lease it renews; released, it keeps its end time until a gc run that began after it
 * deletes it, so a run knows every producer that overlapped it. A gc run writes `archip_gc.state`
 * (sweeping) before it reads the holds for its sweep, and a `dedup` producer reads it after
 * writing its hold and waits for a sweep under way to end: one of the two always sees the other.
 *
 * Two gc runs at once: the second waits for the first (the `archip_gc` lock in blockerm, and a
 * mutex per blocker in this process). A dry run takes no lock and deletes nothing.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { type Blocker, currentProcess, sameProcess } from '@archipelago/blocker';
import { ArchipelagoError, archipError } from '@archipelago/libxseg';
import {
  decodeEntriesV2,
  decodeHeaderV2,
  decodeIntent,
  detectVersion,
  ENTRY_V2_SIZE,
  entriesPerMapBlock,
  MapFlag,
  mapBlockName,
  objectCount,
} from '@archipelago/mapfile';
import { isContentName, isZero } from './map.js';
import { MapStore } from './map-store.js';
import { Mutex, pool } from './mutex.js';
import { type Logger, silentLogger } from './types.js';

/** The gc lock's name in blockerm (stored as `archip_gc_lock`). */
export const GC_LOCK = 'archip_gc';
/** Prefix of gc hold records in blockerm. */
export const GC_HOLD_PREFIX = 'archip_gc.hold.';
/** The gc state record (sweeping or not) in blockerm. */
export const GC_STATE = 'archip_gc.state';
/** Default grace: objects younger than this (before the mark or the oldest hold) stay. */
export const DEFAULT_GC_GRACE_MS = 10 * 60_000;
/** Default lease of a gc hold and of the gc lock, ms. */
export const DEFAULT_HOLD_LEASE_MS = 30_000;
/** How long a gc run's state record counts unless rewritten (every quarter of it), ms. */
const STATE_LEASE_MS = 60_000;
/** Mark rounds before a run gives up (maps changing under it all the time). */
const MAX_ROUNDS = 20;
/** RADOS keeps whole seconds: an mtime may read up to this much early. */
const MTIME_SLACK_MS = 1000;
const MAP_BLOCK = /^(.+)_([0-9a-f]{16})$/;
const DATA_OBJECT = /^(.+)_([0-9a-f]{16})_([0-9a-f]{16})$/;
const GATEWAY_RECORD = 'gwo.';
/** Prefix of the gateway's ownership markers in blockerm: `gwm.<map>` (see ownHashedMap). */
export const GATEWAY_OWNED_PREFIX = 'gwm.';
/** Prefix of the hashed-map locks in blockerm (`gwl.<root>`, stored as `gwl.<root>_lock`). */
const HASHED_MAP_LOCK = 'gwl.';
/** How long gc waits for a hashed map's lock before it leaves that map to a later run, ms. */
const ORPHAN_LOCK_WAIT_MS = 2000;
/** Orphaned gateway maps locked and removed at once. */
const ORPHAN_BATCH = 64;

// ------------------------------------------------------------------ holds

/** What a producer does while it holds: `write` makes new objects; `dedup` may reuse old ones. */
export type GcHoldKind = 'write' | 'dedup';

/** A hold record as stored (JSON). */
export interface GcHoldRecord {
  v: 1;
  id: string;
  /** What runs, for `vlmc gc` to show (e.g. `import vol1`, `hash snap1`). */
  what: string;
  kind: GcHoldKind;
  host: string;
  pid: number;
  /** ms since the epoch. */
  start: number;
  /** The lease: the hold counts until then unless renewed. */
  expires: number;
  /** Set when released. */
  end?: number;
}

export interface GcHold {
  readonly record: Readonly<GcHoldRecord>;
  /** Ends the hold (its record keeps the end time for gc runs that overlapped it). */
  release(): Promise<void>;
}

export interface GcHoldOptions {
  what: string;
  kind?: GcHoldKind;
  /** The hold's lease, ms (default DEFAULT_HOLD_LEASE_MS); renewed every third of it. */
  leaseMs?: number;
  now?: () => number;
}

/**
 * Takes a gc hold in `blockerm` for a producer that writes objects before a map names them
 * (import, `vlmc hash`, uploads). The hold is renewed in the background until `release`. A `dedup`
 * hold waits for a gc sweep under way to finish before it resolves.
 */
export async function takeGcHold(blockerm: Blocker, opts: GcHoldOptions): Promise<GcHold> {
  const now = opts.now ?? Date.now;
  const lease = opts.leaseMs ?? DEFAULT_HOLD_LEASE_MS;
  const id = `${Date.now().toString(36)}.${randomBytes(6).toString('hex')}`;
  const record: GcHoldRecord = {
    v: 1,
    id,
    what: opts.what,
    kind: opts.kind ?? 'write',
    host: hostname(),
    pid: process.pid,
    start: now(),
    expires: now() + lease,
  };
  const key = `${GC_HOLD_PREFIX}${id}`;
  const write = () => blockerm.writeFull(key, Buffer.from(JSON.stringify(record)));
  await write();
  let released = false;
  let renewing: Promise<void> = Promise.resolve();
  const timer = setInterval(
    () => {
      if (released) return;
      record.expires = now() + lease;
      renewing = write().catch(() => {});
    },
    Math.max(10, Math.floor(lease / 3)),
  );
  timer.unref();
  const release = async () => {
    if (released) return;
    released = true;
    clearInterval(timer);
    await renewing;
    record.end = now();
    // With no gc run under way, no run can have missed this hold (one that starts now sees what
    // it made): the record goes. Otherwise it stays, ended, for that run to see.
    const st = await readJson<GcState>(blockerm, GC_STATE).catch(() => null);
    if (st && st.expires >= now()) await write().catch(() => {});
    else await blockerm.delete(key).catch(() => false);
  };
  if (record.kind === 'dedup') {
    try {
      await waitForSweep(blockerm, now);
    } catch (e) {
      await release();
      throw e;
    }
  }
  return { record, release };
}

/** Runs `fn` under a gc hold (see takeGcHold). */
export async function withGcHold<T>(
  blockerm: Blocker,
  opts: GcHoldOptions,
  fn: () => Promise<T>,
): Promise<T> {
  const hold = await takeGcHold(blockerm, opts);
  try {
    return await fn();
  } finally {
    await hold.release();
  }
}

/** `archip_gc.state`: a gc run is under way (and sweeping), until `expires` unless rewritten. */
interface GcState {
  v: 1;
  sweeping: boolean;
  by: string;
  expires: number;
}

async function readJson<T>(b: Pick<Blocker, 'info' | 'read'>, key: string): Promise<T | null> {
  const info = await b.info(key);
  if (!info) return null;
  try {
    return JSON.parse((await b.read(key, 0, info.size, { missingOk: true })).toString('utf8')) as T;
  } catch {
    return null;
  }
}

/** Waits while a gc run sweeps (its state record says so and its lease holds). */
async function waitForSweep(blockerm: Blocker, now: () => number): Promise<void> {
  for (;;) {
    const st = await readJson<GcState>(blockerm, GC_STATE);
    if (!st?.sweeping || st.expires < now()) return;
    await sleep(50);
  }
}

/** Every hold record in blockerm (ended and expired ones too). */
export async function listGcHolds(blockerm: Blocker): Promise<GcHoldRecord[]> {
  const out: GcHoldRecord[] = [];
  for await (const key of blockerm.list(GC_HOLD_PREFIX)) {
    const r = await readJson<GcHoldRecord>(blockerm, key);
    if (r && r.v === 1 && typeof r.start === 'number') out.push(r);
  }
  return out;
}

// ------------------------------------------------------------------ gateway-owned hashed maps

/**
 * The HTTP gateway's files are content-named hashed maps (`<root>` or `<root>.<size>`), which
 * `vlmc hash` images and other files may share. A map the gateway made is marked owned
 * (`gwm.<map>`, `ownHashedMap`): gc keeps an owned map only while some gateway file record
 * (`gwo.*`) names it, and removes it (marks it DELETED) once none does, so its blocks are
 * garbage. A map `vlmc hash` makes or finds is disowned (`disownHashedMap`): it stays a root as
 * every map users made. Who names a hashed map (a gateway commit writing a record, `vlmc hash`
 * disowning, gc removing) does so under the hashed map's lock (`lockHashedMap`, per root), so gc
 * never removes a map a record is about to name, nor a map `vlmc hash` just handed out.
 */

/** `<root>` of a hashed map named `<root>` or `<root>.<size>`. */
export function hashedMapRoot(map: string): string {
  const i = map.indexOf('.');
  return i < 0 ? map : map.slice(0, i);
}

/** The ownership marker of gateway-made map `map`. */
export const gatewayOwnedMarker = (map: string) => `${GATEWAY_OWNED_PREFIX}${map}`;

/** Marks hashed map `map` as the gateway's (under its lock, after making it). */
export async function ownHashedMap(blockerm: Blocker, map: string): Promise<void> {
  await blockerm.writeFull(
    gatewayOwnedMarker(map),
    Buffer.from(JSON.stringify({ v: 1, map, at: Date.now() })),
  );
}

/** Makes hashed map `map` a user's (`vlmc hash`): gc keeps it whatever files name it. */
export async function disownHashedMap(blockerm: Blocker, map: string): Promise<void> {
  await blockerm.delete(gatewayOwnedMarker(map));
}

/** True when the gateway owns hashed map `map`. */
export function isGatewayOwned(blockerm: Blocker, map: string): Promise<boolean> {
  return blockerm.exists(gatewayOwnedMarker(map));
}

/** In-process turns at the hashed-map locks (the blocker lock is reentrant within a process). */
const localTurns = new Map<string, Promise<void>>();

async function localTurn(key: string): Promise<() => void> {
  const prev = localTurns.get(key) ?? Promise.resolve();
  let done!: () => void;
  const mine = new Promise<void>((r) => {
    done = r;
  });
  const tail = prev.then(() => mine);
  localTurns.set(key, tail);
  await prev;
  return () => {
    done();
    if (localTurns.get(key) === tail) localTurns.delete(key);
  };
}

export interface HashedMapLock {
  release(): Promise<void>;
}

/**
 * Takes the lock of the hashed maps of `map`'s root (`gwl.<root>` in blockerm, under a lease
 * renewed while held; one holder in this process at a time), waiting up to `timeoutMs` (default
 * 60 s); null when it stayed taken.
 */
export async function lockHashedMap(
  blockerm: Blocker,
  map: string,
  opts: { timeoutMs?: number } = {},
): Promise<HashedMapLock | null> {
  const name = `${HASHED_MAP_LOCK}${hashedMapRoot(map)}`;
  const endTurn = await localTurn(`${blockerm.identity}\0${name}`);
  try {
    const lock = await takeLeasedLock(blockerm, name, {
      deadline: Date.now() + (opts.timeoutMs ?? 60_000),
      now: Date.now,
      pollMs: 20,
    });
    if (!lock) {
      endTurn();
      return null;
    }
    let released = false;
    return {
      async release() {
        if (released) return;
        released = true;
        await lock.release();
        endTurn();
      },
    };
  } catch (e) {
    endTurn();
    throw e;
  }
}

/**
 * Takes blocker lock `name` for this process, waiting while another holds it (another identity,
 * or another live process of this identity) until `deadline`; null when it stayed taken. Held, it
 * is renewed under a lease until released. `onWait` is called once, when it has to wait.
 */
async function takeLeasedLock(
  b: Blocker,
  name: string,
  o: { deadline: number; now: () => number; pollMs: number; onWait?: () => void },
): Promise<{ release(): Promise<void> } | null> {
  const self = currentProcess();
  let waited = false;
  for (;;) {
    try {
      const got = await b.acquire(name, { leaseMs: DEFAULT_HOLD_LEASE_MS });
      // Same identity, another live process of this host: it holds the lock.
      const other = !got.took && got.previous?.process && !sameProcess(got.previous.process, self);
      if (!other) break;
    } catch (e) {
      if (!ArchipelagoError.is(e, 'ELOCKED')) throw e;
    }
    if (o.now() >= o.deadline) return null;
    if (!waited) {
      waited = true;
      o.onWait?.();
    }
    await sleep(o.pollMs);
  }
  const timer = setInterval(
    () => void b.renew(name, { leaseMs: DEFAULT_HOLD_LEASE_MS }).catch(() => {}),
    DEFAULT_HOLD_LEASE_MS / 3,
  );
  timer.unref();
  return {
    async release() {
      clearInterval(timer);
      await b.release(name).catch(() => {});
    },
  };
}

/** Runs `fn` under the lock of `map`'s root (see lockHashedMap); ETIMEDOUT after a minute. */
export async function withHashedMapLock<T>(blockerm: Blocker, map: string, fn: () => Promise<T>): Promise<T> {
  const lock = await lockHashedMap(blockerm, map);
  if (!lock) {
    throw archipError('ETIMEDOUT', `the lock of hashed map ${hashedMapRoot(map)} stayed taken for 60 s`);
  }
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}

/**
 * The hashed maps the gateway made (marked owned) that no gateway file record names: gc removes
 * them (see judgeGatewayMaps), and until it does they are nobody's (`storeUsage` counts them
 * gone). Markers whose map is already removed, or incomplete (an upload committing), may be
 * among them: callers match the set against the maps they see live.
 */
export async function unnamedGatewayMaps(
  blockerm: Pick<Blocker, 'list' | 'info' | 'read'>,
  parallelism = 16,
): Promise<Set<string>> {
  const owned: string[] = [];
  for await (const k of blockerm.list(GATEWAY_OWNED_PREFIX)) owned.push(k.slice(GATEWAY_OWNED_PREFIX.length));
  if (owned.length === 0) return new Set();
  const { maps: named } = await mapsOfRecords(blockerm, parallelism);
  return new Set(owned.filter((m) => !named.has(m)));
}

/** The maps gateway file records name, the records read, and how many of them name a map. */
async function mapsOfRecords(
  blockerm: Pick<Blocker, 'list' | 'info' | 'read'>,
  par: number,
): Promise<{ maps: Set<string>; keys: string[]; records: number }> {
  const keys: string[] = [];
  for await (const k of blockerm.list(GATEWAY_RECORD)) keys.push(k);
  const maps = new Set<string>();
  let records = 0;
  await pool(keys.length, par, async (i) => {
    const r = await readJson<{ map?: unknown }>(blockerm, keys[i]!);
    if (r && typeof r.map === 'string') {
      maps.add(r.map);
      records++;
    }
  });
  return { maps, keys, records };
}

/** What gc does with the gateway's maps in one run (see judgeGatewayMaps). */
interface GatewayMapsSeen {
  /** Live owned maps no record names that this run removed (a dry run: would remove). */
  removed: number;
  /** A dry run reads these as removed. */
  asIfGone: string[];
  /** Removed owned maps (this run or before) whose marker stays until their objects are judged. */
  removedOwned: Set<string>;
  /** The objects the removed owned maps name. */
  names: Set<string>;
  /** The file records read (the mark counts them without reading them again), and those naming a map. */
  recordKeys: string[];
  records: number;
}

/**
 * The gateway's maps: an owned map (marker `gwm.<map>`) no file record names is removed (marked
 * DELETED, under its root's lock, with the records read again under it); its marker stays, so
 * this run and later ones know the objects it named were the gateway's and go once no root
 * names them and no producer overlaps the run (the sweep), then the marker goes with the map's
 * blocks. A marker whose map is gone (a crash of the gateway between marker and map) goes.
 */
async function judgeGatewayMaps(
  blockerm: Blocker,
  store: MapStore,
  par: number,
  log: Logger,
  dryRun: boolean,
): Promise<GatewayMapsSeen> {
  const seen: GatewayMapsSeen = {
    removed: 0,
    asIfGone: [],
    removedOwned: new Set(),
    names: new Set(),
    recordKeys: [],
    records: 0,
  };
  const owned: string[] = [];
  for await (const k of blockerm.list(GATEWAY_OWNED_PREFIX)) owned.push(k.slice(GATEWAY_OWNED_PREFIX.length));
  if (owned.length === 0) return seen;
  const { maps: named, keys, records } = await mapsOfRecords(blockerm, par);
  seen.recordKeys = keys;
  seen.records = records;
  const orphans: string[] = [];
  const stale: string[] = [];
  await pool(owned.length, par, async (i) => {
    const m = owned[i]!;
    const st = await store.state(m);
    if (st === null) {
      if (!(await blockerm.exists(m))) stale.push(m);
    } else if (st.header.flags & MapFlag.DELETED) seen.removedOwned.add(m);
    else if (!(st.header.flags & MapFlag.INCOMPLETE) && !named.has(m)) orphans.push(m);
  });
  if (dryRun) {
    for (const m of orphans) {
      for (const n of await namesOf(store, m)) seen.names.add(n);
      seen.asIfGone.push(m);
    }
    seen.removed = orphans.length;
  } else {
    if (stale.length > 0) await disownIf(blockerm, store, stale, (st) => st === null);
    const removed = await removeOrphans(blockerm, store, orphans, par, log);
    seen.removed = removed.length;
    for (const m of removed) seen.removedOwned.add(m);
  }
  for (const m of seen.removedOwned) for (const n of await removedNames(blockerm, m)) seen.names.add(n);
  return seen;
}

/** Drops the markers of `maps` whose map state passes `gone`, each under its root's lock. */
async function disownIf(
  blockerm: Blocker,
  store: MapStore,
  maps: Iterable<string>,
  gone: (st: Awaited<ReturnType<MapStore['state']>>) => boolean,
): Promise<void> {
  for (const m of maps) {
    const lock = await lockHashedMap(blockerm, m, { timeoutMs: ORPHAN_LOCK_WAIT_MS });
    if (!lock) continue;
    try {
      const st = await store.state(m);
      if (gone(st) && (st !== null || !(await blockerm.exists(m)))) await disownHashedMap(blockerm, m);
    } finally {
      await lock.release();
    }
  }
}

/** The objects the entries of live map `map` name (none when it is no longer live). */
async function namesOf(store: MapStore, map: string): Promise<string[]> {
  try {
    return (await store.load(map, {})).entries.filter((e) => !isZero(e)).map((e) => e.name);
  } catch (e) {
    if (ArchipelagoError.is(e, 'ENOENT_VOLUME') || ArchipelagoError.is(e, 'EBUSY')) return [];
    throw e;
  }
}

/** The objects a removed (DELETED) v2 map's entries name, from the map blocks that are left. */
async function removedNames(blockerm: Blocker, map: string): Promise<string[]> {
  const head = await blockerm.read(map, 0, 512, { missingOk: true });
  let h: ReturnType<typeof decodeHeaderV2>;
  try {
    h = decodeHeaderV2(head, map);
  } catch {
    return [];
  }
  const n = objectCount(h.size, h.blocksize);
  const per = entriesPerMapBlock(h.blocksize);
  const out: string[] = [];
  for (let b = 0; b * per < n; b++) {
    const count = Math.min(per, n - b * per);
    const obj = mapBlockName(map, b);
    const info = await blockerm.info(obj);
    if (!info) continue;
    const bytes = await blockerm.read(obj, 0, Math.min(info.size, count * ENTRY_V2_SIZE), {
      missingOk: true,
    });
    try {
      for (const e of decodeEntriesV2(bytes, count, map, b * per)) if (!isZero(e)) out.push(e.name);
    } catch {
      // A damaged map block: its objects are left to the grace.
    }
  }
  return out;
}

/**
 * Removes the orphaned gateway maps `orphans` (marks them DELETED; their markers stay): under
 * each root's lock, once no record names them after the locks are held. Resolves the maps
 * removed. A map whose lock stays taken, or that is open, is left to a later run.
 */
async function removeOrphans(
  blockerm: Blocker,
  store: MapStore,
  orphans: readonly string[],
  par: number,
  log: Logger,
): Promise<string[]> {
  const removed: string[] = [];
  const byRoot = new Map<string, string[]>();
  for (const m of orphans) {
    const r = hashedMapRoot(m);
    byRoot.set(r, [...(byRoot.get(r) ?? []), m]);
  }
  const roots = [...byRoot.keys()];
  for (let at = 0; at < roots.length; at += ORPHAN_BATCH) {
    const locked: Array<[string, HashedMapLock]> = [];
    try {
      for (const r of roots.slice(at, at + ORPHAN_BATCH)) {
        const lock = await lockHashedMap(blockerm, r, { timeoutMs: ORPHAN_LOCK_WAIT_MS });
        if (lock) locked.push([r, lock]);
      }
      // Records are written under these locks: read now, they are what keeps the maps.
      const { maps: named } = await mapsOfRecords(blockerm, par);
      for (const [r] of locked) {
        for (const m of byRoot.get(r)!) {
          if (!named.has(m) && (await removeOwnedMap(blockerm, store, m, log))) removed.push(m);
        }
      }
    } finally {
      for (const [, lock] of locked) await lock.release();
    }
  }
  return removed;
}

/** Marks owned map `map` DELETED under its lock; false when it was not (in use, or not owned). */
async function removeOwnedMap(
  blockerm: Blocker,
  store: MapStore,
  map: string,
  log: Logger,
): Promise<boolean> {
  if (!(await isGatewayOwned(blockerm, map))) return false; // disowned meanwhile (vlmc hash)
  let got: Awaited<ReturnType<Blocker['acquire']>>;
  try {
    got = await blockerm.acquire(map, { leaseMs: DEFAULT_HOLD_LEASE_MS });
  } catch (e) {
    if (ArchipelagoError.is(e, 'ELOCKED')) return false; // in use: the next run
    throw e;
  }
  if (!got.took) return false; // this identity holds it (open somewhere): the next run
  try {
    const st = await store.state(map);
    if (st === null || st.header.flags & (MapFlag.DELETED | MapFlag.INCOMPLETE)) return false;
    await store.markDeleted(await store.load(map, {}));
    log.info({ map }, 'gc: removed a gateway map no file names');
    return true;
  } finally {
    await blockerm.release(map).catch(() => {});
  }
}

// ------------------------------------------------------------------ the collector

export interface GcOptions {
  blockerm: Blocker;
  blockerb: Blocker;
  /** Find and count, delete nothing (no lock taken). */
  dryRun?: boolean;
  /**
   * Runs under the gc lock before the mark (not in a dry run): what must go first, e.g. the trash
   * entries past `[mapperd] trash_ttl` (`mapper.purgeExpiredTrash`), so this run frees their objects.
   */
  prepare?: () => Promise<unknown>;
  /** See the module comment (default DEFAULT_GC_GRACE_MS). */
  graceMs?: number;
  /** How long to wait for another gc run, ms (default 10 minutes); then ETIMEDOUT. */
  lockTimeoutMs?: number;
  /** Deletes and reads at once (default 32). */
  parallelism?: number;
  onProgress?: (p: GcProgress) => void;
  log?: Logger;
  now?: () => number;
  /**
   * A dry run counts these maps as gone: what `prepare` would remove first (the expired trash
   * entries), so `vlmc du` reports what a real run frees. Ignored by a real run.
   */
  asIfPurged?: ReadonlySet<string>;
}

export interface GcProgress {
  phase: 'wait' | 'list' | 'mark' | 'sweep';
  done: number;
  total: number;
}

/** What a gc run found and freed. */
export interface GcReport {
  dryRun: boolean;
  /** Live maps marked (roots), and DELETED map headers seen. */
  maps: number;
  deletedMaps: number;
  /** Mark rounds it took. */
  rounds: number;
  /** Gateway file records read. */
  fileRecords: number;
  /**
   * Gateway-made maps no file names any more that this run removed (a dry run: would remove),
   * so their blocks are garbage (see ownHashedMap).
   */
  gatewayMaps: number;
  /**
   * Objects in blockerb when listed (blockerm's own left out in a shared store). Their bytes are
   * not counted: a run stats only unreferenced objects (`storeUsage`, `vlmc du`, counts them all).
   */
  blockerObjects: number;
  /** Distinct objects the roots name. */
  referencedObjects: number;
  /** Objects no root names, and their bytes. */
  unreferencedObjects: number;
  unreferencedBytes: number;
  /** Of those, what this run may delete (a dry run: would). */
  reclaimableObjects: number;
  reclaimableBytes: number;
  /** Unreferenced but kept: younger than the cutoff, age unknown, or content under a dedup hold. */
  keptObjects: number;
  keptBytes: number;
  /** Map blocks of DELETED maps that may go (a dry run: would), and their bytes. */
  mapBlocks: number;
  mapBlockBytes: number;
  /** What was deleted (0 in a dry run). */
  freedObjects: number;
  freedBytes: number;
  freedMapBlocks: number;
  /** Objects blockerm holds that are neither maps, map blocks nor gc or gateway records. */
  unknownMapObjects: number;
  /** Holds that overlapped the run. */
  holds: Array<Pick<GcHoldRecord, 'what' | 'kind' | 'start' | 'host' | 'pid'>>;
  /** Objects older than this (ms since the epoch) could go. */
  cutoff: number;
  /** Waiting for another gc run, ms. */
  waitedMs: number;
  seconds: number;
}

const processMutexes = new WeakMap<Blocker, Mutex>();

/** Runs one gc over the blocker pair (see the module comment). */
export async function collectGarbage(opts: GcOptions): Promise<GcReport> {
  const now = opts.now ?? Date.now;
  const t0 = performance.now();
  const dryRun = opts.dryRun === true;
  if (dryRun) return { ...(await runGc(opts, now)), waitedMs: 0, seconds: (performance.now() - t0) / 1000 };
  let mutex = processMutexes.get(opts.blockerm);
  if (!mutex) {
    mutex = new Mutex();
    processMutexes.set(opts.blockerm, mutex);
  }
  return mutex.run(async () => {
    const waitStart = now();
    const lock = await takeGcLock(opts, now);
    const waitedMs = now() - waitStart;
    try {
      await opts.prepare?.();
      const r = await runGc(opts, now);
      return { ...r, waitedMs, seconds: (performance.now() - t0) / 1000 };
    } finally {
      await lock.release();
    }
  });
}

/** The gc lock (cross-process), renewed while held. Waits for another run. */
async function takeGcLock(opts: GcOptions, now: () => number): Promise<{ release(): Promise<void> }> {
  const timeout = opts.lockTimeoutMs ?? 10 * 60_000;
  const lock = await takeLeasedLock(opts.blockerm, GC_LOCK, {
    deadline: now() + timeout,
    now,
    pollMs: 200,
    onWait: () => {
      opts.log?.info({}, 'another gc run is under way: waiting for it');
      opts.onProgress?.({ phase: 'wait', done: 0, total: 0 });
    },
  });
  if (!lock)
    throw archipError('ETIMEDOUT', `another gc run kept running for ${Math.round(timeout / 1000)} s`);
  return lock;
}

/** What the mark knows of one map header. */
interface HeaderSeen {
  /** The header's bytes and mtime when its map was read: a change means read again. */
  stamp: string;
  deleted: boolean;
  epoch: bigint;
  blocksize: number;
}

async function runGc(opts: GcOptions, now: () => number): Promise<Omit<GcReport, 'waitedMs' | 'seconds'>> {
  const { blockerm } = opts;
  const log = opts.log ?? silentLogger;
  const dryRun = opts.dryRun === true;

  // Announced before the mark begins (see takeGcHold's release), and kept fresh while it runs.
  let sweeping = false;
  const announce = () =>
    dryRun
      ? Promise.resolve()
      : blockerm.writeFull(
          GC_STATE,
          Buffer.from(
            JSON.stringify({
              v: 1,
              sweeping,
              by: blockerm.identity,
              expires: now() + STATE_LEASE_MS,
            } satisfies GcState),
          ),
        );
  await announce();
  const stateTimer = dryRun ? null : setInterval(() => void announce().catch(() => {}), STATE_LEASE_MS / 4);
  stateTimer?.unref();
  try {
    return await runAnnounced(opts, now, log, dryRun, () => {
      sweeping = true;
      return announce();
    });
  } finally {
    if (stateTimer) clearInterval(stateTimer);
    if (!dryRun) await blockerm.delete(GC_STATE).catch(() => false);
  }
}

async function runAnnounced(
  opts: GcOptions,
  now: () => number,
  log: Logger,
  dryRun: boolean,
  startSweep: () => Promise<void>,
): Promise<Omit<GcReport, 'waitedMs' | 'seconds'>> {
  const { blockerm, blockerb } = opts;
  const grace = opts.graceMs ?? DEFAULT_GC_GRACE_MS;
  const par = opts.parallelism ?? 32;
  const progress = opts.onProgress ?? (() => {});
  const store = new MapStore(blockerm, { parallelism: par, log });
  const markStart = now();
  const holdsAtStart = await listGcHolds(blockerm);

  // Gateway maps whose last file went: removed first (a dry run counts them as removed), so their
  // objects are garbage in this run. Those objects go at once when no producer overlapped the
  // run (nothing can be reusing them: see the sweep), else once older than the cutoff.
  const gw = await judgeGatewayMaps(blockerm, store, par, log, dryRun);
  const asIfGone = new Set([...(dryRun ? (opts.asIfPurged ?? []) : []), ...gw.asIfGone]);

  // What exists before the mark: only these may go.
  progress({ phase: 'list', done: 0, total: 0 });
  const candidates: string[] = [];
  for await (const o of blockerb.list()) candidates.push(o);
  progress({ phase: 'list', done: candidates.length, total: candidates.length });

  // Mark, in rounds until nothing changes.
  const marked = new Set<string>();
  const seen = new Map<string, HeaderSeen>();
  let fileRecords = gw.records;
  let unknown = 0;
  let rounds = 0;
  const mapObjects = new Set<string>();
  /** Objects of blockerm that are no map but data (a store shared by both roles). */
  const dataHeads = new Set<string>();
  const candidateSet = new Set(candidates);
  const readRecords = new Set<string>(gw.recordKeys);
  for (;;) {
    rounds++;
    if (rounds > MAX_ROUNDS) {
      throw archipError(
        'EBUSY',
        `gc: maps kept changing through ${MAX_ROUNDS} mark rounds; nothing was deleted, try again later`,
      );
    }
    const heads: string[] = [];
    for await (const o of blockerm.list()) {
      mapObjects.add(o);
      if (o.startsWith('archip_gc.')) continue;
      if (o.startsWith(GATEWAY_RECORD)) {
        if (readRecords.has(o)) continue;
        readRecords.add(o);
        const rec = await readJson<{ map?: unknown }>(blockerm, o);
        if (rec && typeof rec.map === 'string') fileRecords++;
        continue; // its map is a live map in blockerm: a root below
      }
      if (o.startsWith('gwc.') || o.startsWith(GATEWAY_OWNED_PREFIX) || MAP_BLOCK.test(o)) continue;
      heads.push(o);
    }
    let changed = 0;
    await pool(heads.length, par, async (i) => {
      const o = heads[i]!;
      const stamp = await headerStamp(blockerm, o);
      if (stamp === null) return;
      const before = seen.get(o);
      if (before && before.stamp === stamp) return;
      // A v0 map (no signature) is tried unless the object is blockerb's too (a shared store).
      const r = asIfGone.has(o)
        ? { deleted: true, epoch: -1n, blocksize: 0 }
        : await readRoot(store, o, marked, !candidateSet.has(o));
      if (r === 'data') {
        dataHeads.add(o);
        seen.set(o, { stamp, deleted: true, epoch: -1n, blocksize: 0 });
        return;
      }
      dataHeads.delete(o);
      if (r === 'unknown') {
        if (!before) unknown++;
        seen.set(o, { stamp, deleted: true, epoch: -1n, blocksize: 0 });
        return;
      }
      // One more round when a live map appeared under a name not seen live before (a clone, a
      // snapshot, a rename, a move to or from the trash): its entries may name objects listed
      // before the mark that no map read so far names. And one more when a map is read DELETED
      // that was not read live before (or changed since it was read DELETED): it may have moved
      // (a rename, a remove to the trash, a restore) under a name that was read before the move
      // wrote it; a move writes the new name whole before it marks the old one DELETED, so the
      // next round finds the new name's header changed (or the name new) and reads it. A live
      // map changed in place needs no round of its own: what it names anew is a copy-up made
      // after the listing (no candidate), or objects of a map that is itself marked (a
      // rollback's snapshot), or objects a gc hold covers (hash, import, X_CREATE). Waiting for
      // in-place changes to stop would never end on a busy store.
      if (!before || before.deleted) changed++;
      seen.set(o, { stamp, ...r });
    });
    progress({ phase: 'mark', done: seen.size, total: seen.size });
    if (changed === 0) break;
  }

  // Who overlapped the run; a sweep is announced first (see takeGcHold).
  if (!dryRun) await startSweep();
  {
    const holdsNow = await listGcHolds(blockerm);
    const byId = new Map<string, GcHoldRecord>();
    for (const h of [...holdsAtStart, ...holdsNow]) {
      const prev = byId.get(h.id);
      if (!prev || (h.end ?? h.expires) > (prev.end ?? prev.expires)) byId.set(h.id, h);
    }
    const overlapping = [...byId.values()].filter((h) => (h.end ?? h.expires) >= markStart);
    const cutoff = Math.min(markStart, ...overlapping.map((h) => h.start)) - grace;
    const dedup = overlapping.some((h) => h.kind === 'dedup');
    // No producer overlapped the run: nothing can be reusing the objects of a removed gateway map
    // (every producer that reuses content objects holds a dedup hold), so they go whatever age.
    const quiet = overlapping.length === 0;

    const liveEpoch = new Map<string, bigint>();
    const deletedMaps = new Map<string, HeaderSeen>();
    for (const [o, h] of seen) {
      if (h.epoch < 0n) continue;
      if (h.deleted) deletedMaps.set(o, h);
      else liveEpoch.set(o, h.epoch);
    }
    const dead = (o: string) => {
      const m = DATA_OBJECT.exec(o);
      if (!m) return false;
      const vol = m[1]!;
      const epoch = BigInt(`0x${m[2]}`);
      const live = liveEpoch.get(vol);
      if (live !== undefined) return epoch < live;
      const gone = deletedMaps.get(vol);
      return gone !== undefined && epoch <= gone.epoch; // (a later epoch: the name made again)
    };

    // In a store shared by both roles, which of blockerm's objects are data: not a map header (live
    // or removed), not a map block of one, not a gc or gateway record, nothing unknown.
    const sharedData = (o: string) => {
      if (dataHeads.has(o)) return true;
      const m = MAP_BLOCK.exec(o);
      return m !== null && (seen.get(m[1]!)?.epoch ?? -1n) < 0n && !o.startsWith('archip_gc.');
    };

    // Judge every unreferenced candidate.
    // A referenced object is counted, never stat'ed: on a large store the stats of the live
    // objects were most of a run's time (`vlmc du` counts their bytes from its own pass).
    /** Objects listed in blockerb; objects and bytes unreferenced, kept (unreferenced but not doomed). */
    let blockerObjects = 0;
    const unref = tally();
    const kept = tally();
    const doomed: Array<{ name: string; size: number }> = [];
    await pool(candidates.length, par, async (i) => {
      const o = candidates[i]!;
      if (mapObjects.has(o) && !sharedData(o)) return; // blockerm's own (a shared store)
      if (marked.has(o)) {
        blockerObjects++;
        return;
      }
      const info = await blockerb.info(o);
      if (!info) return; // deleted since the listing
      blockerObjects++;
      unref.add(info.size);
      const aged =
        info.mtime !== undefined && info.mtime + MTIME_SLACK_MS < cutoff && !(dedup && isContentName(o));
      if (dead(o) || aged || (quiet && gw.names.has(o))) doomed.push({ name: o, size: info.size });
      else kept.add(info.size);
    });

    // Map blocks of DELETED maps.
    const blocksOf = new Map<string, string[]>();
    for (const o of mapObjects) {
      const m = MAP_BLOCK.exec(o);
      if (!m || !deletedMaps.has(m[1]!)) continue;
      const list = blocksOf.get(m[1]!) ?? [];
      list.push(o);
      blocksOf.set(m[1]!, list);
    }
    let mapBlocks = 0;
    let mapBlockBytes = 0;
    const oldBlocks = new Map<string, string[]>();
    for (const [vol, blocks] of blocksOf) {
      // A removed gateway map's blocks tell later runs what it named: kept until a run could judge.
      if (gw.removedOwned.has(vol) && !quiet) continue;
      const keep: string[] = [];
      for (const blk of blocks) {
        const info = await blockerm.info(blk);
        if (!info || (info.mtime !== undefined && info.mtime + MTIME_SLACK_MS >= markStart)) continue;
        keep.push(blk);
        mapBlocks++;
        mapBlockBytes += info.size;
      }
      if (keep.length > 0) oldBlocks.set(vol, keep);
    }

    let freedObjects = 0;
    let freedBytes = 0;
    let freedMapBlocks = 0;
    if (!dryRun) {
      let done = 0;
      const total = doomed.length + mapBlocks;
      progress({ phase: 'sweep', done, total });
      await pool(doomed.length, par, async (i) => {
        const d = doomed[i]!;
        if (await blockerb.delete(d.name)) {
          freedObjects++;
          freedBytes += d.size;
        }
        progress({ phase: 'sweep', done: ++done, total });
      });
      for (const [vol, blocks] of oldBlocks) {
        freedMapBlocks += await deleteMapBlocks(blockerm, vol, blocks, deletedMaps.get(vol)!, log);
        done += blocks.length;
        progress({ phase: 'sweep', done, total });
      }
      // Removed gateway maps judged (their objects went) and with no map block left: the marker
      // goes, unless the map was made again meanwhile.
      if (quiet && gw.removedOwned.size > 0) {
        const judged: string[] = [];
        for (const m of gw.removedOwned) {
          let left = false;
          for await (const o of blockerm.list(`${m}_`)) if (MAP_BLOCK.exec(o)?.[1] === m) left = true;
          if (!left) judged.push(m);
        }
        await disownIf(blockerm, store, judged, (st) =>
          st === null ? true : (st.header.flags & MapFlag.DELETED) !== 0,
        );
      }
      // Hold records no later run needs: ended or expired before this run began.
      for (const h of byId.values()) {
        if ((h.end ?? h.expires) < markStart)
          await blockerm.delete(`${GC_HOLD_PREFIX}${h.id}`).catch(() => false);
      }
    }
    const maps = liveEpoch.size;
    log.info(
      {
        maps,
        unreferenced: unref.objects,
        freed: freedObjects,
        freedBytes,
        mapBlocks: freedMapBlocks,
        dryRun,
      },
      'gc done',
    );
    return {
      dryRun,
      maps,
      deletedMaps: deletedMaps.size,
      rounds,
      fileRecords,
      gatewayMaps: gw.removed,
      blockerObjects,
      referencedObjects: marked.size,
      unreferencedObjects: unref.objects,
      unreferencedBytes: unref.bytes,
      reclaimableObjects: doomed.length,
      reclaimableBytes: doomed.reduce((a, d) => a + d.size, 0),
      keptObjects: kept.objects,
      keptBytes: kept.bytes,
      mapBlocks,
      mapBlockBytes,
      freedObjects,
      freedBytes,
      freedMapBlocks,
      unknownMapObjects: unknown,
      holds: overlapping.map(({ what, kind, start, host, pid }) => ({ what, kind, start, host, pid })),
      cutoff,
    };
  }
}

/** A count of objects and their bytes. */
function tally() {
  return {
    objects: 0,
    bytes: 0,
    add(size: number) {
      this.objects++;
      this.bytes += size;
    },
  };
}

/** The header's first bytes and mtime, as a string that changes when the header is rewritten. */
async function headerStamp(blockerm: Blocker, o: string): Promise<string | null> {
  const info = await blockerm.info(o);
  if (!info) return null;
  const head = await blockerm.read(o, 0, Math.min(info.size, 512), { missingOk: true });
  return `${info.size}:${info.mtime ?? ''}:${head.toString('base64')}`;
}

/**
 * Reads map object `o` and marks what its entries name (when live). 'unknown' when `o` is no map
 * we can read (v0 maps without a hint are tried as such).
 */
async function readRoot(
  store: MapStore,
  o: string,
  marked: Set<string>,
  tryV0: boolean,
): Promise<Omit<HeaderSeen, 'stamp'> | 'unknown' | 'data'> {
  try {
    return await readMap(store, o, marked, tryV0);
  } catch (e) {
    // In a store shared with blockerb, a data object that looks like a map at first is data.
    const blockerError = (x: unknown): boolean =>
      ArchipelagoError.isInstance(x) && (x.code !== 'ECORRUPT_MAP' || blockerError((x as Error).cause));
    if (!tryV0 && !blockerError(e)) return 'data';
    throw e;
  }
}

async function readMap(
  store: MapStore,
  o: string,
  marked: Set<string>,
  tryV0: boolean,
  attempt = 0,
): Promise<Omit<HeaderSeen, 'stamp'> | 'unknown' | 'data'> {
  const head = await store.readHead(o);
  if (!head) return { deleted: true, epoch: 0n, blocksize: 0 };
  const bytes = head.bytes.subarray(0, head.stored);
  let version: 0 | 1 | 2;
  try {
    version = detectVersion(bytes, o);
  } catch {
    if (!tryV0) return 'data';
    version = 0;
  }
  let epoch = 0n;
  let blocksize = 0;
  if (version === 2) {
    const h = decodeHeaderV2(bytes, o);
    epoch = h.epoch;
    blocksize = h.blocksize;
    if (h.flags & MapFlag.DELETED) return { deleted: true, epoch, blocksize };
    // A committed rollback (ops/rollback.ts): the next use of the volume finishes it from the
    // staged map, which is no head of its own (its name looks like a map block): a root too.
    const intent = h.flags & MapFlag.INCOMPLETE ? decodeIntent(bytes) : null;
    if (intent?.kind === 'rolling-back') {
      const staged = await store.load(intent.name, { incomplete: true });
      for (const e of staged.entries) if (!isZero(e)) marked.add(e.name);
      marked.add(intent.name);
      const blocks = Math.ceil(staged.entries.length / entriesPerMapBlock(staged.blocksize));
      for (let i = 0; i < blocks; i++) marked.add(mapBlockName(intent.name, i));
      // The volume's own blocks may be half rewritten from it (readable or not): the staged map
      // is what the volume becomes; what its old entries alone name is garbage once it does.
      const own = await store.load(o, { incomplete: true }).catch(() => null);
      for (const e of own?.entries ?? []) if (!isZero(e)) marked.add(e.name);
      return { deleted: false, epoch, blocksize };
    }
  }
  try {
    const map = await store.load(o, { incomplete: true, assumeV0: version === 0 });
    for (const e of map.entries) if (!isZero(e)) marked.add(e.name);
    return { deleted: false, epoch: map.epoch, blocksize: map.blocksize };
  } catch (e) {
    // Removed between the two reads: the next round sees its header changed.
    if (ArchipelagoError.is(e, 'ENOENT_VOLUME')) return { deleted: true, epoch, blocksize };
    if (version === 0) return 'unknown';
    // Its map blocks may have gone (or been rewritten) under the read: a trash purge, a restore
    // or a remove commits on the header first, then deletes the blocks. Read the header again;
    // when it changed, the map is read as it is now (it holds nothing when it became DELETED).
    const again = await store.readHead(o);
    const now = again?.bytes.subarray(0, again.stored);
    if (!now?.equals(bytes) && attempt < 3) return readMap(store, o, marked, tryV0, attempt + 1);
    throw archipError(
      'ECORRUPT_MAP',
      `gc: map "${o}" cannot be read (${e instanceof Error ? e.message : String(e)}); nothing was deleted`,
      { cause: e, details: { volume: o } },
    );
  }
}

/** Deletes the map blocks of DELETED map `vol` under its lock, if it is still DELETED. */
async function deleteMapBlocks(
  blockerm: Blocker,
  vol: string,
  blocks: string[],
  was: HeaderSeen,
  log: Logger,
): Promise<number> {
  let got: Awaited<ReturnType<Blocker['acquire']>>;
  try {
    got = await blockerm.acquire(vol, { leaseMs: DEFAULT_HOLD_LEASE_MS });
  } catch (e) {
    if (ArchipelagoError.is(e, 'ELOCKED')) return 0; // in use: the next run
    throw e;
  }
  if (!got.took) return 0; // this identity holds it (a mapper of this host making the name again)
  try {
    const info = await blockerm.info(vol);
    if (!info) return 0;
    const head = await blockerm.read(vol, 0, Math.min(info.size, 512), { missingOk: true });
    const h = decodeHeaderV2(head, vol);
    if (!(h.flags & MapFlag.DELETED) || h.epoch !== was.epoch) return 0; // made again meanwhile
    let n = 0;
    for (const b of blocks) if (await blockerm.delete(b)) n++;
    return n;
  } catch (e) {
    log.warn({ volume: vol, err: String(e) }, 'gc: map blocks left');
    return 0;
  } finally {
    if (got.took) await blockerm.release(vol).catch(() => {});
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
