import { listChildren } from '@archipelago/runtime';
import { Args } from '@oclif/core';
import { VlmcCommand } from '../base.js';

export default class Children extends VlmcCommand {
  static override summary = 'List the clones of a snapshot.';

  static override description =
    `The volumes created from the snapshot ("vlmc create NAME --snap SNAP"), under their current names. \
A flattened clone is no longer listed. Clones made by older versions (no lineage record) are not listed.`;

  static override examples = ['<%= config.bin %> <%= command.id %> vol1-monday'];

  static override args = {
    name: Args.string({ required: true, description: 'Snapshot.' }),
  };

  async run(): Promise<string[]> {
    const { args } = await this.parse(Children);
    const list = await listChildren(this.session(), args.name);
    for (const c of list) this.say(c);
    return list;
  }
}
