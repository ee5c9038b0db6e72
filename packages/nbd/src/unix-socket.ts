/**
 * A unix socket path a server wants to listen on: is it free, answered by a live server, or left
 * behind by a dead one (a server killed with kill -9 never unlinks its socket, and bind() then
 * fails with EADDRINUSE although nobody listens)?
 *
 * Only `fs.promises.lstat` and `unlink` touch the path: the sync and callback stat calls fill
 * Node's shared stat array, and after a stat of a socket Node 20's `realpathSync` stops resolving
 * symlinks, so the next `import()` of a pnpm-linked package fails with MODULE_NOT_FOUND
 * (nodejs/node#51142; `fs.promises.rm` stats the path through the callback API).
 */
import { lstat, unlink } from 'node:fs/promises';
import { connect } from 'node:net';

/**
 * - `absent`: nothing at the path;
 * - `live`: a server accepts connections there (or the connect failed otherwise than refused:
 *   treated as in use, never removed);
 * - `stale`: a socket nobody listens on (ECONNREFUSED), safe to unlink;
 * - `not-socket`: something else (a file, a directory) is there.
 */
export type UnixSocketState = 'absent' | 'live' | 'stale' | 'not-socket';

/** What is at unix socket path `path` (a connect attempt, closed at once, tells live from stale). */
export async function unixSocketState(path: string, timeoutMs = 2000): Promise<UnixSocketState> {
  try {
    if (!(await lstat(path)).isSocket()) return 'not-socket';
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw e;
  }
  return new Promise((resolve) => {
    const sock = connect(path);
    const done = (state: UnixSocketState) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(state);
    };
    // A listener whose backlog is full does not answer at once: it is alive.
    const timer = setTimeout(() => done('live'), timeoutMs);
    sock.once('connect', () => done('live'));
    sock.once('error', (e: NodeJS.ErrnoException) =>
      done(e.code === 'ECONNREFUSED' ? 'stale' : e.code === 'ENOENT' ? 'absent' : 'live'),
    );
  });
}

/** Unlinks `path`; true when it was there. */
export async function unlinkIfPresent(path: string): Promise<boolean> {
  try {
    await unlink(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/** Unlinks the socket at `path` when nobody listens on it; returns what was there. */
export async function removeStaleSocket(path: string): Promise<UnixSocketState> {
  const state = await unixSocketState(path);
  if (state === 'stale') await unlinkIfPresent(path);
  return state;
}
