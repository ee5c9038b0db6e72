import { start, stop } from '@archipelago/runtime';
import { Args, Flags } from '@oclif/core';
import { ArchipelagoCommand } from '../base.js';

export default class Restart extends ArchipelagoCommand {
  static override summary = 'Stop, then start, all peers or one.';
  static override description = 'The same checks as stop (mapped volumes refuse unless -f) and start.';
  static override args = { role: Args.string({ description: 'One peer (a role of [PEERS] ROLES).' }) };
  static override flags = {
    force: Flags.boolean({ char: 'f', summary: 'Restart even though volumes are mapped.' }),
  };

  async run(): Promise<{
    stopped: Awaited<ReturnType<typeof stop>>;
    started: Awaited<ReturnType<typeof start>>;
  }> {
    const { args, flags } = await this.parse(Restart);
    const loaded = this.configuration(flags.config);
    const stopped = await stop(loaded, args.role, { force: flags.force }, this.sayLine);
    const started = await start(loaded, args.role, this.sayLine);
    return { stopped, started };
  }
}
