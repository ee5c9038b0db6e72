import type { VolumeInfo } from '@archipelago/mapper';
import { openVolume } from '@archipelago/runtime';
import { Args } from '@oclif/core';
import { VlmcCommand } from '../base.js';

export default class Open extends VlmcCommand {
  static override summary = 'Open a volume: take its lock for this host.';

  static override description =
    `The volume stays locked by this host until "vlmc close". Succeeds if this host has it \
open already; fails with ELOCKED, naming the owner, when another host holds it.`;

  static override examples = ['<%= config.bin %> <%= command.id %> vol1'];

  static override args = {
    name: Args.string({ required: true, description: 'Volume to open.' }),
  };

  async run(): Promise<VolumeInfo> {
    const { args } = await this.parse(Open);
    const info = await openVolume(this.session(), args.name);
    this.say(`opened ${args.name} (locked by ${info.lockOwner})`);
    return info;
  }
}
