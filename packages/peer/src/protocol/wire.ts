/**
 * The blocker protocol over the segment: which op carries which Blocker call, the flags we add,
 * and how errors travel back. Documented in the package README ("Wire protocol").
 */
import { ArchipelagoError, ERROR_CODES, type ErrorCode, Op, opName } from '@archipelago/libxseg';

/**
 * Ops beyond the original's 0..21, for Blocker calls the original had no op for. They start at
 * 64, leaving 22..63 free for ops the original may grow; a peer answers any op it does not know
 * with ENOTSUP.
 */
export const PeerOp = {
  /** writeFull: target = name, data = the whole new content. */
  WRITEFULL: 64,
  /** lockOwner: target = lock name; reply data = owner identity (empty, serviced 0: free). */
  LOCKOWNER: 65,
  /** list: target = prefix, data = cursor (last name of the previous page, empty at first). */
  LIST: 66,
  /** lockInfo: target = lock name; reply JSON LockRecord, or null when free. */
  LOCKINFO: 67,
  /** renew: target = lock name, data = JSON LockArgs (identity, leaseMs, as); reply JSON LockRecord. */
  RENEW: 68,
  /** breakLock: target = lock name, data = JSON LockArgs (identity, waitMs, progress, join); reply JSON BreakReply. */
  BREAK: 69,
  /**
   * requestRelease: target = lock name, data = JSON LockArgs (identity, by); reply JSON
   * LockRecord (the holder asked), or null when the lock is free (nothing asked).
   */
  REQUEST_RELEASE: 70,
  /**
   * addClient (RADOS, `RadosBlocker.addClient`): target = lock name, data = JSON LockArgs
   * (identity, as?, addr); registers client address `addr` as writing for the holder `identity`
   * (process `as`; without it any hold of the identity), so that every break blocklists it too; reply JSON LockRecord. `ENOTSUP` from a
   * backend that fences no clients (files).
   */
  ADD_CLIENT: 71,
  /**
   * removeClient (RADOS, `RadosBlocker.removeClient`): target = lock name, data = JSON LockArgs
   * (identity, as?, addr); takes client address `addr` off the record while `identity` holds the
   * lock (an unmapped endpoint's client); reply JSON LockRecord, or null when there was nothing to
   * take off. `ENOTSUP` from a backend that fences no clients (files).
   */
  REMOVE_CLIENT: 72,
} as const;

/** The blocker ops a blocker peer serves. */
export const BlockerOps = {
  PING: Op.PING,
  READ: Op.READ,
  WRITE: Op.WRITE,
  DELETE: Op.DELETE,
  ACQUIRE: Op.ACQUIRE,
  RELEASE: Op.RELEASE,
  COPY: Op.COPY,
  INFO: Op.INFO,
  HASH: Op.HASH,
  FLUSH: Op.FLUSH,
  ...PeerOp,
} as const;

/**
 * Flags beyond the original's XF_* (which use 0x1..0x10). Bits from 0x100 up are ours.
 * XF.NOSYNC (non-blocking acquire) and XF.FORCE (forced release) keep their original meaning.
 */
export const PeerFlag = {
  /** read/copy: a missing object reads as zeros (copy: dst becomes empty) instead of ENOENT_OBJECT. */
  MISSINGOK: 0x100,
  /** acquire: `offset` carries the wait timeout in ms (otherwise the peer's default applies). */
  TIMEOUT: 0x200,
} as const;

/** Error replies: XS_FAILED and data = this magic, then the error as JSON. */
export const ERROR_MAGIC = Buffer.from('ARCHERR1');

/** The most a list reply carries; the client asks again from the last name. */
export const LIST_PAGE_BYTES = 64 * 1024;

export function encodeError(e: unknown): Buffer {
  let code: ErrorCode = 'EIO';
  let message: string;
  let details: Record<string, unknown> = {};
  if (ArchipelagoError.isInstance(e)) {
    code = e.code;
    message = e.message;
    details = { ...e.details };
  } else if (e instanceof RangeError || e instanceof TypeError) {
    code = 'EINVAL';
    message = e.message;
  } else {
    message = e instanceof Error ? e.message : String(e);
  }
  let json: Buffer;
  try {
    json = toJson({ code, message, details });
  } catch {
    // Details JSON cannot carry (a cycle): keep the plain values, so a flag such as
    // `details.fenced` still crosses.
    const plain = Object.entries(details).filter(([, v]) => v === null || typeof v !== 'object');
    json = toJson({ code, message, details: Object.fromEntries(plain) });
  }
  return Buffer.concat([ERROR_MAGIC, json]);
}

/**
 * The error a failed reply carries, or a generic one when it carries none (a request failed by
 * the segment: the peer died and `recoverport` / the restarted peer failed it back).
 */
export function decodeError(data: Buffer, what: string, peer = 'blocker'): ArchipelagoError {
  if (data.length > ERROR_MAGIC.length && data.subarray(0, ERROR_MAGIC.length).equals(ERROR_MAGIC)) {
    try {
      const o = fromJson<{ code?: unknown; message?: unknown; details?: unknown } | null>(
        data.subarray(ERROR_MAGIC.length),
        what,
      );
      if (typeof o?.code === 'string' && o.code in ERROR_CODES && typeof o.message === 'string') {
        const details =
          o.details && typeof o.details === 'object' ? (o.details as Record<string, unknown>) : {};
        return new ArchipelagoError(o.code as ErrorCode, o.message, { details });
      }
    } catch {
      // fall through to the generic error
    }
  }
  return new ArchipelagoError(
    'EIO',
    `${what}: the request failed without an answer from the ${peer} peer (it died, or its port was recovered)`,
    { details: { failedBySegment: true } },
  );
}

/**
 * True for the failures a retry can cure: the peer died (the request was failed back by the
 * segment, with no answer) or was stopping (ECLOSED with `details.stopping`). A real error from a
 * live peer — including an I/O error of its backend — is never retried.
 */
export function isPeerGone(e: ArchipelagoError): boolean {
  return (
    (e.code === 'EIO' && e.details.failedBySegment === true) ||
    (e.code === 'ECLOSED' && e.details.stopping === true)
  );
}

/** The first `size` bytes of a request's data; EINVAL when `size` claims more than it has. */
export function payloadOf(req: { op: number; size: number; data: Buffer }): Buffer {
  if (req.size > req.data.length)
    throw new ArchipelagoError(
      'EINVAL',
      `${opName(req.op)}: size ${req.size} exceeds the request data (${req.data.length} bytes)`,
    );
  return req.data.subarray(0, req.size);
}

/** JSON with bigints (map epochs) kept exact: `{"$bigint":"123"}`. */
export function toJson(value: unknown): Buffer {
  return Buffer.from(
    JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? { $bigint: v.toString() } : v)),
  );
}

/** Parses what `toJson` wrote; malformed bytes are EINVAL (a client's bytes never crash a peer). */
export function fromJson<T>(data: Buffer, what: string): T {
  try {
    return JSON.parse(data.toString('utf8'), (_k, v: unknown) =>
      v !== null && typeof v === 'object' && typeof (v as { $bigint?: unknown }).$bigint === 'string'
        ? BigInt((v as { $bigint: string }).$bigint)
        : v,
    ) as T;
  } catch (e) {
    throw new ArchipelagoError('EINVAL', `${what}: malformed JSON payload (${(e as Error).message})`);
  }
}

/**
 * Spin budgets for the daemons' ports: none, unless `ARCHIPELAGO_XSEG_SPIN_US` /
 * `ARCHIPELAGO_XSEG_LINGER_US` say otherwise. Measured through NBD (`bench/results/daemons.md`):
 * with five processes and fio on two CPUs the spins steal the CPU the other side needs, and QD1
 * 4 KiB reads fell up to 4x in some runs; the other rows are within noise either way.
 */
export function daemonSpin(): { spinUs?: number; lingerUs?: number } {
  const unset = (n: string) => process.env[n] === undefined || process.env[n] === '';
  return {
    ...(unset('ARCHIPELAGO_XSEG_SPIN_US') ? { spinUs: 0 } : {}),
    ...(unset('ARCHIPELAGO_XSEG_LINGER_US') ? { lingerUs: 0 } : {}),
  };
}
