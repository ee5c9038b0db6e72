import type { VolumeInfo } from '@archipelago/mapper';
import { Args, Flags } from '@oclif/core';
import { VlmcCommand } from '../base.js';
import { createCommand } from '../fast/commands.js';
import { v0Flags, v0Load } from '../v0.js';

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
      description: 'A clone of a Pithos v0 map (a file of 5000000 bytes), as the Ganeti create script does',
      command: '<%= config.bin %> <%= command.id %> vol4 --snap 5f1c...e9 --v0-size 5000000',
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
    ...v0Flags,
  };

  async run(): Promise<VolumeInfo> {
    const { args, flags } = await this.parse(Create);
    return createCommand(
      this.session(),
      args.name,
      { size: flags.size, snap: flags.snap, load: () => v0Load(flags) },
      (line) => this.say(line),
    );
  }
}
