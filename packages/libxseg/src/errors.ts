/**
 * Errors shared by every Archipelago package.
 *
 * Policy (borrowed from abstract-level): `code` is a stable string that callers and scripts may
 * match on; it never changes meaning and a retired code is never reused. Messages may change.
 * Programming mistakes (wrong argument types) are plain TypeErrors without a code.
 */

const MARKER = Symbol.for('archipelago.error');

/** Every stable error code, with the one-line meaning shown in docs/errors.md. */
export const ERROR_CODES = {
  EINVAL: 'an argument is out of range or malformed',
  EINVAL_NAME: 'a volume or object name breaks the naming rules',
  EINVAL_SIZE: 'a size is missing, zero, too large or malformed',
  EINVAL_CONFIG: 'the configuration file has a bad or missing key',
  ERANGE: 'an I/O reaches past the end of the volume',
  ENOENT_VOLUME: 'no such volume',
  ENOENT_OBJECT: 'no such object in the blocker',
  EEXIST_VOLUME: 'a volume with that name already exists',
  ELOCKED: 'the volume lock is held by another owner',
  ENOTLOCKED: 'the lock is not held by this owner',
  EREADONLY: 'the map is read-only (a snapshot); writes and map changes are refused',
  ENOTSNAPSHOT: 'a clone source must be a snapshot (a read-only map)',
  ECORRUPT_MAP: 'a map is malformed; the fault is named in the message',
  EBUSY: 'the volume is in use (mapped or frozen)',
  EIO: 'the storage backend failed',
  ENOSPC: 'the storage backend is full',
  ETIMEDOUT: 'an operation did not complete within its timeout',
  ECLOSED: 'the component was closed',
  ENOTSUP: 'the operation is not supported by this component',
  EOVERFLOW: 'an epoch or counter reached its limit',
  INTERNAL:
    'an unexpected failure (a bug): run the command again with ARCHIPELAGO_DEBUG=1 and report the stack it prints',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ArchipelagoErrorOptions {
  cause?: unknown;
  /** Extra structured facts (volume, owner, offset...) that JSON output carries. */
  details?: Record<string, unknown>;
}

export class ArchipelagoError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: ArchipelagoErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
    Object.defineProperty(this, MARKER, { value: true });
  }

  /** True for errors from any copy of this package (no reliance on `instanceof`). */
  static isInstance(e: unknown): e is ArchipelagoError {
    return typeof e === 'object' && e !== null && (e as Record<symbol, unknown>)[MARKER] === true;
  }

  /** True when `e` is an Archipelago error with the given code. */
  static is(e: unknown, code: ErrorCode): e is ArchipelagoError {
    return ArchipelagoError.isInstance(e) && e.code === code;
  }

  toJSON(): { code: ErrorCode; message: string; details: Record<string, unknown> } {
    return { code: this.code, message: this.message, details: this.details };
  }
}
Object.defineProperty(ArchipelagoError.prototype, 'name', { value: 'ArchipelagoError', enumerable: false });

/** Shorthand constructor used across packages. */
export function archipError(code: ErrorCode, message: string, options?: ArchipelagoErrorOptions) {
  return new ArchipelagoError(code, message, options);
}

/**
 * Turns a Node.js system error (ENOSPC, EIO, ...) from a storage call into an ArchipelagoError,
 * keeping the original as `cause`. Archipelago errors pass through unchanged.
 */
export function fromSystemError(e: unknown, what: string): ArchipelagoError {
  if (ArchipelagoError.isInstance(e)) return e;
  const sys = (e as NodeJS.ErrnoException | undefined)?.code;
  if (sys === 'ENOSPC' || sys === 'EDQUOT' || sys === 'EFBIG') {
    return new ArchipelagoError('ENOSPC', `${what}: no space left on the storage device`, { cause: e });
  }
  const msg = e instanceof Error ? e.message : String(e);
  return new ArchipelagoError('EIO', `${what}: ${msg}`, { cause: e });
}

/** What a tool prints for an error: its stable code, a one-line message and structured details. */
export interface ErrorReport {
  code: ErrorCode;
  message: string;
  details: Record<string, unknown>;
}

/** The message on one line: ANSI colours stripped, lines trimmed and joined. */
function oneLine(s: string): string {
  return s
    .replace(/\u001b\[[0-9;]*m/g, '')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .join(' ');
}

/**
 * Code, one-line message and details of any error: an ArchipelagoError as it is, a Node.js
 * system error (one with a `syscall`) as `fromSystemError` classifies it (ENOSPC, else EIO) with
 * its errno and path in the details, anything else as INTERNAL (a bug). Every tool (`vlmc`,
 * `archipelago`, `xseg`, the endpoint process) reports failures through this one function, so
 * the same failure reads the same everywhere.
 */
export function describeError(err: unknown): ErrorReport {
  if (ArchipelagoError.isInstance(err)) {
    return { code: err.code, message: oneLine(err.message), details: { ...err.details } };
  }
  const errno = err as NodeJS.ErrnoException | undefined;
  if (errno && typeof errno === 'object' && typeof errno.syscall === 'string') {
    const e = fromSystemError(err, errno.syscall);
    return {
      code: e.code,
      message: oneLine(errno.message),
      details: { errno: errno.code, path: errno.path },
    };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { code: 'INTERNAL', message: oneLine(message) || 'unexpected failure', details: {} };
}
