/**
 * Thin promise wrappers over the callback fs API with numeric fds: one libuv request per call, no
 * FileHandle objects, and results as plain numbers (no `{ bytesRead, buffer }` allocations).
 */
import * as fs from 'node:fs';
import { EAGAIN, preadNowait } from '@archipelago/fastio';

export function open(path: string, flags: number, mode = 0o666): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.open(path, flags, mode, (err, fd) => (err ? reject(err) : resolve(fd)));
  });
}

export function close(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.close(fd, (err) => (err ? reject(err) : resolve()));
  });
}

/** One pread(2): reads up to `length` bytes into `buf` at `bufOffset`; resolves the byte count. */
export function pread(fd: number, buf: Uint8Array, bufOffset: number, length: number, position: number) {
  return new Promise<number>((resolve, reject) => {
    fs.read(fd, buf, bufOffset, length, position, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

/** One pwrite(2); resolves the byte count. */
export function pwrite(fd: number, buf: Uint8Array, bufOffset: number, length: number, position: number) {
  return new Promise<number>((resolve, reject) => {
    fs.write(fd, buf, bufOffset, length, position, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

/** pread until `length` bytes or end of file; resolves how many bytes were read. */
export async function preadFully(
  fd: number,
  buf: Uint8Array,
  bufOffset: number,
  length: number,
  position: number,
): Promise<number> {
  let done = 0;
  while (done < length) {
    const n = await pread(fd, buf, bufOffset + done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/**
 * Reads up to this size try the page cache on the main thread first. Larger ones go straight to
 * the thread pool: their copy is long enough to be worth a worker thread running beside the
 * event loop, and a synchronous copy of megabytes would stall every other connection.
 */
export const NOWAIT_MAX = sizeLimit(process.env.ARCHIP_NOWAIT_MAX, 1 << 20);

/**
 * `preadFully` that first copies what the page cache holds on the calling thread
 * (preadv2 RWF_NOWAIT through @archipelago/fastio: no thread-pool round trip), and sends only
 * the rest, if any, through the thread pool. Same result and errors as `preadFully`.
 */
export function preadCachedFully(
  fd: number,
  buf: Uint8Array,
  bufOffset: number,
  length: number,
  position: number,
): Promise<number> {
  if (length > NOWAIT_MAX) return preadFully(fd, buf, bufOffset, length, position);
  let done = 0;
  try {
    while (done < length) {
      const n = preadNowait(fd, buf, bufOffset + done, length - done, position + done);
      if (n === 0) return Promise.resolve(done); // end of file
      if (n === EAGAIN) break; // not (all) cached, or no fast path: the thread pool does the rest
      done += n;
    }
  } catch (e) {
    return Promise.reject(e);
  }
  if (done === length) return Promise.resolve(done);
  return preadFully(fd, buf, bufOffset + done, length - done, position + done).then((n) => done + n);
}

/**
 * The synchronous part of `preadCachedFully`: copies what the page cache holds on the calling
 * thread. Returns the byte count when the read is complete or reached the end of the file, or
 * `-(count + 1)` when it stopped short because the rest is not cached (or there is no fast
 * path): the caller reads the rest through the thread pool. Throws the system error.
 */
export function preadCachedSync(
  fd: number,
  buf: Uint8Array,
  bufOffset: number,
  length: number,
  position: number,
): number {
  if (length > NOWAIT_MAX) return -1;
  let done = 0;
  while (done < length) {
    const n = preadNowait(fd, buf, bufOffset + done, length - done, position + done);
    if (n === 0) return done; // end of file
    if (n === EAGAIN) return -(done + 1);
    done += n;
  }
  return done;
}

/**
 * Buffered writes up to this size run on the calling (main) thread, synchronously: a page-cache
 * write of a few KiB costs a few µs, less than the thread-pool round trip (queue, worker wake-up,
 * completion through the event loop) it would otherwise take. There is no RWF_NOWAIT for
 * buffered writes on ext4 (EOPNOTSUPP), so a write that has to wait (dirty-page throttling)
 * waits on the main thread. Larger writes go to the thread pool, where their longer copies run
 * beside the event loop (measured through `vlmc map`: 4 KiB random writes 2x faster inline,
 * 1 MiB sequential writes 1.6x faster through the pool; bench/results/nbd.md). `ARCHIP_WRITE_INLINE_MAX`
 * (bytes; 0 = every write through the pool) moves the limit for A/B runs.
 */
export const WRITE_INLINE_MAX = sizeLimit(process.env.ARCHIP_WRITE_INLINE_MAX, 64 << 10);

/** A byte limit from the environment (for A/B runs) when it is a whole number, else `dflt`. */
function sizeLimit(env: string | undefined, dflt: number): number {
  const n = env === undefined || env.trim() === '' ? Number.NaN : Number(env);
  return Number.isSafeInteger(n) && n >= 0 ? n : dflt;
}

/** pwrite(2) on the calling thread until every byte is written; throws the system error. */
export function pwriteInline(
  fd: number,
  buf: Uint8Array,
  bufOffset: number,
  length: number,
  position: number,
): void {
  let done = 0;
  while (done < length) {
    const n = fs.writeSync(fd, buf, bufOffset + done, length - done, position + done);
    if (n <= 0) {
      const e: NodeJS.ErrnoException = new Error('pwrite wrote no bytes');
      e.code = 'EIO';
      throw e;
    }
    done += n;
  }
}

/** pwrite until every byte is written (short writes are retried). */
export async function pwriteFully(
  fd: number,
  buf: Uint8Array,
  bufOffset: number,
  length: number,
  position: number,
): Promise<void> {
  let done = 0;
  while (done < length) {
    const n = await pwrite(fd, buf, bufOffset + done, length - done, position + done);
    if (n <= 0) {
      const e: NodeJS.ErrnoException = new Error('pwrite wrote no bytes');
      e.code = 'EIO';
      throw e;
    }
    done += n;
  }
}

export function fdatasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.fdatasync(fd, (err) => (err ? reject(err) : resolve()));
  });
}

export function fsync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.fsync(fd, (err) => (err ? reject(err) : resolve()));
  });
}

export function ftruncate(fd: number, length: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.ftruncate(fd, length, (err) => (err ? reject(err) : resolve()));
  });
}

export function fstatSize(fd: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.fstat(fd, (err, st) => (err ? reject(err) : resolve(st.size)));
  });
}

/** fsync a directory so that entries created, renamed or linked in it survive a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const fd = await open(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    await fsync(fd);
  } finally {
    await close(fd).catch(() => {});
  }
}

/** The errno code of a Node system error, if any. */
export function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | null)?.code;
}
