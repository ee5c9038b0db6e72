/**
 * The few Linux calls Node has no API for, from a small native addon:
 *
 * - `preadNowait`: one `preadv2(..., RWF_NOWAIT)` on the calling thread. When the bytes are in
 *   the page cache it copies them at once (no libuv thread-pool hop: no post to a worker, no
 *   wake-up of the loop); when any of them would need disk I/O it returns `-EAGAIN` without
 *   blocking, and the caller falls back to `fs.read`.
 * - `setSendBuffer`: `setsockopt(SO_SNDBUF)` on a socket fd.
 * - `largeBuffer`: a Buffer over its own mapping, 2 MiB-aligned and advised MADV_HUGEPAGE. Data
 *   paths allocate a few such buffers and reuse them; on a VM the first touch of every fresh 4 KiB
 *   page can cost tens of microseconds (a 32 MiB buffer: ~130 ms measured here, ~5–15 ms with huge
 *   pages), and a page-aligned buffer can go to O_DIRECT as is, without a bounce copy.
 * - `addressAlignment`: the alignment of a buffer's address (0 when unknown), for that check.
 * - `sendNowait`: one non-blocking `sendmsg(2)` of several buffers on a socket fd, on the calling
 *   thread: a reply leaves without a libuv write request (whose completion costs an extra
 *   event-loop turn and a callback into JavaScript per write).
 * - `recvNowait`: one non-blocking `recv(2)` into the caller's buffer: a stream parser that knows
 *   where the next bytes go (a WRITE payload) takes them straight from the socket instead of
 *   through a fresh 64 KiB chunk per read and a copy.
 * - `flock`: `flock(2)` with LOCK_NB, on the calling thread (it never waits: a caller that wants
 *   to wait polls). The one call here without a fallback: without the addon it throws ENOTSUP.
 *
 * The first four are optional fast paths: when the addon is not built (not Linux, no compiler at
 * install time) or the kernel lacks RWF_NOWAIT (< 4.14: EOPNOTSUPP), `available` /
 * `sendBufferAvailable` are false and the calls answer "not done" (`-EAGAIN`, `undefined`), so
 * callers never need a second code path for them. `ARCHIP_FASTIO=0` in the environment switches
 * those fast paths off (for A/B measurements); `flock` still works then.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';

interface Native {
  preadNowait(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number;
  setSendBuffer(fd: number, bytes: number): number;
  /** Absent from an addon built before VERSION 2. */
  largeBuffer?: (bytes: number) => Buffer | number;
  addressAlignment?: (buf: Uint8Array) => number;
  /** Absent from an addon built before VERSION 3. */
  flock?: (fd: number, op: number) => number;
  /** Absent from an addon built before VERSION 4. */
  sendNowait?: (fd: number, buffers: readonly Uint8Array[]) => number;
  recvNowait?: (fd: number, buf: Uint8Array, offset: number, length: number) => number;
  LOCK_SH?: number;
  LOCK_EX?: number;
  LOCK_UN?: number;
  VERSION: number;
}

const E = constants.errno;
/** The value `preadNowait` returns when the data is not (all) in the page cache. */
export const EAGAIN = -E.EAGAIN;

function load(): Native | null {
  if (process.platform !== 'linux') return null;
  // build/Release while developing (node-gyp output), dist/ once built (what turbo caches).
  for (const rel of ['../build/Release/fastio.node', './fastio.node', '../dist/fastio.node']) {
    const p = fileURLToPath(new URL(rel, import.meta.url));
    if (!existsSync(p)) continue;
    try {
      return createRequire(import.meta.url)(p) as Native;
    } catch {
      // Built for another Node ABI or a broken file: the plain paths still work.
    }
  }
  return null;
}

const addon = load();
/** The addon for the optional fast paths: not with ARCHIP_FASTIO=0 (A/B runs). */
const native = process.env.ARCHIP_FASTIO === '0' ? null : addon;
let nowait = native !== null;

/** Whether `preadNowait` can read synchronously (addon loaded, RWF_NOWAIT not refused so far). */
export function available(): boolean {
  return nowait;
}

/** Whether `setSendBuffer` can work (the addon is loaded). */
export const sendBufferAvailable = native !== null;

/** Errnos meaning "this kernel or file system does not do RWF_NOWAIT": switch the fast path off. */
const UNSUPPORTED = new Set([E.EOPNOTSUPP, E.ENOTSUP, E.ENOSYS].filter((n) => n !== undefined));

/** errno → name; the first name wins for aliases (EAGAIN over EWOULDBLOCK, as libuv names them). */
const names = new Map<number, string>();
for (const [k, v] of Object.entries(E)) if (!names.has(v)) names.set(v, k);

function errnoError(errno: number, syscall: string): NodeJS.ErrnoException {
  const code = names.get(errno) ?? `E${errno}`;
  const e: NodeJS.ErrnoException = new Error(`${code}: ${syscall} failed (errno ${errno})`);
  e.errno = -errno;
  e.code = code;
  e.syscall = syscall;
  return e;
}

/**
 * Reads up to `length` bytes at `position` of `fd` into `buf[offset..]` from the page cache,
 * synchronously. Returns the byte count (0 at end of file; a short count means the rest is not
 * cached or past the end), or `EAGAIN` when nothing could be read without waiting for the disk,
 * the addon is absent or RWF_NOWAIT is unsupported. Throws the system error for anything else
 * (EBADF, EISDIR, EIO...), and a TypeError/RangeError for arguments outside `buf`.
 */
export function preadNowait(
  fd: number,
  buf: Uint8Array,
  offset: number,
  length: number,
  position: number,
): number {
  if (!nowait || native === null) return EAGAIN;
  const n = native.preadNowait(fd, buf, offset, length, position);
  if (n >= 0 || n === EAGAIN) return n;
  if (UNSUPPORTED.has(-n)) {
    nowait = false;
    return EAGAIN;
  }
  throw errnoError(-n, 'preadv2');
}

/**
 * Sets SO_SNDBUF on socket `fd` (the kernel caps it at net.core.wmem_max and doubles it for its
 * bookkeeping). Returns the effective size, or `undefined` without the addon. Throws the system
 * error (EBADF, ENOTSOCK...).
 */
export function setSendBuffer(fd: number, bytes: number): number | undefined {
  if (native === null) return undefined;
  const n = native.setSendBuffer(fd, bytes);
  if (n < 0) throw errnoError(-n, 'setsockopt');
  return n;
}

/** For tests: force the RWF_NOWAIT fast path off (false) or back on when the addon is loaded. */
export function setNowaitForTests(on: boolean): void {
  nowait = on && native !== null;
}

/**
 * A Buffer of `bytes` (uninitialised) for a long-lived data-path buffer: from the addon, its own
 * 2 MiB-aligned mapping advised to use huge pages (unmapped when the Buffer is garbage-collected);
 * without the addon, or when the mapping fails, `Buffer.allocUnsafeSlow`. Allocate once and reuse:
 * each call is an mmap.
 */
export function largeBuffer(bytes: number): Buffer {
  if (!Number.isSafeInteger(bytes) || bytes < 1 || bytes > 2 ** 30)
    throw new RangeError(`largeBuffer: bytes must be an integer in 1..2^30, got ${bytes}`);
  const made = native?.largeBuffer?.(bytes);
  return typeof made === 'object' ? made : Buffer.allocUnsafeSlow(bytes);
}

/**
 * The largest power of two (up to 1 MiB) dividing the address of `buf`'s first byte, or 0 when
 * it cannot be known (no addon, or a detached buffer). O_DIRECT needs 512 or 4096.
 */
export function addressAlignment(buf: Uint8Array): number {
  return native?.addressAlignment?.(buf) ?? 0;
}

/** Whether `sendNowait` can send (the addon is loaded; not with ARCHIP_FASTIO=0). */
export const sendNowaitAvailable = typeof native?.sendNowait === 'function';

/** Most buffers one `sendNowait` call takes. */
export const SEND_MAX_BUFFERS = 64;

/**
 * One `sendmsg(2)` of `buffers` (at most `SEND_MAX_BUFFERS`, in order) on socket `fd` with
 * MSG_DONTWAIT | MSG_NOSIGNAL, on the calling thread. Returns the bytes the socket took (a short
 * count when its buffer filled up), or a negative errno: `EAGAIN` when it took nothing or the
 * addon is absent, `-EPIPE`, `-ECONNRESET`, `-EBADF`... It never throws a system error and never
 * blocks: a caller sends what is left, or everything after an error, through its usual path
 * (`socket.write`), which reports the error its own way. TypeError/RangeError for bad arguments.
 * Only for a socket whose stream has nothing queued, or bytes would leave out of order.
 */
export function sendNowait(fd: number, buffers: readonly Uint8Array[]): number {
  const call = native?.sendNowait;
  if (call === undefined) return EAGAIN;
  return call(fd, buffers);
}

/** Whether `recvNowait` can receive (the addon is loaded; not with ARCHIP_FASTIO=0). */
export const recvNowaitAvailable = typeof native?.recvNowait === 'function';

/**
 * One `recv(2)` with MSG_DONTWAIT into `buf[offset, offset+length)` of socket `fd`, on the calling
 * thread. Returns the bytes received (> 0), 0 at the end of the stream (or for `length` 0), or a
 * negative errno: `EAGAIN` when nothing is there or the addon is absent, `-ECONNRESET`... It never
 * throws a system error and never blocks; a caller leaves the end of the stream and errors to its
 * usual reader (the socket's stream), which reports them its own way. TypeError/RangeError for
 * arguments outside `buf`. Only between the stream's reads (inside its 'data' handler, or with
 * nothing else reading), or bytes would be taken out of order.
 */
export function recvNowait(fd: number, buf: Uint8Array, offset: number, length: number): number {
  const call = native?.recvNowait;
  if (call === undefined) return EAGAIN;
  return call(fd, buf, offset, length);
}

const FLOCK_OPS = { ex: 'LOCK_EX', sh: 'LOCK_SH', un: 'LOCK_UN' } as const;
export type FlockOp = keyof typeof FLOCK_OPS;

/** Whether `flock` works: the addon is loaded (whatever ARCHIP_FASTIO says). */
export const flockAvailable = typeof addon?.flock === 'function';

/**
 * `flock(fd, LOCK_EX | LOCK_NB)` (`'ex'`), `LOCK_SH` (`'sh'`) or `LOCK_UN` (`'un'`), on the
 * calling thread and never waiting. Returns true when done, false when another open file
 * description holds a conflicting lock (EWOULDBLOCK) — another process, or another `open()` of
 * the same file in this one: flock locks belong to the open file description, not the process.
 * The kernel drops the lock when the last fd of that description is closed, the process's
 * death included. To wait, poll. Throws the system error (EBADF...), a RangeError for a bad
 * `op`, and an `ENOTSUP` error without the addon (there is no fallback for a lock).
 */
export function flock(fd: number, op: FlockOp): boolean {
  const call = addon?.flock;
  if (addon === null || call === undefined) {
    const e: NodeJS.ErrnoException = new Error(
      'ENOTSUP: flock needs the @archipelago/fastio native addon, which is not built: rebuild it (pnpm run build)',
    );
    e.code = 'ENOTSUP';
    e.errno = -E.ENOTSUP;
    throw e;
  }
  const code = Object.hasOwn(FLOCK_OPS, op) ? addon[FLOCK_OPS[op]] : undefined;
  if (code === undefined) throw new RangeError(`flock: op must be 'ex', 'sh' or 'un', got ${String(op)}`);
  const n = call(fd, code);
  if (n === 0) return true;
  if (n === -E.EWOULDBLOCK || n === -E.EAGAIN) return false;
  throw errnoError(-n, 'flock');
}
