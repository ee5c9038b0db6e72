/**
 * Pidfiles: `<pid>\n`, created exclusively. A pidfile whose process is alive refuses a second
 * start; one whose process is gone (or a zombie) is stale and is replaced.
 */
import { mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { ArchipelagoError } from '@archipelago/libxseg';

export type PidfileState =
  | { state: 'absent' }
  | { state: 'running'; pid: number }
  | { state: 'stale'; pid: number | null };

/** True when `pid` is a live process (not a zombie). */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return true;
  }
}

export function readPidfile(path: string): PidfileState {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'absent' };
    throw e;
  }
  const pid = /^\s*(\d+)\s*$/.test(text) ? Number(text.trim()) : null;
  if (pid !== null && pidAlive(pid)) return { state: 'running', pid };
  return { state: 'stale', pid };
}

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
