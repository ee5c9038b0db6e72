import type { VolumeInfo } from '@archipelago/mapper';
import { type Lineage, volumeInfo } from '@archipelago/runtime';
import { Args } from '@oclif/core';
import { VlmcCommand } from '../base.js';
import { infoLines } from '../format.js';
import { v0Flags, v0Load } from '../v0.js';

export default class Info extends VlmcCommand {
  static override summary = 'Show a volume: size, block size, epoch, objects, lock owner.';

  static override description =
    `"allocated" counts the blocks backed by an object (not zero blocks); "writable" \
those this volume owns and writes in place (the others are shared with a snapshot and copied on first write).

"parent" (a clone) is the snapshot whose blocks it still shares, and "origin" (a snapshot) the volume whose \
data it holds. Maps record neither: they are worked out from the object names, so a clone that shares no \
block with any snapshot any more has no parent, and several identical snapshots are all named.`;

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
    const { info, mapped } = await volumeInfo(this.session(), args.name, {
      lineage: true,
      load: v0Load(flags),
    });
    for (const line of infoLines(info)) this.say(line);
    if (mapped) this.say(`mapped:      ${mapped.uri} (pid ${mapped.pid})`);
    return info;
  }
}
