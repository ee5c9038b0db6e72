import type { VolumeInfo } from '@archipelago/mapper';
import { VlmcCommand } from '../base.js';

export default class List extends VlmcCommand {
  static override aliases = ['ls'];

  static override summary = 'List volumes and snapshots.';

  static override description =
    'Prints one name per line; with --json, one record per volume (as "vlmc info").';

  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> ls --json'];

  async run(): Promise<VolumeInfo[]> {
    await this.parse(List);
    const rt = await this.runtime();
    const all = await rt.mapper.list();
    for (const v of all) this.say(v.name);
    return all;
  }
}
