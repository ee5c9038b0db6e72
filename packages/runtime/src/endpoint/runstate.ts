import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pidAlive } from '@archipelago/libxseg';

/** What `vlmc map` records for a mapped volume (one JSON file per volume in the run directory). */
export interface MappedEntry {
  volume: string;
  /** Pid of the background endpoint process holding the volume. */
  pid: number;
  /** NBD URI clients connect to. */
  uri: string;
  socket?: string;
  port?: number;
  /** Kernel device attached through nbd-client, if any. */
  device?: string;
  readonly: boolean;
  /** Unix socket of the holder's control channel. */
  control: string;
  /** Config file the holder runs with. */
  config: string;
  started: string;
}

export interface MappedStatus extends MappedEntry {
  /** False when the holder process is gone (a stale entry, e.g. after a crash). */
  alive: boolean;
}

/**
 * The run-state of mapped volumes: files `<dir>/<volume>.json`, written atomically (temp +
 * rename) so a crash of `vlmc` or of the holder never leaves half an entry. Stale entries (the
 * holder is dead) are reported, not hidden.
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

  async write(entry: MappedEntry): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o770 });
    const tmp = `${this.file(entry.volume)}.${process.pid}.tmp`;
    await writeFile(tmp, `${JSON.stringify(entry, null, 2)}\n`, { mode: 0o660 });
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
      return { ...entry, alive: pidAlive(entry.pid) };
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

  /** Finds an entry by volume name, NBD URI or kernel device. */
  async find(what: string): Promise<MappedStatus | null> {
    const direct = /^[A-Za-z0-9._-]+$/.test(what) ? await this.read(what) : null;
    if (direct) return direct;
    return (await this.list()).find((e) => e.uri === what || e.device === what || e.socket === what) ?? null;
  }

  async remove(volume: string): Promise<void> {
    await rm(this.file(volume), { force: true });
    await rm(this.socketPath(volume), { force: true });
    await rm(this.controlPath(volume), { force: true });
  }
}
