import { ArchipelagoCommand } from '../base.js';
import { type StatusReport, status } from '../daemons.js';

export default class Status extends ArchipelagoCommand {
  static override summary = 'Show each peer (running, not running, stale pidfile) and the mapped volumes.';

  async run(): Promise<StatusReport> {
    const { flags } = await this.parse(Status);
    const loaded = this.loadConfig(flags.config);
    const r = status(loaded);
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
