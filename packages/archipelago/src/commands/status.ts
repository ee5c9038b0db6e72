import { type StatusReport, status } from '@archipelago/runtime';
import { Args } from '@oclif/core';
import { ArchipelagoCommand } from '../base.js';

export default class Status extends ArchipelagoCommand {
  static override summary = 'Show each peer (running, not running, stale pidfile) and the mapped volumes.';
  static override examples = ['<%= config.bin %> status', '<%= config.bin %> status mapperd --json'];
  static override args = { role: Args.string({ description: 'One peer (a role of [PEERS] ROLES).' }) };

  async run(): Promise<StatusReport> {
    const { args, flags } = await this.parse(Status);
    const r = await status(this.configuration(flags.config), args.role);
    this.say(`segment ${r.segment.name}: ${r.segment.exists ? 'exists' : 'absent'}`);
    for (const p of r.peers) {
      if (p.state === 'embedded') this.say(`${p.role}: ${p.note}`);
      else this.say(`${p.role}: ${p.state}${p.pid ? ` (pid ${p.pid})` : ''}`);
    }
    this.say(
      r.mapped.length === 0
        ? 'mapped volumes: none'
        : `mapped volumes: ${r.mapped.map((v) => `${v.volume} (pid ${v.pid})`).join(', ')}`,
    );
    return r;
  }
}
