/**
 * Pidfiles: `<pid>\n`, created exclusively. A pidfile whose process is alive refuses a second
 * start; one whose process is gone (or a zombie) is stale and is replaced.
 */
import { closeSync, fchownSync, mkdirSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { ArchipelagoError, readPidfile } from '@archipelago/libxseg';

export { type PidfileState, pidAlive, readPidfile } from '@archipelago/libxseg';

/** Writes our pid; refuses (EBUSY) when a live process owns the pidfile, replaces a stale one. */
export function writePidfile(path: string, pid = process.pid): { replacedStale: number | null | false } {
  const { fd, replacedStale } = createPidfile(path, pid);
  commitPidfile(fd, pid);
  return { replacedStale };
}

/**
 * Creates the pidfile exclusively, still empty (an empty pidfile reads as stale), and returns its
 * descriptor: a peer creates it while still root (any directory), switches account, then writes
 * its pid with `commitPidfile`, so the pidfile says "ready" only once the switch is done. With
 * `owner`, the file is given to that account. Refuses (EBUSY) when a live process owns the
 * pidfile; replaces a stale one.
 */
export function createPidfile(
  path: string,
  pid = process.pid,
  owner?: { uid: number; gid: number },
): { fd: number; replacedStale: number | null | false } {
  mkdirSync(dirname(path), { recursive: true });
  let replacedStale: number | null | false = false;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o660);
      if (owner && process.geteuid?.() === 0) fchownSync(fd, owner.uid, owner.gid);
      return { fd, replacedStale };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const st = readPidfile(path);
    if (st.state === 'running') {
      if (st.pid === pid) {
        unlinkSync(path); // ours (a restart in-process): made again below
        continue;
      }
      throw new ArchipelagoError(
        'EBUSY',
        `already running: pidfile ${path} belongs to live process ${st.pid}`,
        { details: { pidfile: path, pid: st.pid } },
      );
    }
    if (st.state === 'stale') {
      replacedStale = st.pid;
      try {
        unlinkSync(path);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
  }
  throw new ArchipelagoError(
    'EBUSY',
    `could not create pidfile ${path}: another process keeps racing for it`,
  );
}

/** Writes the pid into a pidfile made by `createPidfile` and closes it: the peer is ready. */
export function commitPidfile(fd: number, pid = process.pid): void {
  try {
    writeSync(fd, `${pid}\n`);
  } finally {
    closeSync(fd);
  }
}

/** Removes the pidfile if it is still ours. */
export function removePidfile(path: string, pid = process.pid): void {
  const st = readPidfile(path);
  if (st.state === 'absent') return;
  if (st.state === 'running' && st.pid !== pid) return;
  try {
    unlinkSync(path);
  } catch {
    // gone already
  }
}
