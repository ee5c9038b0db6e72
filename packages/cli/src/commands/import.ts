import { Args, Flags } from '@oclif/core';
import { VlmcCommand } from '../base.js';
import { transferSummary } from '../format.js';
import { ProgressBar } from '../progress.js';
import { DEFAULT_IMPORT_INFLIGHT, importFile, type TransferStats } from '../transfer.js';

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
    // Bulk mode: the objects of the new volume need not be durable one by one (a crash in the
    // middle leaves a partial volume either way); everything is flushed, data first, before the
    // import reports success.
    const rt = await this.runtime({ bulk: true });
    let bar: ProgressBar | undefined;
    const stats = await importFile(rt, args.file, args.name, {
      inflight: flags.inflight,
      ...(this.progressAllowed()
        ? {
            onProgress: (done: number, total: number) => {
              bar ??= new ProgressBar('import', total);
              bar.update(done);
            },
          }
        : {}),
    }).finally(() => bar?.finish());
    this.say(transferSummary(`imported ${args.file} into ${args.name}`, stats));
    return stats;
  }
}
