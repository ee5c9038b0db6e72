import { ArchipelagoError } from '@archipelago/libxseg';
import type { VolumeInfo } from '@archipelago/mapper';
import { Args, Flags } from '@oclif/core';
import { VlmcCommand } from '../base.js';
import { formatSize, parseSize } from '../size.js';

export default class Create extends VlmcCommand {
  static override summary = 'Create a volume: empty, or as a thin clone of a snapshot.';

  static override description =
    `Without --snap, creates an empty volume of --size bytes: every block reads as zeros and \
takes no space until written. With --snap, creates a copy-on-write clone of that snapshot; \
its size is the snapshot's unless --size asks for more. At least one of --size and --snap is needed.

SIZE is a number with an optional binary suffix: B, K, M, G, T, P (KiB, MiB... also work). \
A bare number means MiB, as in the original vlmc.`;

  static override examples = [
    { description: 'An empty 10 GiB volume', command: '<%= config.bin %> <%= command.id %> vol1 --size 10G' },
    {
      description: 'A clone of snapshot snap1',
      command: '<%= config.bin %> <%= command.id %> vol2 --snap snap1',
    },
    {
      description: 'A clone grown to 20 GiB',
      command: '<%= config.bin %> <%= command.id %> vol3 --snap snap1 -s 20G',
    },
  ];

  static override args = {
    name: Args.string({ required: true, description: 'Name of the new volume.' }),
  };

  static override flags = {
    size: Flags.string({
      char: 's',
      summary: 'Size of the volume (a bare number is MiB).',
      helpValue: 'SIZE',
    }),
    snap: Flags.string({ summary: 'Snapshot to clone the volume from.', helpValue: 'SNAP' }),
  };

  async run(): Promise<VolumeInfo> {
    const { args, flags } = await this.parse(Create);
    if (flags.size === undefined && flags.snap === undefined) {
      throw new ArchipelagoError('EINVAL_SIZE', 'create needs --size SIZE, --snap SNAP, or both');
    }
    const size = flags.size === undefined ? undefined : parseSize(flags.size);
    const rt = await this.runtime();
    // The mapper reports the lock it held while creating; by now it is released.
    const settled = async (v: VolumeInfo) => ({ ...v, lockOwner: await rt.blockerm.lockOwner(v.name) });
    if (flags.snap === undefined) {
      const info = await settled(await rt.mapper.create(args.name, { size: size! }));
      this.say(`created volume ${info.name} (${formatSize(info.size)})`);
      return info;
    }
    const info = await settled(
      await rt.mapper.clone(flags.snap, args.name, size === undefined ? {} : { size }),
    );
    this.say(`created volume ${info.name} (${formatSize(info.size)}) as a clone of snapshot ${flags.snap}`);
    return info;
  }
}
