import { type StatusReport, status } from '@archipelago/runtime';
import { Args } from '@oclif/core';
import { ArchipelagoCommand } from '../base.js';

export default class Status extends ArchipelagoCommand {
  static override summary =
    'Show the segment (and its heap use), each peer (running, not running, stale pidfile) and the mapped volumes.';
  static override description =
    'The heap use is what the requests in flight hold now: used / total MiB; with --json, segment.heap has used, size, free and largestFree (bytes) and requests {held, total}.';
  static override examples = ['<%= config.bin %> status', '<%= config.bin %> status mapperd --json'];
  static override args = { role: Args.string({ description: 'One peer (a role of [PEERS] ROLES).' }) };

  async run(): Promise<StatusReport> {
    const { args, flags } = await this.parse(Status);
    const r = await status(this.configuration(flags.config), args.role);
    const h = r.segment.heap;
    const mib = (b: number) => (b / 2 ** 20).toFixed(1);
    this.say(
      `segment ${r.segment.name}: ${r.segment.exists ? 'exists' : 'absent'}${h ? `, heap ${mib(h.used)} / ${mib(h.size)} MiB used (${((100 * h.used) / h.size).toFixed(1)}%), ${h.requests.held} requests held` : ''}`,
    );
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
