import { closeVolume } from '@archipelago/runtime';
import { Args } from '@oclif/core';
import { VlmcCommand } from '../base.js';

export default class Close extends VlmcCommand {
  static override summary = 'Close a volume: drain its I/O and release its lock.';

  static override description =
    `Ends a "vlmc open". Closing a volume nobody holds succeeds; closing one another host \
holds fails with ELOCKED (break such a lock with "vlmc unlock -f").`;

  static override examples = ['<%= config.bin %> <%= command.id %> vol1'];

  static override args = {
    name: Args.string({ required: true, description: 'Volume to close.' }),
  };

  async run(): Promise<{ name: string; closed: true }> {
    const { args } = await this.parse(Close);
    const { mapped } = await closeVolume(this.session(), args.name);
    this.say(
      mapped
        ? `closed ${args.name} (still mapped at ${mapped.uri}; its next I/O reopens it)`
        : `closed ${args.name}`,
    );
    return { name: args.name, closed: true };
  }
}
