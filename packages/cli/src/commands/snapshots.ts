import type { SnapshotEntry } from '@archipelago/mapper';
import { listSnapshots } from '@archipelago/runtime';
import { Args } from '@oclif/core';
import { VlmcCommand } from '../base.js';

export default class Snapshots extends VlmcCommand {
  static override summary = 'List the snapshots of a volume, oldest first.';

  static override description =
    `Each snapshot records the volume it was taken of and when (the volume's epoch then), so renames of \
either keep the list. Snapshots made by older versions (no lineage record) are not listed.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> vol1',
    '<%= config.bin %> <%= command.id %> vol1 --json',
  ];

  static override args = {
    name: Args.string({ required: true, description: 'Volume.' }),
  };

  async run(): Promise<SnapshotEntry[]> {
    const { args } = await this.parse(Snapshots);
    const list = await listSnapshots(this.session(), args.name);
    for (const s of list) {
      const when = s.created > 0 ? `  ${new Date(s.created).toISOString()}` : '';
      this.say(`${String(s.ordinal).padStart(3)}  ${s.name}  (epoch ${s.epoch})${when}`);
    }
    return list;
  }
}
