/**
 * The base of every `archipelago` command: the tools' common base (`--json`, one error format)
 * and `-c/--config`.
 */
import { configFlag, ToolCommand } from '@archipelago/cli-kit';
import { configNotices, type LoadedConfig, loadConfig } from '@archipelago/runtime';

export abstract class ArchipelagoCommand extends ToolCommand {
  static override baseFlags = { config: configFlag };

  /** The configuration `-c` names (else ARCHIPELAGO_CONF, /etc/archipelago/archipelago.conf, the default). */
  protected configuration(path: string | undefined): LoadedConfig {
    return loadConfig(path);
  }

  /**
   * Says on stderr, once, each key of the file that has no effect here and why
   * (`configNotices`); stdout (and --json) is untouched.
   */
  protected printNotices(loaded: LoadedConfig): void {
    for (const n of configNotices(loaded)) process.stderr.write(`${this.config.bin}: notice: ${n}\n`);
  }

  /** Progress lines of start/stop (suppressed with --json). */
  protected readonly sayLine = (line: string): void => this.say(line);
}
