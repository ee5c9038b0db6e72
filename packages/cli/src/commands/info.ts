import type { VolumeInfo } from '@archipelago/mapper';
import { volumeInfo } from '@archipelago/runtime';
import { Args } from '@oclif/core';
import { VlmcCommand } from '../base.js';
import { infoLines } from '../format.js';

export default class Info extends VlmcCommand {
  static override summary = 'Show a volume: size, block size, epoch, objects, lock owner.';

  static override description =
    `"allocated" counts the blocks backed by an object (not zero blocks); "writable" \
those this volume owns and writes in place (the others are shared with a snapshot and copied on first write).`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> vol1',
    '<%= config.bin %> <%= command.id %> vol1 --json',
  ];

  static override args = {
    name: Args.string({ required: true, description: 'Volume or snapshot.' }),
  };

  async run(): Promise<VolumeInfo> {
    const { args } = await this.parse(Info);
    const { info, mapped } = await volumeInfo(this.session(), args.name);
    for (const line of infoLines(info)) this.say(line);
    if (mapped) this.say(`mapped:      ${mapped.uri} (pid ${mapped.pid})`);
    return info;
  }
}
