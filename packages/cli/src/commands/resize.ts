import type { VolumeInfo } from '@archipelago/mapper';
import { Args, Flags } from '@oclif/core';
import { VlmcCommand } from '../base.js';
import { formatSize, parseSize } from '../size.js';

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
    await this.refuseMapped(args.name, 'resize');
    const size = parseSize(flags.size);
    const rt = await this.runtime();
    await this.adopt(args.name);
    const resized = await rt.composer.frozen(args.name, () => rt.mapper.resize(args.name, size));
    // The mapper reports the lock it held while resizing; it is released by now unless the volume is open.
    const info = { ...resized, lockOwner: await rt.blockerm.lockOwner(args.name) };
    this.say(`resized ${info.name} to ${formatSize(info.size)}`);
    return info;
  }
}
