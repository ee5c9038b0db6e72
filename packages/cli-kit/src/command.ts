/**
 * The base of every command of `vlmc`, `archipelago` and `xseg`.
 *
 * - `--json` on every command (oclif's `enableJsonFlag`): the command's return value is printed
 *   as JSON on stdout (bigints as numbers when exact, else decimal strings).
 * - Every failure, a usage error of the parser included, reads the same in all three tools: one
 *   line `<tool>: <CODE>: <message>` on stderr and exit status 1, or with `--json`
 *   `{"error":{"code","message","details"}}` on stdout. Codes are listed in docs/errors.md;
 *   `INTERNAL` (a bug) also prints the stack when ARCHIPELAGO_DEBUG (or VLMC_DEBUG) is set.
 */
import { describeError as describeAnyError, type ErrorReport } from '@archipelago/libxseg';
import { Command, Errors, Flags, type Interfaces } from '@oclif/core';
import { jsonReplacer } from './json.js';
import { ProgressBar } from './progress.js';

export { jsonReplacer };

/**
 * Code, one-line message and details of any error a command can meet: a usage error of the
 * parser (missing or unexpected argument, unknown flag, bad option value) is EINVAL; everything
 * else as `describeError` of @archipelago/libxseg says.
 */
export function describeError(err: unknown): ErrorReport {
  if (err instanceof Errors.CLIError) {
    const message = err.message
      .replace(/\u001b\[[0-9;]*m/g, '')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !/^See more help with/.test(l))
      .join(' ');
    return { code: 'EINVAL', message, details: {} };
  }
  return describeAnyError(err);
}

/** `-c/--config PATH`, the configuration flag of `vlmc` and `archipelago`. */
export const configFlag = Flags.string({
  char: 'c',
  summary:
    'Configuration file. Default: $ARCHIPELAGO_CONF, /etc/archipelago/archipelago.conf, or the per-user default.',
  helpValue: 'PATH',
  helpGroup: 'GLOBAL',
});

export abstract class ToolCommand extends Command {
  static override enableJsonFlag = true;

  private failed = false;

  protected override async catch(err: Interfaces.CommandError): Promise<void> {
    if (err instanceof Errors.ExitError) throw err;
    // A usage error means parse() ran and threw: do not let oclif warn that it never ran.
    this.parsed = true;
    this.report(err);
  }

  /** Prints the error once: one line on stderr, or the JSON error object on stdout; exit status 1. */
  protected report(err: unknown): void {
    if (this.failed) return;
    this.failed = true;
    process.exitCode = 1;
    const r = describeError(err);
    if (this.jsonEnabled()) {
      process.stdout.write(`${JSON.stringify({ error: r }, jsonReplacer, 2)}\n`);
      return;
    }
    process.stderr.write(`${this.config.bin}: ${r.code}: ${r.message}\n`);
    const debug = process.env.ARCHIPELAGO_DEBUG || process.env.VLMC_DEBUG;
    if (r.code === 'INTERNAL' && debug && err instanceof Error && err.stack) {
      process.stderr.write(`${err.stack}\n`);
    }
  }

  /** True once a failure was reported (a later JSON result is then not printed). */
  protected get hasFailed(): boolean {
    return this.failed;
  }

  protected override logJson(json: unknown): void {
    // After a reported failure (e.g. while closing) the error was printed instead; undefined: the
    // command printed its own JSON.
    if (this.failed || json === undefined) return;
    process.stdout.write(`${JSON.stringify(json, jsonReplacer, 2)}\n`);
  }

  /** Human output only (suppressed with --json). */
  protected say(line: string): void {
    if (!this.jsonEnabled()) process.stdout.write(`${line}\n`);
  }

  /** True when a progress bar may be drawn: stderr is a terminal and --json is off. */
  protected progressAllowed(): boolean {
    return Boolean(process.stderr.isTTY) && !this.jsonEnabled();
  }

  /**
   * Runs a long operation, drawing a progress bar on stderr while it runs when one may be drawn:
   * `run` gets the `onProgress(done, total)` to pass on (or nothing).
   */
  protected async withProgress<T>(
    label: string,
    run: (progress: { onProgress?: (done: number, total: number) => void }) => Promise<T>,
  ): Promise<T> {
    if (!this.progressAllowed()) return run({});
    let bar: ProgressBar | undefined;
    try {
      return await run({
        onProgress: (done, total) => {
          bar ??= new ProgressBar(label, total);
          bar.update(done);
        },
      });
    } finally {
      bar?.finish();
    }
  }
}
