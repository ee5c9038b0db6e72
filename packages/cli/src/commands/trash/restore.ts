import type { VolumeInfo } from '@archipelago/mapper';
import { restoreFromTrash } from '@archipelago/runtime';
import { Args, Flags } from '@oclif/core';
import { VlmcCommand } from '../../base.js';

export default class TrashRestore extends VlmcCommand {
  static override summary = 'Bring a removed volume or snapshot back from the trash.';

  static override description =
    `The volume (or snapshot) comes back under its name, with the data it had when it was \
removed. Refused when that name was used again since (remove or rename the new one first). When \
the name was removed more than once, the latest removal is restored, or the one --entry names \
(the "entry" of "vlmc trash ls --json").`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> vol1',
    '<%= config.bin %> <%= command.id %> vol1 --entry=-trash.019ab2c3d4e5.vol1 --json',
  ];

  static override args = {
    name: Args.string({ required: true, description: 'Name the volume or snapshot had.' }),
  };

  static override flags = {
    entry: Flags.string({
      summary: 'Which trash entry of NAME (default: the latest removed).',
      helpValue: 'ENTRY',
    }),
  };

  async run(): Promise<VolumeInfo> {
    const { args, flags } = await this.parse(TrashRestore);
    const info = await restoreFromTrash(
      this.session(),
      args.name,
      flags.entry === undefined ? {} : { entry: flags.entry },
    );
    this.say(`restored ${info.name}${info.readonly ? ' (snapshot)' : ''}`);
    return info;
  }
}
