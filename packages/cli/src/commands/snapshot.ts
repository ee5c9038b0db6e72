import type { VolumeInfo } from '@archipelago/mapper';
import { Args } from '@oclif/core';
import { VlmcCommand } from '../base.js';
import { snapshotCommand } from '../fast/commands.js';

export default class Snapshot extends VlmcCommand {
  static override summary = 'Take a read-only snapshot of a volume.';

  static override description =
    `The snapshot shares every object with the volume; the volume's next write to a \
shared block copies it first (copy-on-write). Taking a snapshot costs a rewrite of the map, never a copy of data. \
In-flight I/O is drained first. Clone the snapshot with "vlmc create NAME --snap SNAP".`;

  static override examples = ['<%= config.bin %> <%= command.id %> vol1 vol1-monday'];

  static override args = {
    name: Args.string({ required: true, description: 'Volume to snapshot.' }),
    snap: Args.string({ required: true, description: 'Name of the new snapshot.' }),
  };

  async run(): Promise<VolumeInfo> {
    const { args } = await this.parse(Snapshot);
    return snapshotCommand(this.session(), args.name, args.snap, (line) => this.say(line));
  }
}
