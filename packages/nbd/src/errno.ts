import { ArchipelagoError } from '@archipelago/libxseg';
import { NBD_EINVAL, NBD_EIO, NBD_ENOSPC, NBD_ENOTSUP, NBD_EPERM } from './constants.js';

/** An error the server answers with a specific NBD errno and message. */
export class NbdRequestError extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Maps an error thrown by an export to an NBD errno:
 * ENOSPC → ENOSPC, EREADONLY → EPERM, ERANGE → EINVAL, ENOTSUP → ENOTSUP (only when the
 * request carried FAST_ZERO, the one case the spec allows it), anything else → EIO.
 * Plain Node.js system errors ENOSPC/EDQUOT/EFBIG map to ENOSPC, EROFS/EPERM/EACCES to EPERM.
 */
export function errnoFor(e: unknown, fastZero = false): number {
  if (e instanceof NbdRequestError) return e.errno;
  if (ArchipelagoError.isInstance(e)) {
    switch (e.code) {
      case 'ENOSPC':
        return NBD_ENOSPC;
      case 'EREADONLY':
        return NBD_EPERM;
      case 'ERANGE':
        return NBD_EINVAL;
      case 'ENOTSUP':
        return fastZero ? NBD_ENOTSUP : NBD_EIO;
      default:
        return NBD_EIO;
    }
  }
  const sys = (e as NodeJS.ErrnoException | undefined)?.code;
  if (sys === 'ENOSPC' || sys === 'EDQUOT' || sys === 'EFBIG') return NBD_ENOSPC;
  if (sys === 'EROFS' || sys === 'EPERM' || sys === 'EACCES') return NBD_EPERM;
  return NBD_EIO;
}

export function messageOf(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}
