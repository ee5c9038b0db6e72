import type { VolumeInfo } from '@archipelago/mapper';
import { renameVolume } from '@archipelago/runtime';
import { Args } from '@oclif/core';
import { VlmcCommand } from '../base.js';

export default class Rename extends VlmcCommand {
  static override summary = 'Rename a volume or a snapshot.';

  static override description =
    'The objects keep their names; only the map moves. The new name must be free.';

  static override examples = ['<%= config.bin %> <%= command.id %> vol1 web-disk'];

  static override args = {
    name: Args.string({ required: true, description: 'Current name.' }),
    new: Args.string({ required: true, description: 'New name.' }),
  };

  async run(): Promise<VolumeInfo> {
    const { args } = await this.parse(Rename);
    const info = await renameVolume(this.session(), args.name, args.new);
    this.say(`renamed ${args.name} to ${info.name}`);
    return info;
  }
}
