/** librados errors (negative errnos from the binding) mapped to stable ArchipelagoError codes. */
import { constants } from 'node:os';
import { ArchipelagoError, type ErrorCode } from '@archipelago/libxseg';
import type { NativeError } from './native.js';

const E = constants.errno;

/** The positive errno carried by a binding error, or undefined. */
export function errnoOf(e: unknown): number | undefined {
  const n = (e as NativeError | undefined)?.errno;
  return typeof n === 'number' ? n : undefined;
}

/**
 * ENOENT → ENOENT_OBJECT, ETIMEDOUT → ETIMEDOUT, EPERM/EACCES (cephx caps) → EINVAL_CONFIG,
 * ENOSPC/EDQUOT/EFBIG → ENOSPC, anything else EIO.
 * (Lock conflicts are mapped by the lock code itself: it needs the owner from list_lockers.)
 */
export function fromRadosError(
  e: unknown,
  what: string,
  details: Record<string, unknown> = {},
): ArchipelagoError {
  if (ArchipelagoError.isInstance(e)) return e;
  const errno = errnoOf(e);
  const msg = e instanceof Error ? e.message : String(e);
  let code: ErrorCode = 'EIO';
  let text = `${what}: RADOS error: ${msg}`;
  if (errno === E.ENOENT) {
    code = 'ENOENT_OBJECT';
    text = `${what}: the object does not exist`;
  } else if (errno === E.ETIMEDOUT) {
    code = 'ETIMEDOUT';
    text = `${what}: the Ceph cluster did not answer in time (${msg}); check that the monitors and OSDs are up`;
  } else if (errno === E.EPERM || errno === E.EACCES) {
    // cephx: the client authenticated but its caps do not cover this pool (or this call).
    code = 'EINVAL_CONFIG';
    text = `${what}: the Ceph cluster denied it (${msg}): the cephx client lacks OSD caps for this pool; check cephx_id, the keyring and the client's caps (e.g. osd 'allow rwx pool=<pool>')`;
  } else if (errno === E.ENOSPC || errno === E.EDQUOT || errno === E.EFBIG) {
    code = 'ENOSPC';
    text = `${what}: the Ceph pool is full (${msg})`;
  }
  return new ArchipelagoError(code, text, { cause: e, details: { ...details, errno } });
}
