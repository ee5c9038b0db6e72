/**
 * Process liveness, as every part of Archipelago judges it (pidfiles, mapped volumes, lock
 * holders): one rule, one function.
 */
import { readFileSync } from 'node:fs';

/**
 * True when `pid` is a live process. A zombie (exited, not yet reaped: detached processes are
 * reparented to init, which may reap them late) or a dead task counts as gone; a process of
 * another user (EPERM) counts as alive. Without /proc, kill(pid, 0) alone decides.
 */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    // /proc/<pid>/stat: "pid (comm) S ..."; comm may contain spaces, so read after the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return true;
  }
}

export type PidfileState =
  | { state: 'absent' }
  | { state: 'running'; pid: number }
  | { state: 'stale'; pid: number | null };

/**
 * A pidfile (`<pid>\n`) and whether its process runs: `running`, `stale` (the process is gone,
 * or the file is not a pid), or `absent`.
 */
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
