import type { VolumeSummary } from '@archipelago/mapper';
import { listVolumes } from '@archipelago/runtime';
import { VlmcCommand } from '../base.js';

export default class List extends VlmcCommand {
  static override aliases = ['ls'];

  static override summary = 'List volumes and snapshots.';

  static override description =
    'Prints one name per line; with --json, one record per volume (name, size, blocksize, epoch, readonly, version, objects).';

  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> ls --json'];

  async run(): Promise<VolumeSummary[]> {
    await this.parse(List);
    const all = await listVolumes(this.session());
    for (const v of all) this.say(v.name);
    return all;
  }
}
