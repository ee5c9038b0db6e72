/**
 * The base of every `archipelago` command: `-c/--config`, `--json`, and errors as one line
 * `archipelago: <CODE>: <message>` on stderr with exit status 1 (or `{"error":{...}}` with --json).
 */
import { type LoadedConfig, loadConfig } from '@archipelago/cli';
import { ArchipelagoError } from '@archipelago/libxseg';
import { Command, Errors, Flags, type Interfaces } from '@oclif/core';

export interface ErrorReport {
  code: string;
  message: string;
  details: Record<string, unknown>;
}

export function describeError(err: unknown): ErrorReport {
  if (ArchipelagoError.isInstance(err))
    return { code: err.code, message: err.message, details: { ...err.details } };
  if (err instanceof Errors.CLIError)
    return { code: 'EINVAL', message: err.message.split('\n')[0] ?? '', details: {} };
  return { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err), details: {} };
}

export abstract class ArchipelagoCommand extends Command {
  static override enableJsonFlag = true;
  static override baseFlags = {
    config: Flags.string({
      char: 'c',
      summary:
        'Configuration file (default: $ARCHIPELAGO_CONF, /etc/archipelago/archipelago.conf, or the per-user default).',
    }),
  };
  private failed = false;

  protected loadConfig(path: string | undefined): LoadedConfig {
    return loadConfig(path);
  }

  protected override async catch(err: Interfaces.CommandError): Promise<void> {
    if (err instanceof Errors.ExitError) throw err;
    this.parsed = true;
    this.failed = true;
    process.exitCode = 1;
    const r = describeError(err);
    if (this.jsonEnabled()) process.stdout.write(`${JSON.stringify({ error: r }, null, 2)}\n`);
    else process.stderr.write(`archipelago: ${r.code}: ${r.message}\n`);
  }

  protected override logJson(json: unknown): void {
    if (this.failed || json === undefined) return; // undefined: the command printed its own JSON
    process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
  }

  protected say = (line: string): void => {
    if (!this.jsonEnabled()) process.stdout.write(`${line}\n`);
  };
}
