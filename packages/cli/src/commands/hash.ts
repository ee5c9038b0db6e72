import { formatSizeExact } from '@archipelago/cli-kit';
import { type HashResult, hashSnapshot } from '@archipelago/runtime';
import { Args, Flags } from '@oclif/core';
import { VlmcCommand } from '../base.js';

export default class Hash extends VlmcCommand {
  static override summary =
    'Content-address a snapshot: build a read-only hashed map named by its Merkle root.';

  static override description =
    `Every non-zero block of the snapshot is stored once under the SHA-256 of its bytes (trailing \
zeros stripped, as Pithos does), so identical blocks of any image or volume share one object. \
The result is a read-only map of those content names, zero blocks kept, named by the Pithos \
top-level (Merkle) hash, which is printed. Clone it like any snapshot: \
vlmc create <volume> --snap <name>. Hashing the same content again finds the same map. \
A progress bar is drawn on stderr when it is a terminal.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> debian-12-snap',
    '<%= config.bin %> create vm1 --snap $(<%= config.bin %> <%= command.id %> debian-12-snap)',
  ];

  static override args = {
    snapshot: Args.string({ required: true, description: 'Snapshot (read-only map) to hash.' }),
  };

  static override flags = {
    parallel: Flags.integer({ summary: 'Blocks hashed at once.', default: 8, min: 1, max: 64 }),
  };

  async run(): Promise<HashResult> {
    const { args, flags } = await this.parse(Hash);
    const out = await this.withProgress('hash', (onProgress) =>
      hashSnapshot(this.session(), args.snapshot, { parallelism: flags.parallel, ...onProgress }),
    );
    if (this.progressAllowed()) {
      process.stderr.write(
        `hashed ${args.snapshot} (${formatSizeExact(out.size)}, ${out.contentBlocks} content blocks) in ${out.seconds.toFixed(2)} s${out.existed ? ' (already hashed)' : ''}\n`,
      );
    }
    this.say(out.name);
    return out;
  }
}
