import { removeVolume } from '@archipelago/runtime';
import { Args } from '@oclif/core';
import { VlmcCommand } from '../base.js';

export default class Remove extends VlmcCommand {
  static override aliases = ['rm'];

  static override summary = 'Remove a volume or a snapshot.';

  static override description =
    `In-flight I/O is drained and the volume is gone: info, open and map say it does not exist, and \
the name can be created again. Its data goes to the trash ("vlmc trash ls"), from where "vlmc trash \
restore NAME" brings it back until the garbage collection drops it ([mapperd] trash_ttl seconds \
later; 0, the default: the next gc). Clones of a removed snapshot keep their data. An interrupted \
import (an incomplete volume) is deleted at once.`;

  static override examples = ['<%= config.bin %> <%= command.id %> vol1', '<%= config.bin %> rm vol1'];

  static override args = {
    name: Args.string({ required: true, description: 'Volume or snapshot to remove.' }),
  };

  async run(): Promise<{ name: string; removed: true }> {
    const { args } = await this.parse(Remove);
    const r = await removeVolume(this.session(), args.name);
    this.say(`removed ${r.name}`);
    return r;
  }
}
