/**
 * The base of every `vlmc` command.
 *
 * - `-c/--config` on every command, and `--json` (oclif's `enableJsonFlag`).
 * - The runtime (blockers, mapper, composer) is opened lazily, the first time a command asks.
 * - In `finally`, the volumes the command opened implicitly (a write, a read or a map change takes
 *   the volume lock) are closed again, so no command leaves a volume locked behind it. Volumes this
 *   host held before the command started (`vlmc open`, `vlmc lock`) are left as they were.
 * - Errors become one line on stderr, `vlmc: <CODE>: <message>`, and exit status 1; with
 *   `--json`, `{"error":{"code","message","details"}}` on stdout instead.
 */
import { ArchipelagoError, fromSystemError } from '@archipelago/libxseg';
import { Command, Errors, Flags, type Interfaces } from '@oclif/core';
import { type LoadedConfig, loadConfig, runDirectory } from './config.js';
import { type MappedStatus, RunState } from './endpoint/runstate.js';
import { openRuntime, type Runtime, type RuntimeOptions } from './runtime.js';

/** The error code shown for failures that are not Archipelago errors (bugs). */
export const INTERNAL = 'INTERNAL';

export interface ErrorReport {
  code: string;
  message: string;
  details: Record<string, unknown>;
}

/** JSON.stringify replacer: bigints (epochs) become numbers when exact, else decimal strings. */
export function jsonReplacer(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') {
    return value <= BigInt(Number.MAX_SAFE_INTEGER) && value >= -BigInt(Number.MAX_SAFE_INTEGER)
      ? Number(value)
      : value.toString();
  }
  return value;
}

const oneLine = (s: string) =>
  s
    // strip ANSI colour codes
    .replace(/\u001b\[[0-9;]*m/g, '')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^See more help with/.test(l))
    .join(' ');

/** Code, one-line message and details of any error a command can meet. */
export function describeError(err: unknown): ErrorReport {
  if (ArchipelagoError.isInstance(err)) {
    return { code: err.code, message: oneLine(err.message), details: { ...err.details } };
  }
  if (err instanceof Errors.CLIError) {
    // Usage errors from the parser: missing argument, unknown flag, bad option value.
    return { code: 'EINVAL', message: oneLine(err.message), details: {} };
  }
  const errno = err as NodeJS.ErrnoException | undefined;
  if (errno && typeof errno === 'object' && typeof errno.syscall === 'string') {
    const e = fromSystemError(err, errno.syscall);
    return {
      code: e.code,
      message: oneLine(errno.message),
      details: { errno: errno.code, path: errno.path },
    };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { code: INTERNAL, message: oneLine(message) || 'unexpected failure', details: {} };
}

/** oclif's FlagOutput/ArgOutput (not exported by @oclif/core). */
// biome-ignore lint/suspicious/noExplicitAny: must match the constraint of oclif's Command.parse
type AnyOutput = { [name: string]: any };

export abstract class VlmcCommand extends Command {
  static override enableJsonFlag = true;

  static override baseFlags = {
    config: Flags.string({
      char: 'c',
      summary:
        'Configuration file. Default: $ARCHIPELAGO_CONF, /etc/archipelago/archipelago.conf, or the embedded default.',
      helpValue: 'PATH',
      helpGroup: 'GLOBAL',
    }),
  };

  private configFlag: string | undefined;
  private loaded: LoadedConfig | undefined;
  private runtimePromise: Promise<Runtime> | undefined;
  /** Volumes left open after the command: held by this host before it started, or opened on purpose. */
  private readonly keep = new Set<string>();
  private failed = false;

  protected override async parse<F extends AnyOutput, B extends AnyOutput, A extends AnyOutput>(
    options?: Interfaces.Input<F, B, A>,
    argv?: string[],
  ): Promise<Interfaces.ParserOutput<F, B, A>> {
    const out = await super.parse(options, argv);
    const c = (out.flags as Record<string, unknown>).config;
    if (typeof c === 'string') this.configFlag = c;
    return out;
  }

  /** The configuration, loaded once (after `parse`, so `-c` is known). */
  protected configuration(): LoadedConfig {
    this.loaded ??= loadConfig(this.configFlag);
    return this.loaded;
  }

  /** The embedded runtime, opened on first use and closed in `finally`. */
  protected runtime(opts: Pick<RuntimeOptions, 'bulk'> = {}): Promise<Runtime> {
    if (!this.runtimePromise) {
      const loaded = this.configuration();
      process.umask(loaded.config.ARCHIPELAGO.UMASK);
      this.runtimePromise = openRuntime(loaded, opts);
    }
    return this.runtimePromise;
  }

  /** Leaves `name` open (locked by this host) after the command: `vlmc open`. */
  protected keepOpen(name: string): void {
    this.keep.add(name);
  }

  /**
   * Call before an operation on volume `name`. When this host already holds its lock (an earlier
   * `vlmc open` or `vlmc lock`), the volume is adopted as open in this process, so the operation
   * treats it as open and the lock is still held afterwards.
   */
  protected async adopt(name: string): Promise<void> {
    const rt = await this.runtime();
    const owner = await rt.blockerm.lockOwner(name);
    if (owner !== rt.identity) return;
    this.keep.add(name);
    if (rt.mapper.openVolumes().includes(name)) return;
    try {
      await rt.mapper.info(name);
    } catch (e) {
      if (ArchipelagoError.is(e, 'ENOENT_VOLUME')) return; // a lock on a name with no volume yet
      throw e;
    }
    await rt.mapper.openVolume(name);
  }

  protected override async catch(err: Interfaces.CommandError): Promise<void> {
    if (err instanceof Errors.ExitError) throw err;
    // A usage error means parse() ran and threw: do not let oclif warn that it never ran.
    this.parsed = true;
    this.report(err);
  }

  protected override async finally(err: Error | undefined): Promise<void> {
    if (this.runtimePromise) {
      let problem: unknown;
      const rt = await this.runtimePromise.catch(() => null);
      if (rt) {
        for (const name of rt.mapper.openVolumes()) {
          if (this.keep.has(name)) continue;
          try {
            await rt.composer.close(name);
          } catch (e) {
            problem ??= e;
          }
        }
        try {
          await rt.close({ keepLocks: true });
        } catch (e) {
          problem ??= e;
        }
      }
      if (problem !== undefined && !err) this.report(problem);
    }
    return super.finally(err);
  }

  /** Prints the error once: one line on stderr, or the JSON error object on stdout. */
  protected report(err: unknown): void {
    if (this.failed) return;
    this.failed = true;
    process.exitCode = 1;
    const r = describeError(err);
    if (this.jsonEnabled()) {
      process.stdout.write(`${JSON.stringify({ error: r }, jsonReplacer, 2)}\n`);
    } else {
      process.stderr.write(`vlmc: ${r.code}: ${r.message}\n`);
      if (r.code === INTERNAL && process.env.VLMC_DEBUG && err instanceof Error && err.stack) {
        process.stderr.write(`${err.stack}\n`);
      }
    }
  }

  protected override logJson(json: unknown): void {
    if (this.failed) return; // a failure after run() (closing) was reported instead
    process.stdout.write(`${JSON.stringify(json, jsonReplacer, 2)}\n`);
  }

  /** The run-state of mapped volumes for this configuration. */
  protected runState(): RunState {
    return new RunState(runDirectory(this.configuration()));
  }

  /** The live process holding `name` mapped (`vlmc map`), or null. */
  protected async holder(name: string): Promise<MappedStatus | null> {
    const e = await this.runState().read(name);
    return e?.alive ? e : null;
  }

  /** Fails with EBUSY when `name` is mapped: the holder owns its map until `vlmc unmap`. */
  protected async refuseMapped(name: string, action: string): Promise<void> {
    const h = await this.holder(name);
    if (h) {
      throw new ArchipelagoError(
        'EBUSY',
        `cannot ${action} "${name}": it is mapped at ${h.uri} (pid ${h.pid}); run "vlmc unmap ${name}" first`,
        {
          details: { volume: name, uri: h.uri, pid: h.pid },
        },
      );
    }
  }

  /** Human output only (suppressed with --json). */
  protected say(line: string): void {
    this.log(line);
  }

  /** True when a progress bar may be drawn: stderr is a terminal and --json is off. */
  protected progressAllowed(): boolean {
    return Boolean(process.stderr.isTTY) && !this.jsonEnabled();
  }
}
