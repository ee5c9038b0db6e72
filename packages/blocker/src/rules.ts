/**
 * The contract's argument rules and its errors, in one place: every blocker (through
 * AbstractBlocker) refuses the same misuse with the same code and message, and reports the same
 * lock conflicts the same way. The conformance suite checks each rule against every blocker.
 *
 * As everywhere in Archipelago (docs/errors.md): a value out of range or malformed is an
 * ArchipelagoError with a code (EINVAL, EINVAL_NAME), a value of the wrong type (data that is no
 * Uint8Array) is a programming mistake, a plain TypeError. A name of the wrong type is still
 * EINVAL_NAME: whatever reaches a store as a name is refused the same way.
 */
import { constants as bufferConstants } from 'node:buffer';
import { ArchipelagoError } from '@archipelago/libxseg';

/** Longest object name, in bytes (names are ASCII). Lock names obey the same rule. */
export const MAX_NAME_LENGTH = 123;

/**
 * Object names: 1..123 characters from [A-Za-z0-9._-], and never `.` or `..`. With no `/` and no
 * NUL, and the two directory names excluded, no name can leave a store's directory.
 */
const NAME_RE = /^[A-Za-z0-9._-]{1,123}$/;

/** The longest read (or hash) a blocker serves at once: one Buffer, one pread(2). */
export const MAX_READ: number = Math.min(bufferConstants.MAX_LENGTH, 2 ** 31 - 1);

/** What a name is, in messages: "object name", "lock name", "source object name", ... */
export type NameRole = 'object name' | 'lock name' | 'source object name' | 'destination object name';

/** True when `name` is a valid object (or lock) name. */
export function isValidObjectName(name: unknown): name is string {
  return typeof name === 'string' && NAME_RE.test(name) && name !== '.' && name !== '..';
}

// Each rule is an `xxxError` function that returns the error (or null): the hot path rejects with
// it without a throw. `checkName`, `checkData` and `checkPrefix` throw it.

/** EINVAL_NAME unless `name` is a valid object name. */
export function nameError(name: unknown, role: NameRole = 'object name'): ArchipelagoError | null {
  if (isValidObjectName(name)) return null;
  const shown =
    typeof name === 'string'
      ? JSON.stringify(name.length > 140 ? `${name.slice(0, 140)}…` : name)
      : typeof name;
  return new ArchipelagoError(
    'EINVAL_NAME',
    `invalid ${role} ${shown}: use 1..${MAX_NAME_LENGTH} characters from [A-Za-z0-9._-], not "." or ".."`,
    { details: { name } },
  );
}

/** EINVAL unless `n` is an integer from 0 to 2^53 - 1 (an offset, a length, a size). */
export function countError(n: unknown, what: string): ArchipelagoError | null {
  if (typeof n === 'number' && Number.isSafeInteger(n) && n >= 0) return null;
  return new ArchipelagoError('EINVAL', `${what} must be an integer >= 0, got ${String(n)}`);
}

/** EINVAL unless `n` is a count that fits one buffer (a read length, a hash size). */
export function lengthError(n: unknown, what = 'length'): ArchipelagoError | null {
  const e = countError(n, what);
  if (e !== null || (n as number) <= MAX_READ) return e;
  return new ArchipelagoError(
    'EINVAL',
    `${what} ${String(n)} is larger than a single buffer can hold (${MAX_READ})`,
  );
}

/**
 * A TypeError unless `data` is bytes (a Uint8Array, a Buffer or a view into one). A wrong type is
 * a programming mistake: a plain TypeError without a code (docs/errors.md).
 */
export function dataError(data: unknown): TypeError | null {
  return data instanceof Uint8Array
    ? null
    : new TypeError(`data must be a Uint8Array or Buffer, got ${describe(data)}`);
}

/** A TypeError unless `target` is a Buffer (readInto's destination). */
export function targetError(target: unknown): TypeError | null {
  return Buffer.isBuffer(target) ? null : new TypeError(`target must be a Buffer, got ${describe(target)}`);
}

/** A TypeError unless `prefix` is a string (list's prefix). */
export function prefixError(prefix: unknown): TypeError | null {
  return typeof prefix === 'string'
    ? null
    : new TypeError(`list prefix must be a string, got ${describe(prefix)}`);
}

/** EINVAL unless `ms` is a wait time (acquire's timeoutMs): a finite number >= 0. */
export function timeoutError(ms: unknown, lock: string): ArchipelagoError | null {
  if (typeof ms === 'number' && Number.isFinite(ms) && ms >= 0) return null;
  return new ArchipelagoError(
    'EINVAL',
    `acquire ${lock}: timeoutMs must be a number >= 0, got ${String(ms)}`,
  );
}

/** Throws EINVAL_NAME unless `name` is a valid object name. */
export function checkName(name: unknown, role: NameRole = 'object name'): asserts name is string {
  throwIf(nameError(name, role));
}

/** Throws a TypeError unless `data` is a Uint8Array. */
export function checkData(data: unknown): asserts data is Uint8Array {
  throwIf(dataError(data));
}

/** Throws a TypeError unless `prefix` is a string (list's prefix). */
export function checkPrefix(prefix: unknown): asserts prefix is string {
  throwIf(prefixError(prefix));
}

function throwIf(e: Error | null): void {
  if (e !== null) throw e;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'an object';
  return typeof v;
}

// ------------------------------------------------------------------ errors

/** ECLOSED: a call after close(). */
export function closedError(): ArchipelagoError {
  return new ArchipelagoError('ECLOSED', 'the blocker is closed; open a new one');
}

/** ELOCKED: an acquire found the lock held by `owner`. */
export function lockedError(lock: string, owner: string): ArchipelagoError {
  return new ArchipelagoError(
    'ELOCKED',
    `lock ${lock} is held by ${owner}; wait for it, or break it with a forced release if that owner is gone`,
    { details: { lock, owner } },
  );
}

/** ELOCKED: a release (not forced) of a lock `owner` holds, by `identity`. */
export function notOwnerError(lock: string, owner: string, identity: string): ArchipelagoError {
  return new ArchipelagoError(
    'ELOCKED',
    `lock ${lock} is held by ${owner}, not by ${identity}; only its owner may release it (or use force)`,
    { details: { lock, owner } },
  );
}

/** ENOTLOCKED: a release of a lock nobody holds. */
export function notLockedError(lock: string): ArchipelagoError {
  return new ArchipelagoError('ENOTLOCKED', `lock ${lock} is not held`, { details: { lock } });
}

/** ETIMEDOUT: a waiting acquire gave up after `timeoutMs`. */
export function lockTimeoutError(lock: string, owner: string, timeoutMs: number): ArchipelagoError {
  return new ArchipelagoError(
    'ETIMEDOUT',
    `lock ${lock} is still held by ${owner} after ${timeoutMs} ms; retry later, or break it if that owner is gone`,
    { details: { lock, owner, timeoutMs } },
  );
}

/** ELOCKED: a renewal found the lock held by someone else: it was lost (broken or taken over). */
export function lockLostError(lock: string, holder: string): ArchipelagoError {
  return new ArchipelagoError(
    'ELOCKED',
    `lock ${lock} was lost: it is held by ${holder} now; stop writing under it`,
    { details: { lock, lost: true, holder } },
  );
}

/** EBUSY: a break of a lock a live process of this host holds. */
export function holderAliveError(lock: string, holder: string): ArchipelagoError {
  return new ArchipelagoError(
    'EBUSY',
    `lock ${lock} is held by ${holder}, a live process of this host; stop it (vlmc unmap, vlmc close) instead of breaking its lock`,
    { details: { lock, holder } },
  );
}

/** ETIMEDOUT: a break that could not fence a holder that keeps renewing its lease. */
export function cannotFenceError(lock: string, holder: string, why: string): ArchipelagoError {
  return new ArchipelagoError('ETIMEDOUT', `cannot break lock ${lock} of ${holder}: ${why}`, {
    details: { lock, holder },
  });
}

/** ENOENT_OBJECT: a read (or copy source) of an object that does not exist. */
export function missingObjectError(name: string, cause?: unknown): ArchipelagoError {
  return new ArchipelagoError('ENOENT_OBJECT', `object ${name} does not exist`, {
    ...(cause !== undefined ? { cause } : {}),
    details: { name },
  });
}

/** ENOENT_OBJECT: a copy whose source does not exist. */
export function missingSourceError(src: string, cause?: unknown): ArchipelagoError {
  return new ArchipelagoError('ENOENT_OBJECT', `cannot copy ${src}: the object does not exist`, {
    ...(cause !== undefined ? { cause } : {}),
    details: { name: src },
  });
}
