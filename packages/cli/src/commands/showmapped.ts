import type { MappedStatus } from '@archipelago/runtime';
import { VlmcCommand } from '../base.js';
import { showmappedCommand } from '../fast/commands.js';

export default class Showmapped extends VlmcCommand {
  static override summary =
    'List the volumes mapped on this host: volume, NBD URI, device, FUSE file, vhost-user socket, pid.';

  static override description =
    `DEVICE is the kernel device (an nbd device, or the loop device over the FUSE file), FUSE the \
file of "vlmc map --fuse", VHOST-USER the socket of "vlmc map --vhost-user" ("-" when none). One \
endpoint process serves all the volumes of a configuration: they show the same PID. A mapping \
whose endpoint process is gone (a crash, kill -9) is shown as "stale"; "vlmc unmap" cleans it up, \
"vlmc map" maps it again.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --json',
  ];

  async run(): Promise<MappedStatus[]> {
    await this.parse(Showmapped);
    return showmappedCommand(this.session(), (line) => this.say(line));
  }
}
