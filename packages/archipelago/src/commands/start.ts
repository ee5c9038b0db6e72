import { type StartResult, start } from '@archipelago/runtime';
import { Args } from '@oclif/core';
import { ArchipelagoCommand } from '../base.js';

export default class Start extends ArchipelagoCommand {
  static override summary = 'Start the peers in [PEERS] ORDER (else ROLES) order, or one peer.';
  static override description =
    'Refuses when a peer is already running, and when [XSEG] SEGMENT_SIZE is below what the peers need (256 MiB + nr_ops × the largest request of each peer: 4 MiB for a blocker, 512 KiB for mapperd and vlmcd; the message gives the number). Keys that have no effect here are named once on stderr. Each peer must write its pidfile within 3 s; on a failure the peers this command started are stopped again. While mapperd and vlmcd run, vlmc and vlmc map go through them.';
  static override examples = [
    '<%= config.bin %> -c archipelago.conf start',
    '<%= config.bin %> start blockerb',
  ];
  static override args = { role: Args.string({ description: 'One peer (a role of [PEERS] ROLES).' }) };

  async run(): Promise<{ peers: StartResult[] }> {
    const { args, flags } = await this.parse(Start);
    const loaded = this.configuration(flags.config);
    this.printNotices(loaded);
    return { peers: await start(loaded, args.role, this.sayLine) };
  }
}
