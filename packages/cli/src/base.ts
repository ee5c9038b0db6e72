/**
 * The base of every `vlmc` command: the tools' common base (`--json`, one error format), plus
 * `-c/--config` and a `Session` (configuration, runtime, volumes touched), closed in `finally` so
 * that no command leaves a volume it opened implicitly locked behind it.
 */
import { configFlag, ToolCommand } from '@archipelago/cli-kit';
import { Session } from '@archipelago/runtime';
import type { Interfaces } from '@oclif/core';

/** oclif's FlagOutput/ArgOutput (not exported by @oclif/core). */
// biome-ignore lint/suspicious/noExplicitAny: must match the constraint of oclif's Command.parse
type AnyOutput = { [name: string]: any };

export abstract class VlmcCommand extends ToolCommand {
  static override baseFlags = { config: configFlag };

  private configPath: string | undefined;
  private current: Session | undefined;

  protected override async parse<F extends AnyOutput, B extends AnyOutput, A extends AnyOutput>(
    options?: Interfaces.Input<F, B, A>,
    argv?: string[],
  ): Promise<Interfaces.ParserOutput<F, B, A>> {
    const out = await super.parse(options, argv);
    const c = (out.flags as Record<string, unknown>).config;
    if (typeof c === 'string') this.configPath = c;
    return out;
  }

  /** This command's session (after `parse`, so `-c` is known). */
  protected session(): Session {
    this.current ??= new Session({
      ...(this.configPath === undefined ? {} : { config: this.configPath }),
      notice: (line) => process.stderr.write(`vlmc: notice: ${line}\n`),
    });
    return this.current;
  }

  protected override async finally(err: Error | undefined): Promise<void> {
    try {
      await this.current?.close();
    } catch (e) {
      if (!err) this.report(e);
    }
    return super.finally(err);
  }
}
