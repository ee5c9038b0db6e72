/**
 * A RADOS lock and its record, changed together: the lock object `<name>_lock` carries the
 * cls_lock exclusive lock `RadosLock` (who holds it, for how long: the OSD drops a holder whose
 * lease ran out) and the xattr `archipelago.holder`, the lock record (holder.ts) as JSON plus the
 * cls_lock holder it belongs to (client and cookie). Every change is one compound write op guarded
 * by a compare of the record as last read (compare-and-swap): taking the lock and writing its
 * record, renewing both, breaking and removing both. A read takes both in one read op.
 *
 * A release request (`requestRelease`, the cooperative hand-over) is the xattr `archipelago.release`
 * of the same object, `{ by, at }` as JSON: set only by an op guarded by the holder's record (so
 * it is addressed to the holder that record names), and removed by the very op that takes or frees
 * the lock (so a new holder never finds its predecessor's request).
 *
 * A record without its cls_lock holder is **stale**: the holder's lease ran out on the OSD (it
 * did not renew in time: it died, hung or was stopped) or someone broke the cls lock by hand. It
 * did not release the lock, so it may still be alive and writing; the next taker fences it first.
 * A clean release removes the record with the lock.
 */
import { constants } from 'node:os';
import { getSystemErrorName } from 'node:util';
import type { LockProcess, LockRecord, ReleaseRequest } from '@archipelago/blocker';
import {
  breakInput,
  type ClsLocker,
  decodeLockInfo,
  getInfoInput,
  LOCK_FLAG_MUST_RENEW,
  lockInput,
} from './cls-lock.js';
import type { NativeError, NativeOpResult, NativePool, NativeStep } from './native.js';

/** The cls_lock lock name the original radosd used. */
export const RADOS_LOCK_NAME = 'RadosLock';
/** The xattr of the lock object that holds the lock record (`rados getxattr <obj> archipelago.holder`). */
export const RECORD_XATTR = 'archipelago.holder';
/** The xattr of the lock object that holds a pending release request, `{ by, at }` as JSON. */
export const RELEASE_XATTR = 'archipelago.release';

const E = constants.errno;

/** A record as stored: the contract's record plus the cls_lock holder (client, cookie) it belongs to. */
export interface StoredRecord extends LockRecord {
  /** The librados client that holds the cls lock, e.g. `client.4125`. */
  client: string;
  /** Its cls_lock cookie, `<identity>#<random>`. */
  cookie: string;
}

/** Lock object `<name>_lock` as one read op saw it. */
export interface LockState {
  /** The record xattr exactly as stored (what a compare-and-swap compares), or null. */
  raw: string | null;
  /** `raw` parsed, or null when absent or not a record of ours. */
  stored: StoredRecord | null;
  /** The cls_lock holder, or null: free, or its lease ran out on the OSD. */
  locker: ClsLocker | null;
  /** The release request pending for the holder (RELEASE_XATTR), or null. */
  request: ReleaseRequest | null;
}

/**
 * `free`: no holder, no record. `held`: a holder with its record. `stale`: a record whose holder
 * is gone from the OSD (it did not release: fence it before taking over). `foreign`: a holder with
 * no record of its own (an older version's lock, or one taken with `rados lock`).
 */
export type LockStatus = 'free' | 'held' | 'stale' | 'foreign';

export function statusOf(s: LockState): LockStatus {
  if (s.locker === null) return s.stored === null ? 'free' : 'stale';
  return s.stored !== null && s.stored.client === s.locker.client && s.stored.cookie === s.locker.cookie
    ? 'held'
    : 'foreign';
}

/** The stored form of `rec`, held by `client` with `cookie`. */
export function encodeRecord(rec: LockRecord, client: string, cookie: string): string {
  const stored: StoredRecord = {
    owner: rec.owner,
    process: rec.process,
    expires: rec.expires,
    ...(rec.addr !== undefined ? { addr: rec.addr } : {}),
    ...(rec.clients !== undefined && rec.clients.length > 0 ? { clients: [...rec.clients] } : {}),
    ...(rec.proxied === true ? { proxied: true } : {}),
    ...(rec.notBefore !== undefined ? { notBefore: rec.notBefore } : {}),
    client,
    cookie,
  };
  return JSON.stringify(stored);
}

function isProcess(p: unknown): p is LockProcess {
  const o = p as Record<string, unknown> | null;
  return (
    typeof o === 'object' &&
    o !== null &&
    typeof o.host === 'string' &&
    typeof o.boot === 'string' &&
    Number.isSafeInteger(o.pid) &&
    typeof o.start === 'string'
  );
}

/**
 * The `clients` field of a stored record: a non-empty list of addresses, else nothing. A malformed
 * list keeps its string entries (a break still blocklists what it can read).
 */
function clientsOf(v: unknown): { clients: string[] } | null {
  if (!Array.isArray(v)) return null;
  const clients = v.filter((a): a is string => typeof a === 'string' && a !== '');
  return clients.length > 0 ? { clients } : null;
}

/** A stored record, or null when `raw` is not one. */
export function decodeRecord(raw: string): StoredRecord | null {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(raw) as Record<string, unknown>;
  } catch {
    return null;
  }
  if (
    typeof o !== 'object' ||
    o === null ||
    typeof o.owner !== 'string' ||
    !(o.process === null || isProcess(o.process)) ||
    !(o.expires === null || Number.isSafeInteger(o.expires)) ||
    !(o.addr === undefined || typeof o.addr === 'string') ||
    typeof o.client !== 'string' ||
    typeof o.cookie !== 'string'
  ) {
    return null;
  }
  const p = o.process as LockProcess | null;
  return {
    owner: o.owner,
    process: p === null ? null : { host: p.host, boot: p.boot, pid: p.pid, start: p.start },
    expires: o.expires as number | null,
    ...(typeof o.addr === 'string' ? { addr: o.addr } : {}),
    ...(clientsOf(o.clients) ?? {}),
    ...(o.proxied === true ? { proxied: true } : {}),
    ...(typeof o.notBefore === 'number' ? { notBefore: o.notBefore } : {}),
    client: o.client,
    cookie: o.cookie,
  };
}

/** A binding error for a compound op that failed with `rc` (fromRadosError maps it). */
export function opError(rc: number, what: string): NativeError {
  return Object.assign(new Error(`${what}: ${getSystemErrorName(rc)}`), { errno: -rc, syscall: what });
}

/** Reads lock object `oid`: the cls lock's holder and the record, in one read op. */
export async function readLock(pool: NativePool, oid: string): Promise<LockState> {
  const r = await pool.readOp(oid, [
    { kind: 'exec', cls: 'lock', method: 'get_info', input: getInfoInput(RADOS_LOCK_NAME) },
    { kind: 'getxattrs' },
  ]);
  if (r.rc === -E.ENOENT) return { raw: null, stored: null, locker: null, request: null };
  if (r.rc < 0) throw opError(r.rc, `lock info ${oid}`);
  const info = r.results[0];
  const locker = Buffer.isBuffer(info) ? (decodeLockInfo(info).lockers[0] ?? null) : null;
  const xattrs = r.results[1] as Record<string, Buffer> | null;
  const value = xattrs?.[RECORD_XATTR];
  const raw = value === undefined ? null : value.toString('utf8');
  const asked = xattrs?.[RELEASE_XATTR];
  return {
    raw,
    stored: raw === null ? null : decodeRecord(raw),
    locker,
    request: asked === undefined ? null : decodeRequest(asked),
  };
}

/** A stored release request; a torn or foreign value still asks (by "unknown", at 0). */
export function decodeRequest(value: Buffer): ReleaseRequest {
  try {
    const r = JSON.parse(value.toString('utf8')) as Partial<ReleaseRequest> | null;
    if (typeof r?.by === 'string' && r.by !== '' && Number.isSafeInteger(r.at))
      return { by: r.by, at: r.at as number };
  } catch {
    // below
  }
  return { by: 'unknown', at: 0 };
}

/** What a compare-and-swap did: done; `changed` (the record or the holder was not as expected). */
export type Swap = 'done' | 'changed';

/** Asserts that the record is still `raw` (absent or empty for null). */
function guard(raw: string | null): NativeStep {
  return { kind: 'cmpxattr', name: RECORD_XATTR, value: Buffer.from(raw ?? '', 'utf8') };
}

function lockStep(hold: Hold, flags: number): NativeStep {
  const { cookie, description, durationMs } = hold;
  return {
    kind: 'exec',
    cls: 'lock',
    method: 'lock',
    input: lockInput({ name: RADOS_LOCK_NAME, cookie, description, durationMs, flags }),
  };
}

function setRecord(rec: string): NativeStep {
  return { kind: 'setxattr', name: RECORD_XATTR, value: Buffer.from(rec, 'utf8') };
}

/** Drops the release request, if any (failOk: there usually is none, ENODATA). */
const DROP_REQUEST: NativeStep = { kind: 'rmxattr', name: RELEASE_XATTR, failOk: true };

function breakStep(locker: ClsLocker): NativeStep {
  return {
    kind: 'exec',
    cls: 'lock',
    method: 'break_lock',
    input: breakInput(RADOS_LOCK_NAME, locker.client, locker.cookie),
    failOk: true, // gone already (its lease ran out): the rest of the op still applies
  };
}

/** What one lock record asks of the cls lock. */
export interface Hold {
  /** The stored record (encodeRecord). */
  record: string;
  cookie: string;
  /** What `rados lock info` shows. */
  description: string;
  /** The lease the OSD enforces, ms; 0: none. */
  durationMs: number;
}

/**
 * What a compound op's result means: `done`; `changed` when the guard did not match (ECANCELED),
 * the object is gone (ENOENT), or a cls_lock step refused (held by someone else: EBUSY, EEXIST).
 * Anything else throws (a binding error, mapped by the caller).
 */
function outcome(r: NativeOpResult, what: string): Swap {
  if (r.rc >= 0) return 'done';
  if (r.rc === -E.ECANCELED || r.rc === -E.ENOENT) return 'changed';
  if ((r.rc === -E.EBUSY || r.rc === -E.EEXIST) && r.prvals.some((v) => v < 0)) return 'changed';
  throw opError(r.rc, what);
}

async function swap(pool: NativePool, oid: string, what: string, steps: NativeStep[]): Promise<Swap> {
  return outcome(await pool.writeOp(oid, steps), `${what} ${oid}`);
}

/**
 * Takes the lock with `hold` if the record is still `raw` (null: there is none), dropping any
 * release request in the same op (it was for an earlier holder). A lock object that does not exist
 * yet is created by the same op.
 */
export async function take(pool: NativePool, oid: string, raw: string | null, hold: Hold): Promise<Swap> {
  const steps = [lockStep(hold, 0), setRecord(hold.record), DROP_REQUEST];
  const r = await pool.writeOp(oid, [guard(raw), ...steps]);
  if (r.rc !== -E.ENOENT || raw !== null) return outcome(r, `acquire ${oid}`);
  // The object does not exist (the guard had nothing to compare): create it in the same op.
  const c = await pool.writeOp(oid, [{ kind: 'create', exclusive: true }, ...steps]);
  return c.rc === -E.EEXIST ? 'changed' : outcome(c, `acquire ${oid}`);
}

/**
 * Renews the lock this client holds with `hold.cookie` and rewrites its record, if the record is
 * still `raw`: LOCK_FLAG_MUST_RENEW, so `changed` also when the lock is no longer ours (its lease
 * ran out on the OSD).
 */
export function renew(pool: NativePool, oid: string, raw: string, hold: Hold): Promise<Swap> {
  return swap(pool, oid, 'renew', [guard(raw), lockStep(hold, LOCK_FLAG_MUST_RENEW), setRecord(hold.record)]);
}

/** Breaks `locker`'s cls lock if the record is still `raw`, leaving the record (now stale). */
export function breakLocker(
  pool: NativePool,
  oid: string,
  raw: string | null,
  locker: ClsLocker,
): Promise<Swap> {
  return swap(pool, oid, 'break', [guard(raw), breakStep(locker)]);
}

/**
 * Frees the lock: breaks `locker` (if any) and removes the record and any release request, if the
 * record is still `raw`.
 */
export function remove(
  pool: NativePool,
  oid: string,
  raw: string | null,
  locker: ClsLocker | null,
): Promise<Swap> {
  const steps: NativeStep[] = [guard(raw)];
  if (locker !== null) steps.push(breakStep(locker));
  steps.push({ kind: 'rmxattr', name: RECORD_XATTR }, DROP_REQUEST);
  return swap(pool, oid, 'release', steps);
}

/** Rewrites the record to `rec` if it still is `raw` (the cls lock is left as it is). */
export function rewrite(pool: NativePool, oid: string, raw: string, rec: string): Promise<Swap> {
  return swap(pool, oid, 'rewrite', [guard(raw), setRecord(rec)]);
}

/**
 * Records release request `req` for the holder whose record is `raw`, if it still is: `changed`
 * when the lock changed hands, was renewed or freed meanwhile (or the object is gone).
 */
export function askRelease(
  pool: NativePool,
  oid: string,
  raw: string | null,
  req: ReleaseRequest,
): Promise<Swap> {
  const value = Buffer.from(JSON.stringify({ by: req.by, at: req.at }), 'utf8');
  return swap(pool, oid, 'request release', [guard(raw), { kind: 'setxattr', name: RELEASE_XATTR, value }]);
}

/** Notify payloads on a lock object: who reacts to which (see RadosBlocker.watchRelease). */
export const NOTIFY_RELEASED = Buffer.from('archipelago:released');
export const NOTIFY_RELEASE_REQUEST = Buffer.from('archipelago:release-request');

/** True when a notify's payload is a release request (not a release: those wake waiters). */
export function isReleaseRequest(payload: Buffer | undefined): boolean {
  return payload?.equals(NOTIFY_RELEASE_REQUEST) === true;
}
