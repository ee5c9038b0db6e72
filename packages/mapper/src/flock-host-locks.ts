/**
 * Host locks: one process of this host at a time changes a volume's map or holds it open
 * (`HostLocks` of `@archipelago/mapper`, which says why). `FlockHostLocks` takes
 * `flock(LOCK_EX)` on `<dir>/<volume>` (the wirings give `<run dir>/host-locks`: `hostLockDir`):
 *
 * - the lock is the flock, and only it: the kernel drops it when the holder's process dies (or
 *   closes the file), so a killed command never leaves one behind;
 * - every acquire opens the file anew, and flock locks belong to the open file description: a
 *   second acquire of a held name conflicts in the same process as in another one;
 * - the holder writes its pid into the file right after locking, for messages ("pid N") and for
 *   an operator's `cat`; a pid in an unlocked file means nothing. Who holds a locked file is read
 *   from `/proc/locks` when it names the file (so a holder that wrote nothing, e.g. `flock(1)`,
 *   is named too), else from the file;
 * - waiting never blocks the event loop: `flock` with LOCK_NB, polled with backoff (5 ms, doubling
 *   up to 50 ms) until `timeoutMs`, then EBUSY;
 * - files are never removed (removing one while another process has it open would let two
 *   processes lock two different files of one name); they are empty but for the pid.
 *
 * The file work is synchronous: a few system calls on a local directory, once per command or
 * per opened volume, never on a data path; and the pid is written in the same turn of the event
 * loop as the lock is taken.
 */
import {
  chmodSync,
  closeSync,
  fchmodSync,
  constants as fs,
  fstatSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  statSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { flock, flockAvailable } from '@archipelago/fastio';
import { ArchipelagoError } from '@archipelago/libxseg';
import { isValidObjectName } from '@archipelago/mapfile';
import type { HostLockHandle, HostLocks } from './host-locks.js';

/** The first and the longest pause between two tries of a held lock (ms). */
const FIRST_PAUSE_MS = 5;
const MAX_PAUSE_MS = 50;
/** How often `holder` looks again for the pid of a held lock that names none yet. */
const PID_TRIES = 5;

export class FlockHostLocks implements HostLocks {
  /** `dir`: where the lock files are (created 0770 on first use, with missing parents). */
  constructor(readonly dir: string) {}

  /** The lock file of volume `name`. */
  pathOf(name: string): string {
    if (typeof name !== 'string' || !isValidObjectName(name))
      throw new ArchipelagoError(
        'EINVAL_NAME',
        `host lock "${name}": a volume name is 1 to 123 characters of letters, digits, '.', '_' and '-'`,
        { details: { volume: name } },
      );
    return join(this.dir, name);
  }

  async acquire(name: string, o: { wait: boolean; timeoutMs: number }): Promise<HostLockHandle> {
    const path = this.pathOf(name);
    if (!(o.timeoutMs >= 0)) throw new RangeError(`host lock timeoutMs must be >= 0, got ${o.timeoutMs}`);
    needFlock();
    this.makeDir();
    const { fd, writable } = openLockFile(path);
    try {
      const deadline = performance.now() + (o.wait ? o.timeoutMs : 0);
      for (let pause = FIRST_PAUSE_MS; !flock(fd, 'ex'); pause = Math.min(2 * pause, MAX_PAUSE_MS)) {
        const left = deadline - performance.now();
        if (left <= 0) throw busy(name, path, holderPid(fd));
        await sleep(Math.min(pause, left));
      }
      if (writable) writePid(fd, `${process.pid}\n`);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    return new FlockHandle(name, fd, writable);
  }

  async holder(name: string): Promise<number | null> {
    const path = this.pathOf(name);
    needFlock();
    let fd: number;
    try {
      fd = openSync(path, fs.O_RDONLY | fs.O_NOFOLLOW);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null; // never locked
      throw e;
    }
    try {
      for (let i = 0; ; i++) {
        // A shared lock: two lookups do not disturb each other, an exclusive holder excludes it.
        if (flock(fd, 'sh')) return null; // free (closing the fd below unlocks it)
        const pid = holderPid(fd);
        if (pid !== null) return pid;
        // Locked, but no pid anywhere yet: a holder between its flock and its pid write.
        if (i === PID_TRIES) return -1; // as F_OFD_GETLK says of a holder it cannot name
        await sleep(FIRST_PAUSE_MS);
      }
    } finally {
      closeSync(fd);
    }
  }

  /**
   * Creates the directory (0770, whatever the umask) when it is missing, keeping the setgid bit
   * it inherits from a setgid parent (Archipelago's run directory is 2770, group GROUP), so lock
   * files made in it by any process are the group's.
   */
  private makeDir(): void {
    const first = mkdirSync(this.dir, { recursive: true, mode: 0o770 });
    if (first !== undefined) chmodSync(this.dir, 0o770 | (statSync(this.dir).mode & 0o2000));
  }
}

class FlockHandle implements HostLockHandle {
  private fd: number;

  constructor(
    readonly name: string,
    fd: number,
    private readonly writable: boolean,
  ) {
    this.fd = fd;
  }

  async release(): Promise<void> {
    const fd = this.fd;
    if (fd < 0) return;
    this.fd = -1;
    try {
      if (this.writable) ftruncateSync(fd, 0); // the pid goes with the lock (informational)
    } catch {
      // Only the pid: the lock goes all the same.
    }
    try {
      flock(fd, 'un');
    } finally {
      closeSync(fd); // this fd is the lock's only one (opened O_CLOEXEC: no child has it)
    }
  }
}

function needFlock(): void {
  if (!flockAvailable)
    throw new ArchipelagoError(
      'ENOTSUP',
      'same-host locking needs the @archipelago/fastio addon: rebuild it (pnpm run build)',
    );
}

/**
 * Opens (creating it 0660 when missing) the lock file at `path`: read-write to write the pid
 * into, read-only when the file is not ours to write (flock needs no write access).
 */
function openLockFile(path: string): { fd: number; writable: boolean } {
  for (;;) {
    try {
      return { fd: openSync(path, fs.O_RDWR | fs.O_NOFOLLOW), writable: true };
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EACCES') return { fd: openSync(path, fs.O_RDONLY | fs.O_NOFOLLOW), writable: false };
      if (code !== 'ENOENT') throw e;
    }
    try {
      const fd = openSync(path, fs.O_RDWR | fs.O_CREAT | fs.O_EXCL | fs.O_NOFOLLOW, 0o660);
      fchmodSync(fd, 0o660);
      return { fd, writable: true };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e; // created meanwhile: open it
    }
  }
}

/**
 * Writes the pid line at the start, then cuts what an older, longer pid left after it (a reader
 * in between sees the old pid or the new one on the first line). Best effort: the pid is only
 * informational, a full file system does not fail the lock.
 */
function writePid(fd: number, line: string): void {
  const b = Buffer.from(line);
  try {
    writeSync(fd, b, 0, b.length, 0);
    ftruncateSync(fd, b.length);
  } catch {
    // Messages will name the holder from /proc/locks.
  }
}

/** The pid on the first line of the lock file, or null. */
function pidInFile(fd: number): number | null {
  const b = Buffer.alloc(32);
  const n = readSync(fd, b, 0, b.length, 0);
  const m = /^(\d{1,10})\n/.exec(b.toString('latin1', 0, n));
  const pid = m ? Number(m[1]) : 0;
  return pid > 0 ? pid : null;
}

/** "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (pid, device, inode); a waiter has "->" after the id. */
const FLOCK_LINE = /^\d+: (?!->)\s*FLOCK\s+\S+\s+\S+\s+(\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s/gm;

/**
 * The pids holding a flock lock on the file of `fd`, from /proc/locks (null when it cannot
 * say: not readable, or a file system whose inodes it names by another device, as btrfs and
 * overlayfs can).
 */
function flockPids(fd: number): number[] | null {
  let text: string;
  try {
    text = readFileSync('/proc/locks', 'latin1');
  } catch {
    return null;
  }
  const st = fstatSync(fd, { bigint: true });
  // glibc's dev_t encoding; /proc/locks prints the device as major:minor in hex.
  const major = ((st.dev >> 8n) & 0xfffn) | ((st.dev >> 32n) & ~0xfffn);
  const minor = (st.dev & 0xffn) | ((st.dev >> 12n) & ~0xffn);
  const pids: number[] = [];
  for (const m of text.matchAll(FLOCK_LINE)) {
    if (BigInt(`0x${m[2]}`) === major && BigInt(`0x${m[3]}`) === minor && BigInt(m[4] as string) === st.ino) {
      const pid = Number(m[1]);
      if (pid > 0) pids.push(pid);
    }
  }
  return pids.length > 0 ? pids : null;
}

/** Who holds the lock of the file of `fd` (held by someone else now), or null when unknown. */
function holderPid(fd: number): number | null {
  const inFile = pidInFile(fd);
  const fromKernel = flockPids(fd);
  if (fromKernel === null) return inFile;
  return inFile !== null && fromKernel.includes(inFile) ? inFile : (fromKernel[0] as number);
}

function busy(volume: string, lock: string, pid: number | null): ArchipelagoError {
  const who =
    pid === process.pid
      ? `this process (pid ${pid}) is already changing or holding it`
      : `another process of this host${pid === null ? '' : ` (pid ${pid})`} is changing or holding it`;
  return new ArchipelagoError(
    'EBUSY',
    `volume "${volume}" is busy: ${who}; retry, or wait for it (vlmc showmapped lists mapped volumes)`,
    { details: { volume, pid, lock } },
  );
}
