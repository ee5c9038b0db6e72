/**
 * One command's use of the system: the configuration, a runtime opened on first use, and the
 * volumes the command touched. `close()` closes again the volumes the command opened implicitly
 * (a write, a read or a map change takes the volume lock), so no command leaves a volume locked
 * behind it; volumes this host held before (`vlmc open`, `vlmc lock`) or opened on purpose stay
 * as they were. Volumes mapped on this host are reached through their holder (the `vlmc map`
 * endpoint), never behind its back.
 */
import { ArchipelagoError } from '@archipelago/libxseg';
import { configNotices, type LoadedConfig, loadConfig } from './config.js';
import { type MappedStatus, RunState } from './endpoint/runstate.js';
import { runDirectory } from './paths.js';
import type { Runtime, RuntimeOptions } from './types.js';
import { openRuntime } from './wiring.js';

export interface SessionOptions {
  /** `-c/--config`: else ARCHIPELAGO_CONF, /etc/archipelago/archipelago.conf, the per-user default. */
  config?: string;
  /**
   * Told once, when the configuration is loaded, of each key set there that has no effect here
   * (`configNotices`): vlmc prints them on stderr, so `--json` output stays clean.
   */
  notice?: (line: string) => void;
}

export class Session {
  private loaded: LoadedConfig | undefined;
  private runtimePromise: Promise<Runtime> | undefined;
  /** Volumes left open after the command: held by this host before it started, or opened on purpose. */
  private readonly keep = new Set<string>();

  constructor(private readonly opts: SessionOptions = {}) {}

  /** The configuration, loaded once. */
  configuration(): LoadedConfig {
    if (!this.loaded) {
      this.loaded = loadConfig(this.opts.config);
      if (this.opts.notice) for (const n of configNotices(this.loaded)) this.opts.notice(n);
    }
    return this.loaded;
  }

  /** The runtime (either wiring), opened on first use with the configuration's umask. */
  runtime(opts: Pick<RuntimeOptions, 'bulk'> = {}): Promise<Runtime> {
    if (!this.runtimePromise) {
      const loaded = this.configuration();
      process.umask(loaded.config.ARCHIPELAGO.UMASK);
      this.runtimePromise = openRuntime(loaded, opts);
    }
    return this.runtimePromise;
  }

  /** Leaves `name` open (locked by this host) after the command: `vlmc open`. */
  keepOpen(name: string): void {
    this.keep.add(name);
  }

  /**
   * Call before an operation on volume `name`. When this host holds its lock without a process
   * (an earlier `vlmc open` or `vlmc lock`), the volume is adopted as open here, so the operation
   * treats it as open and the lock goes back to the host afterwards. A lock a dead process of
   * this host left behind (a killed command) is not adopted: the operation takes it over and
   * lets it go. One another live process of this host holds (a mapped volume) is left alone.
   */
  async adopt(name: string): Promise<void> {
    const rt = await this.runtime();
    const held = await rt.blockerm.lockInfo(name);
    if (held === null || held.owner !== rt.identity || held.process !== null) return;
    this.keep.add(name);
    if (rt.mapper.openVolumes().includes(name)) return;
    try {
      await rt.mapper.info(name);
      await rt.mapper.openVolume(name);
    } catch (e) {
      if (ArchipelagoError.is(e, 'ENOENT_VOLUME')) return; // a lock on a name with no volume yet
      // Another process of this host has it open just now (EBUSY): the operation reads it
      // uncached, or waits for it, as any other.
      if (ArchipelagoError.is(e, 'EBUSY')) return;
      throw e;
    }
  }

  /** The run-state of mapped volumes for this configuration. */
  runState(): RunState {
    return new RunState(runDirectory(this.configuration()));
  }

  /** The live process holding `name` mapped (`vlmc map`), or null. */
  async holder(name: string): Promise<MappedStatus | null> {
    const e = await this.runState().read(name);
    return e?.alive ? e : null;
  }

  /** Fails with EBUSY when `name` is mapped: the holder owns its map until `vlmc unmap`. */
  async refuseMapped(name: string, action: string): Promise<void> {
    const h = await this.holder(name);
    if (h) {
      throw new ArchipelagoError(
        'EBUSY',
        `cannot ${action} "${name}": it is mapped at ${h.uri} (pid ${h.pid}); run "vlmc unmap ${name}" first`,
        { details: { volume: name, uri: h.uri, pid: h.pid } },
      );
    }
  }

  /**
   * Closes the volumes opened implicitly, hands those kept open to the host (a host hold:
   * `vlmc open` outlives its command; a process hold would die with it), then closes the runtime.
   * Throws the first failure after trying everything.
   */
  async close(): Promise<void> {
    if (!this.runtimePromise) return;
    let problem: unknown;
    const rt = await this.runtimePromise.catch(() => null);
    this.runtimePromise = undefined;
    if (!rt) return;
    for (const name of rt.mapper.openVolumes()) {
      try {
        if (this.keep.has(name)) await rt.composer.frozen(name, () => rt.mapper.handOver(name));
        else await rt.composer.close(name);
      } catch (e) {
        problem ??= e;
      }
    }
    try {
      await rt.close({ keepLocks: true });
    } catch (e) {
      problem ??= e;
    }
    if (problem !== undefined) throw problem;
  }
}
