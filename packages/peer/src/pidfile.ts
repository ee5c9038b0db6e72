/**
 * Pidfiles: `<pid>\n`, created exclusively. A pidfile whose process is alive refuses a second
 * start; one whose process is gone (or a zombie) is stale and is replaced.
 */
import { mkdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { ArchipelagoError, readPidfile } from '@archipelago/libxseg';

export { type PidfileState, pidAlive, readPidfile } from '@archipelago/libxseg';

/** Writes our pid; refuses (EBUSY) when a live process owns the pidfile, replaces a stale one. */
export function writePidfile(path: string, pid = process.pid): { replacedStale: number | null | false } {
  mkdirSync(dirname(path), { recursive: true });
  let replacedStale: number | null | false = false;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeFileSync(path, `${pid}\n`, { flag: 'wx' });
      return { replacedStale };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const st = readPidfile(path);
    if (st.state === 'running') {
      if (st.pid === pid) return { replacedStale };
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
