import type { VolumeSummary } from '@archipelago/mapper';
import { listVolumes } from '@archipelago/runtime';
import { VlmcCommand } from '../base.js';
import { listLine } from '../format.js';

export default class List extends VlmcCommand {
  static override aliases = ['ls'];

  static override summary = 'List volumes and snapshots.';

  static override description =
    'Prints one name per line, snapshots marked "(snapshot)" and interrupted imports "(incomplete)"; with --json, one record per volume (name, size, blocksize, epoch, readonly, snapshot, incomplete, version, objects).';

  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> ls --json'];

  async run(): Promise<Array<VolumeSummary & { snapshot: boolean }>> {
    await this.parse(List);
    const all = (await listVolumes(this.session())).map((v) => ({ ...v, snapshot: v.readonly }));
    for (const v of all) this.say(listLine(v));
    return all;
  }
}
