import { DEFAULT_INFLIGHT, exportImage, type TransferStats } from '@archipelago/runtime';
import { Args, Flags } from '@oclif/core';
import { VlmcCommand } from '../base.js';
import { transferSummary } from '../format.js';

export default class Export extends VlmcCommand {
  static override summary = 'Write a volume or snapshot to a sparse raw image file.';

  static override description =
    `The file is created (or truncated) to the volume's size. Zero blocks and all-zero \
blocks are left as holes, the rest is written, and the file is synced at the end. A progress bar is drawn on stderr \
when it is a terminal.`;

  static override examples = ['<%= config.bin %> <%= command.id %> debian-12 /tmp/debian-12.raw'];

  static override args = {
    name: Args.string({ required: true, description: 'Volume or snapshot to read.' }),
    file: Args.string({ required: true, description: 'Raw image to write.' }),
  };

  static override flags = {
    inflight: Flags.integer({ summary: 'Blocks in flight.', default: DEFAULT_INFLIGHT, min: 1, max: 256 }),
  };

  async run(): Promise<TransferStats> {
    const { args, flags } = await this.parse(Export);
    const stats = await this.withProgress('export', (onProgress) =>
      exportImage(this.session(), args.name, args.file, { inflight: flags.inflight, ...onProgress }),
    );
    this.say(transferSummary(`exported ${args.name} to ${args.file}`, stats));
    return stats;
  }
}
