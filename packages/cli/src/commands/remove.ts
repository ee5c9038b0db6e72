import { removeVolume } from '@archipelago/runtime';
import { Args } from '@oclif/core';
import { VlmcCommand } from '../base.js';

export default class Remove extends VlmcCommand {
  static override aliases = ['rm'];

  static override summary = 'Remove a volume or a snapshot.';

  static override description =
    `In-flight I/O is drained, the map is marked deleted, and the objects only this \
volume owns are deleted. Objects shared with snapshots or clones stay: they are still in use.`;

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
