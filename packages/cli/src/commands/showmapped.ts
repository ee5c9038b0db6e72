import { listMapped, type MappedStatus } from '@archipelago/runtime';
import { VlmcCommand } from '../base.js';

export default class Showmapped extends VlmcCommand {
  static override summary = 'List the volumes mapped on this host: volume, NBD URI, device, pid.';

  static override description =
    `A mapping whose endpoint process is gone (a crash) is shown as "stale"; "vlmc unmap" cleans it up.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --json',
  ];

  async run(): Promise<MappedStatus[]> {
    await this.parse(Showmapped);
    const all = await listMapped(this.session());
    if (all.length === 0) this.say('no mapped volumes');
    else {
      const rows = [['VOLUME', 'URI', 'DEVICE', 'PID', 'STATE', 'MODE']];
      for (const e of all)
        rows.push([
          e.volume,
          e.uri,
          e.device ?? (e.vhostUser ? `vhost-user:${e.vhostUser}` : '-'),
          String(e.pid),
          e.alive ? 'mapped' : 'stale',
          e.readonly ? 'ro' : 'rw',
        ]);
      const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
      for (const r of rows)
        this.say(
          r
            .map((c, i) => c.padEnd(widths[i]!))
            .join('  ')
            .trimEnd(),
        );
    }
    return all;
  }
}
