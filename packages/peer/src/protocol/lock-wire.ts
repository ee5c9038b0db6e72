/**
 * The lock calls over the segment (README, "Wire protocol"): what ACQUIRE, RENEW, BREAK and
 * REQUEST_RELEASE carry
 * (JSON `LockArgs`: the client's identity and the process the lock is held for, never the
 * blocker peer's own), and what BREAK answers. Results are JSON (wire.ts `toJson`): an
 * AcquireResult, a LockRecord (RENEW's carries `releaseRequested` when another owner asked for
 * the lock), a BreakReply, the asked holder's LockRecord or null.
 */
import type { BreakReport, LockProcess } from '@archipelago/blocker';
import { ArchipelagoError } from '@archipelago/libxseg';
import { fromJson, toJson } from './wire.js';

/** The longest identity a lock request may carry (the contract's limit). */
export const MAX_IDENTITY_BYTES = 128;

/** The arguments of a lock call (request data, JSON). */
export interface LockArgs {
  /** The client's identity: the lock's owner. */
  identity: string;
  /** ACQUIRE: who holds the lock (default `process`). */
  hold?: 'process' | 'host';
  /** ACQUIRE, RENEW: the lease, ms (default: the peer blocker's). */
  leaseMs?: number;
  /** ACQUIRE (a process hold), RENEW: the client's process, which the lock records. Required there. */
  as?: LockProcess;
  /** BREAK: the longest wait for a holder's lease to run out, ms. */
  waitMs?: number;
  /** BREAK: answer `{ waiting }` as soon as the break starts waiting (then send `join`). */
  progress?: boolean;
  /** BREAK: collect the report of the break this identity already started on the lock. */
  join?: boolean;
  /** REQUEST_RELEASE: who asks (default `identity`). */
  by?: string;
  /** ADD_CLIENT: the client address that writes for the holder. */
  addr?: string;
}

/** What BREAK answers: the report, or (with `progress`) that the break waits `ms` for `what`. */
export type BreakReply = { report: BreakReport } | { waiting: { what: string; ms: number } };

export function encodeLockArgs(a: LockArgs): Buffer {
  return toJson(a);
}

/**
 * The arguments of a lock request. Data that does not start with `{` is the bare identity older
 * clients sent: they named no process, so what they acquire is a host hold. Malformed data is
 * EINVAL.
 */
export function decodeLockArgs(data: Buffer, what: string): LockArgs {
  if (data[0] !== 0x7b) return { identity: checkIdentity(data.toString('utf8'), what), hold: 'host' };
  const o = fromJson<Record<string, unknown>>(data, what); // `{` and valid: an object
  const a: LockArgs = { identity: checkIdentity(o.identity, what) };
  if (o.hold !== undefined) {
    if (o.hold !== 'process' && o.hold !== 'host') throw bad(what, '"hold" must be "process" or "host"');
    a.hold = o.hold;
  }
  if (o.leaseMs !== undefined) a.leaseMs = count(o.leaseMs, 'leaseMs', what);
  if (o.waitMs !== undefined) a.waitMs = count(o.waitMs, 'waitMs', what);
  if (o.as !== undefined) a.as = lockProcess(o.as, what);
  if (o.progress === true) a.progress = true;
  if (o.join === true) a.join = true;
  if (o.by !== undefined) {
    if (typeof o.by !== 'string' || o.by === '' || Buffer.byteLength(o.by) > MAX_IDENTITY_BYTES)
      throw bad(what, `"by" must be a non-empty string of at most ${MAX_IDENTITY_BYTES} bytes`);
    a.by = o.by;
  }
  if (o.addr !== undefined) {
    if (typeof o.addr !== 'string' || o.addr === '' || o.addr.length > 256 || /\s/.test(o.addr))
      throw bad(what, '"addr" must be a client address (1..256 characters, no spaces)');
    a.addr = o.addr;
  }
  return a;
}

/** The client's process a call must name (ACQUIRE of a process hold, RENEW): EINVAL without it. */
export function holderOf(a: LockArgs, what: string): LockProcess {
  if (a.as === undefined)
    throw bad(what, 'name the process that holds the lock ("as"): a lock is never held for the blocker peer');
  return a.as;
}

function checkIdentity(v: unknown, what: string): string {
  if (typeof v !== 'string' || Buffer.byteLength(v) > MAX_IDENTITY_BYTES)
    throw bad(what, `the lock identity must be a string of at most ${MAX_IDENTITY_BYTES} bytes`);
  return v;
}

function count(v: unknown, key: string, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    throw bad(what, `"${key}" must be an integer >= 0`);
  return v;
}

function lockProcess(v: unknown, what: string): LockProcess {
  const p = v as Partial<LockProcess> | null;
  const text = (s: unknown) => typeof s === 'string' && s.length > 0 && s.length <= 256;
  if (
    p === null ||
    typeof p !== 'object' ||
    !text(p.host) ||
    !text(p.boot) ||
    !text(p.start) ||
    typeof p.pid !== 'number' ||
    !Number.isSafeInteger(p.pid) ||
    p.pid <= 0
  )
    throw bad(what, '"as" must be a process {host, boot, pid, start}');
  return { host: p.host as string, boot: p.boot as string, pid: p.pid, start: p.start as string };
}

function bad(what: string, why: string): ArchipelagoError {
  return new ArchipelagoError('EINVAL', `${what}: ${why}`);
}
