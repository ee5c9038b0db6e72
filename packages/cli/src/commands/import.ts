import { DEFAULT_IMPORT_INFLIGHT, importImage, type TransferStats } from '@archipelago/runtime';
import { Args, Flags } from '@oclif/core';
import { VlmcCommand } from '../base.js';
import { transferSummary } from '../format.js';

export default class Import extends VlmcCommand {
  static override summary = 'Create a volume from a raw image file.';

  static override description =
    `The new volume gets the file's size (it must not exist yet). The file is read block \
by block; all-zero blocks are skipped and stay zero blocks, taking no space. If the import fails, the half-filled \
volume is removed. A progress bar is drawn on stderr when it is a terminal.`;

  static override examples = ['<%= config.bin %> <%= command.id %> debian-12.raw debian-12'];

  static override args = {
    file: Args.string({ required: true, description: 'Raw image to read.' }),
    name: Args.string({ required: true, description: 'Name of the new volume.' }),
  };

  static override flags = {
    inflight: Flags.integer({
      summary: 'Blocks in flight.',
      default: DEFAULT_IMPORT_INFLIGHT,
      min: 1,
      max: 256,
    }),
  };

  async run(): Promise<TransferStats> {
    const { args, flags } = await this.parse(Import);
    const stats = await this.withProgress('import', (onProgress) =>
      importImage(this.session(), args.file, args.name, { inflight: flags.inflight, ...onProgress }),
    );
    this.say(transferSummary(`imported ${args.file} into ${args.name}`, stats));
    return stats;
  }
}
