import type { VolumeInfo } from '@archipelago/mapper';
import { Args } from '@oclif/core';
import { VlmcCommand } from '../base.js';
import { callControl } from '../endpoint/control.js';
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
    const holder = await this.holder(args.name);
    if (holder) {
      const info = (await callControl(holder.control, { op: 'info' })) as VolumeInfo;
      for (const line of infoLines({ ...info, epoch: BigInt(info.epoch) })) this.say(line);
      this.say(`mapped:      ${holder.uri} (pid ${holder.pid})`);
      return info;
    }
    const rt = await this.runtime();
    const info = await rt.mapper.info(args.name);
    for (const line of infoLines(info)) this.say(line);
    return info;
  }
}
