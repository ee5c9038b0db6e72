import { formatSizeExact, parseSize } from '@archipelago/cli-kit';
import type { VolumeInfo } from '@archipelago/mapper';
import { resizeVolume } from '@archipelago/runtime';
import { Args, Flags } from '@oclif/core';
import { VlmcCommand } from '../base.js';

export default class Resize extends VlmcCommand {
  static override summary = 'Grow or shrink a volume.';

  static override description =
    `Growing adds zero blocks (they read as zeros and take no space). Shrinking drops \
the blocks past the new end; data there is lost. Snapshots cannot be resized.`;

  static override examples = ['<%= config.bin %> <%= command.id %> vol1 --size 20G'];

  static override args = {
    name: Args.string({ required: true, description: 'Volume to resize.' }),
  };

  static override flags = {
    size: Flags.string({
      char: 's',
      required: true,
      summary: 'New size (a bare number is MiB).',
      helpValue: 'SIZE',
    }),
  };

  async run(): Promise<VolumeInfo> {
    const { args, flags } = await this.parse(Resize);
    const info = await resizeVolume(this.session(), args.name, parseSize(flags.size));
    this.say(`resized ${info.name} to ${formatSizeExact(info.size)}`);
    return info;
  }
}
