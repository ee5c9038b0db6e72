import { type StartResult, start } from '@archipelago/runtime';
import { Args } from '@oclif/core';
import { ArchipelagoCommand } from '../base.js';

export default class Start extends ArchipelagoCommand {
  static override summary = 'Start the peers in [PEERS] ROLES order, or one peer.';
  static override description =
    'Refuses when a peer is already running. Each peer must write its pidfile within 3 s; on a failure the peers this command started are stopped again. While mapperd and vlmcd run, vlmc and vlmc map go through them.';
  static override examples = [
    '<%= config.bin %> -c archipelago.conf start',
    '<%= config.bin %> start blockerb',
  ];
  static override args = { role: Args.string({ description: 'One peer (a role of [PEERS] ROLES).' }) };

  async run(): Promise<{ peers: StartResult[] }> {
    const { args, flags } = await this.parse(Start);
    return { peers: await start(this.configuration(flags.config), args.role, this.sayLine) };
  }
}
