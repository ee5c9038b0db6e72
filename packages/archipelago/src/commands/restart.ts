import { type RestartResult, restart } from '@archipelago/runtime';
import { Args, Flags } from '@oclif/core';
import { ArchipelagoCommand } from '../base.js';

export default class Restart extends ArchipelagoCommand {
  static override summary = 'Restart all peers, or one, under mapped volumes too.';
  static override description =
    "Never refused for mapped volumes. While other processes use the segment (mapped volumes, running vlmc commands), the peers are restarted one at a time in [PEERS] ORDER (else ROLES) order on that segment: each stops (draining what it had taken) and starts again, and the clients wait for it, so an NBD client sees a short stall and no error. Otherwise all peers stop, the segment is destroyed and created again, and all start. The last step of the guide's peer-failure procedure.";
  static override examples = [
    '<%= config.bin %> restart',
    '<%= config.bin %> restart mapperd',
    '<%= config.bin %> restart -f',
  ];
  static override args = { role: Args.string({ description: 'One peer (a role of [PEERS] ROLES).' }) };
  static override flags = {
    force: Flags.boolean({
      char: 'f',
      summary:
        'Kill (SIGKILL) a peer that does not stop within 15 s instead of failing; its requests are sent again to its successor.',
    }),
  };

  async run(): Promise<RestartResult> {
    const { args, flags } = await this.parse(Restart);
    const loaded = this.configuration(flags.config);
    this.printNotices(loaded);
    return restart(loaded, args.role, { kill: flags.force }, this.sayLine);
  }
}
