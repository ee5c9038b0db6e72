import { ArchipelagoError } from '@archipelago/libxseg';
import { DEFAULT_INFLIGHT, exportImage, type TransferStats } from '@archipelago/runtime';
import { Args, Flags } from '@oclif/core';
import { VlmcCommand } from '../base.js';
import { transferSummary } from '../format.js';
import { v0Flags, v0Load } from '../v0.js';

export default class Export extends VlmcCommand {
  static override summary = 'Write a volume or snapshot to a sparse raw image file, or to stdout (-).';

  static override description =
    `The file is created (or truncated) to the volume's size. Zero blocks and all-zero \
blocks are left as holes, the rest is written, and the file is synced at the end. A progress bar is drawn on stderr \
when it is a terminal.

With FILE "-" the volume's bytes go to stdout in order, zeros included (as \`rbd export NAME -\`), and nothing \
else does: the summary goes to stderr when it is a terminal, and --json is refused.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> debian-12 /tmp/debian-12.raw',
    '<%= config.bin %> <%= command.id %> debian-12 - | gzip > debian-12.raw.gz',
    '<%= config.bin %> <%= command.id %> debian-12 - | ssh otherhost vlmc import - debian-12',
  ];

  static override args = {
    name: Args.string({ required: true, description: 'Volume or snapshot to read.' }),
    file: Args.string({ required: true, description: 'Raw image to write; - for stdout.' }),
  };

  static override flags = {
    inflight: Flags.integer({ summary: 'Blocks in flight.', default: DEFAULT_INFLIGHT, min: 1, max: 256 }),
    ...v0Flags,
  };

  async run(): Promise<TransferStats> {
    const { args, flags } = await this.parse(Export);
    if (args.file === '-') {
      if (this.jsonEnabled()) {
        throw new ArchipelagoError(
          'EINVAL',
          'export to - writes the volume to stdout: --json cannot share it',
        );
      }
      const stats = await this.withProgress('export', (onProgress) =>
        exportImage(this.session(), args.name, process.stdout, {
          inflight: flags.inflight,
          load: v0Load(flags),
          ...onProgress,
        }),
      );
      if (process.stderr.isTTY)
        process.stderr.write(`${transferSummary(`exported ${args.name} to stdout`, stats)}\n`);
      return stats;
    }
    const stats = await this.withProgress('export', (onProgress) =>
      exportImage(this.session(), args.name, args.file, {
        inflight: flags.inflight,
        load: v0Load(flags),
        ...onProgress,
      }),
    );
    this.say(transferSummary(`exported ${args.name} to ${args.file}`, stats));
    return stats;
  }
}
