import { mkdir, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { processStart } from '@archipelago/blocker';
import { ArchipelagoError, pidAlive } from '@archipelago/libxseg';
import { removeStaleSocket, unixSocketState, unlinkIfPresent } from '@archipelago/nbd';

/** What `vlmc map` records for a mapped volume (one JSON file per volume in the run directory). */
export interface MappedEntry {
  volume: string;
  /** Pid of the background endpoint process holding the volume. */
  pid: number;
  /** NBD URI clients connect to. */
  uri: string;
  socket?: string;
  port?: number;
  /** vhost-user-blk socket (`vlmc map --vhost-user`), if any. */
  vhostUser?: string;
  /** Kernel device attached through nbd-client (or a loop device over `fuse`), if any. */
  device?: string;
  /** The regular file the volume is served as through FUSE (`vlmc map --fuse`), if any. */
  fuse?: string;
  readonly: boolean;
  /** Unix socket of the holder's control channel. */
  control: string;
  /** Config file the holder runs with. */
  config: string;
  started: string;
  /**
   * Start time of the endpoint process (field 22 of /proc/<pid>/stat), filled in by `write`: a
   * pid reused by another process after the endpoint died does not pass for the endpoint.
   */
  start?: string;
}

export interface MappedStatus extends MappedEntry {
  /**
   * False when the holder process is gone (a stale entry, e.g. after a crash or kill -9), or its
   * pid now belongs to another process.
   */
  alive: boolean;
}

/**
 * The run-state of mapped volumes: files `<dir>/<volume>.json`, written atomically (temp +
 * rename) so a crash of `vlmc` or of the holder never leaves half an entry. Stale entries (the
 * holder is dead) are reported, not hidden; `remove` clears what a dead holder left (its entry and
 * the sockets nobody listens on any more), so the volume maps again at once.
 */
export class RunState {
  constructor(readonly dir: string) {}

  private file(volume: string): string {
    return join(this.dir, `${volume}.json`);
  }

  socketPath(volume: string): string {
    return join(this.dir, `${volume}.sock`);
  }

  controlPath(volume: string): string {
    return join(this.dir, `${volume}.ctl`);
  }

  logPath(volume: string): string {
    return join(this.dir, `${volume}.log`);
  }

  /** The control socket of the shared endpoint process of a configuration (`hostKey`). */
  hostControlPath(key: string): string {
    return join(this.dir, `endpoint-${key}.ctl`);
  }

  /** The file `vlmc map` flocks while it looks for (or starts) that process. */
  hostLockPath(key: string): string {
    return join(this.dir, `endpoint-${key}.lock`);
  }

  /** That process's log (each volume's `<volume>.log` is a symbolic link to it). */
  hostLogPath(key: string): string {
    return join(this.dir, `endpoint-${key}.log`);
  }

  async write(entry: MappedEntry): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o770 });
    const tmp = `${this.file(entry.volume)}.${process.pid}.tmp`;
    const start = entry.start ?? processStart(entry.pid) ?? undefined;
    const full: MappedEntry = start === undefined ? entry : { ...entry, start };
    await writeFile(tmp, `${JSON.stringify(full, null, 2)}\n`, { mode: 0o660 });
    await rename(tmp, this.file(entry.volume));
  }

  async read(volume: string): Promise<MappedStatus | null> {
    let text: string;
    try {
      text = await readFile(this.file(volume), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    try {
      const entry = JSON.parse(text) as MappedEntry;
      return { ...entry, alive: holderAlive(entry) };
    } catch {
      return null; // not ours or damaged: treated as absent
    }
  }

  async list(): Promise<MappedStatus[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const out: MappedStatus[] = [];
    for (const n of names.filter((f) => f.endsWith('.json')).sort()) {
      const e = await this.read(n.slice(0, -'.json'.length));
      if (e) out.push(e);
    }
    return out;
  }

  /** Finds an entry by volume name, NBD URI, kernel device or FUSE file. */
  async find(what: string): Promise<MappedStatus | null> {
    const direct = /^[A-Za-z0-9._-]+$/.test(what) ? await this.read(what) : null;
    if (direct) return direct;
    return (
      (await this.list()).find(
        (e) =>
          e.uri === what ||
          e.device === what ||
          e.socket === what ||
          (e.fuse !== undefined && e.fuse === resolve(what)),
      ) ?? null
    );
  }

  /**
   * Removes the entry of `volume`, and the sockets of its endpoint that nobody answers on any more
   * (the default NBD socket, the control socket, and `socket`, a custom `--socket` path): an
   * endpoint that exits unlinks its sockets itself, one killed with kill -9 leaves them behind.
   * A socket a live process answers on is left alone.
   */
  async remove(volume: string, socket?: string): Promise<void> {
    await unlinkIfPresent(this.file(volume));
    const sockets = new Set([this.socketPath(volume), this.controlPath(volume)]);
    if (socket) sockets.add(socket);
    for (const path of sockets) await removeStaleSocket(path);
  }

  /**
   * The socket the endpoint of `volume` is to listen on (absolute; undefined for a TCP port),
   * checked before the endpoint is started, with a clear error where it could not listen: the
   * socket or port of a live endpoint of another volume (EBUSY, naming it), a socket another
   * process answers on (EBUSY), a file that is no socket or a missing directory (EINVAL). A socket
   * nobody answers on (left by an endpoint killed with kill -9) is removed, and so is the custom
   * socket of `previous`, the stale entry of this volume, when the new one listens elsewhere.
   */
  async listenTarget(
    volume: string,
    req: ListenRequest,
    previous?: MappedEntry | null,
  ): Promise<string | undefined> {
    const socket = req.port === undefined ? resolve(req.socket ?? this.socketPath(volume)) : undefined;
    if (previous?.socket && resolve(previous.socket) !== socket) await removeStaleSocket(previous.socket);
    const others = (await this.list()).filter((e) => e.alive && e.volume !== volume);
    if (socket === undefined) {
      const user = req.port ? others.find((e) => e.port === req.port) : undefined;
      if (user) {
        throw new ArchipelagoError(
          'EBUSY',
          `port ${req.port} is in use by the endpoint of "${user.volume}" (pid ${user.pid}); unmap it or map with another --port`,
          { details: { volume, port: req.port, by: user.volume, pid: user.pid } },
        );
      }
      return undefined; // any other user of the port: the endpoint's listen names it (EBUSY)
    }
    const user = others.find((e) => e.socket !== undefined && resolve(e.socket) === socket);
    if (user) {
      throw new ArchipelagoError(
        'EBUSY',
        `socket ${socket} is in use by the endpoint of "${user.volume}" (pid ${user.pid}); unmap it or map with another --socket`,
        { details: { volume, socket, by: user.volume, pid: user.pid } },
      );
    }
    const dir = dirname(socket);
    const isDir = await stat(dir).then(
      (st) => st.isDirectory(),
      () => false,
    );
    if (!isDir && dir !== this.dir) {
      throw new ArchipelagoError('EINVAL', `cannot listen on ${socket}: ${dir} is not a directory`, {
        details: { volume, socket },
      });
    }
    const there = await unixSocketState(socket);
    if (there === 'live') {
      throw new ArchipelagoError(
        'EBUSY',
        `socket ${socket} is in use by another process (no endpoint of this host maps a volume there); map with another --socket`,
        { details: { volume, socket } },
      );
    }
    if (there === 'not-socket') {
      throw new ArchipelagoError(
        'EINVAL',
        `cannot listen on ${socket}: it exists and is not a socket; map with another --socket`,
        { details: { volume, socket } },
      );
    }
    if (there === 'stale') await unlinkIfPresent(socket); // its server died without unlinking it
    return socket;
  }
}

/**
 * Where an endpoint asks to listen (`vlmc map --socket PATH | --port N`); the default socket when
 * neither is given.
 */
export interface ListenRequest {
  socket?: string;
  port?: number;
}

/** True while the entry's process runs and is the same process (its start time matches). */
function holderAlive(entry: MappedEntry): boolean {
  if (!pidAlive(entry.pid)) return false;
  if (entry.start === undefined) return true;
  const start = processStart(entry.pid);
  return start === null || start === entry.start;
}
