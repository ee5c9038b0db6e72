/** librados errors (negative errnos from the binding) mapped to stable ArchipelagoError codes. */
import { constants } from 'node:os';
import { ArchipelagoError, type ErrorCode } from '@archipelago/libxseg';
import type { NativeError } from './native.js';

const E = constants.errno;
/** librados' -EBLOCKLISTED: ESHUTDOWN on Linux (Node's errno constants lack it). */
export const EBLOCKLISTED = 108;

/** The positive errno carried by a binding error, or undefined. */
export function errnoOf(e: unknown): number | undefined {
  const n = (e as NativeError | undefined)?.errno;
  return typeof n === 'number' ? n : undefined;
}

/**
 * ENOENT → ENOENT_OBJECT, ETIMEDOUT → ETIMEDOUT, EPERM/EACCES (cephx caps) → EINVAL_CONFIG,
 * ENOSPC/EDQUOT/EFBIG → ENOSPC, EBLOCKLISTED (ESHUTDOWN: this client was fenced) → EIO with
 * `details.fenced`, anything else EIO. `details.client` / `details.addr` name this client in the
 * fenced message. (Lock conflicts are mapped by the lock code itself: it needs the owner.)
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
  let fenced = false;
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
  } else if (errno === EBLOCKLISTED) {
    // -EBLOCKLISTED: the OSDs refuse every op of this client since another one fenced it.
    const who = typeof details.client === 'string' ? ` (${details.client} at ${String(details.addr)})` : '';
    text = `${what}: this client${who} was fenced: the Ceph cluster blocklisted it because another holder broke or took over its lock (by whom: see the lock's holder, \`rados lock info <volume>_lock RadosLock\`, and \`ceph osd blocklist ls\`); it must not write any more: restart it to reconnect as a new client`;
    fenced = true;
  } else if (errno === E.ENOSPC || errno === E.EDQUOT || errno === E.EFBIG) {
    code = 'ENOSPC';
    text = `${what}: the Ceph pool is full (${msg})`;
  }
  return new ArchipelagoError(code, text, {
    cause: e,
    details: { ...details, errno, ...(fenced ? { fenced: true } : {}) },
  });
}
