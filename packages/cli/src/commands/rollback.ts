import type { VolumeInfo } from '@archipelago/mapper';
import { rollbackVolume } from '@archipelago/runtime';
import { Args } from '@oclif/core';
import { VlmcCommand } from '../base.js';

export default class Rollback extends VlmcCommand {
  static override summary = "Roll a volume back to one of its snapshots: its contents become the snapshot's.";

  static override description =
    `A map change, never a copy of data: the volume takes the snapshot's blocks (shared, so its next \
write to each copies it first), its size, and a new epoch. Whatever the volume held since is gone from it \
(snapshot it first to keep it). The snapshot must be of the volume's lineage: a snapshot taken of it, or the \
snapshot it was cloned from. Crash-safe: killed at any point, the volume is rolled back or untouched. A mapped \
volume is rolled back by its holder, its I/O drained first, when its size stays (else unmap it first); \
with the daemons running (archipelago start) mapperd rolls the volume back, and a mapped volume is refused: \
unmap it first.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> vol1 vol1-monday',
    '<%= config.bin %> snapshots vol1    # which snapshots vol1 can go back to',
  ];

  static override args = {
    name: Args.string({ required: true, description: 'Volume to roll back.' }),
    snap: Args.string({ required: true, description: 'Snapshot of its lineage.' }),
  };

  async run(): Promise<VolumeInfo> {
    const { args } = await this.parse(Rollback);
    const { name, snap } = args;
    const info = await rollbackVolume(this.session(), name, snap);
    this.say(`rolled ${name} back to ${snap}`);
    return info;
  }
}
