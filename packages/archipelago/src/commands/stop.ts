import { stop } from '@archipelago/runtime';
import { Args, Flags } from '@oclif/core';
import { ArchipelagoCommand } from '../base.js';

export default class Stop extends ArchipelagoCommand {
  static override summary = 'Stop the peers in reverse [PEERS] ORDER (else ROLES) order, or one peer.';
  static override description =
    'SIGTERMs each peer and waits up to 15 s for it to drain and exit; stale pidfiles are removed. Stopping all peers then destroys the segment, unless other processes still use it (mapped volumes, vlmc commands): it is kept for them and the next start joins it. Refused while volumes are mapped, unless -f: use restart to restart the peers under mapped volumes.';
  static override examples = [
    '<%= config.bin %> stop',
    '<%= config.bin %> stop -f',
    '<%= config.bin %> stop blockerm',
  ];
  static override args = { role: Args.string({ description: 'One peer (a role of [PEERS] ROLES).' }) };
  static override flags = {
    force: Flags.boolean({
      char: 'f',
      summary:
        'Stop even though volumes are mapped: their I/O waits for "archipelago start" and fails after 30 s.',
    }),
  };

  async run(): Promise<Awaited<ReturnType<typeof stop>>> {
    const { args, flags } = await this.parse(Stop);
    return stop(this.configuration(flags.config), args.role, { force: flags.force }, this.sayLine);
  }
}
