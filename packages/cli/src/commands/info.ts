import type { VolumeInfo } from '@archipelago/mapper';
import type { Lineage } from '@archipelago/runtime';
import { Args } from '@oclif/core';
import { VlmcCommand } from '../base.js';
import { infoCommand } from '../fast/commands.js';
import { v0Flags, v0Load } from '../v0.js';

export default class Info extends VlmcCommand {
  static override summary = 'Show a volume: size, block size, epoch, objects, lock owner.';

  static override description =
    `"allocated" counts the blocks backed by an object (not zero blocks); "writable" \
those this volume owns and writes in place (the others are shared with a snapshot and copied on first write).

"parent" (a clone) is the snapshot it was cloned from, and "origin" (a snapshot) the volume it was taken \
of, as recorded when they were made (under their current names; "removed" when they are gone; a flattened \
clone has none). For maps made by older versions, which record neither, they are worked out from the object \
names: a clone that shares no block with any snapshot any more has no parent then, and several identical \
snapshots are all named.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> vol1',
    '<%= config.bin %> <%= command.id %> vol1 --json',
  ];

  static override args = {
    name: Args.string({ required: true, description: 'Volume or snapshot.' }),
  };

  static override flags = { ...v0Flags };

  async run(): Promise<VolumeInfo & Lineage> {
    const { args, flags } = await this.parse(Info);
    return infoCommand(this.session(), args.name, v0Load(flags), (line) => this.say(line));
  }
}
