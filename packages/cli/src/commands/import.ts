import { parseSize } from '@archipelago/cli-kit';
import { ArchipelagoError } from '@archipelago/libxseg';
import { DEFAULT_IMPORT_INFLIGHT, importImage, type TransferStats } from '@archipelago/runtime';
import { Args, Flags } from '@oclif/core';
import { VlmcCommand } from '../base.js';
import { transferSummary } from '../format.js';

export default class Import extends VlmcCommand {
  static override summary = 'Create a volume from a raw image file, or from stdin (-).';

  static override description =
    `The new volume gets the file's size (it must not exist yet). The file is read block \
by block; all-zero blocks are skipped and stay zero blocks, taking no space. If the import fails, the half-filled \
volume is removed (an import killed midway leaves it incomplete: \`vlmc info\` says so, nothing can open it, \
\`vlmc remove\` removes it). A progress bar is drawn on stderr when it is a terminal.

With FILE "-" the image is read from stdin (as \`rbd import - NAME\`), which has no size up front: without \
--size the volume grows as data arrives and takes the size of what was read; with --size it has that size, \
the input may be shorter (the rest reads as zeros) but not longer.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> debian-12.raw debian-12',
    'xzcat debian-12.raw.xz | <%= config.bin %> <%= command.id %> - debian-12',
    '<%= config.bin %> export debian-12 - | <%= config.bin %> <%= command.id %> - debian-12-copy',
  ];

  static override args = {
    file: Args.string({ required: true, description: 'Raw image to read; - for stdin.' }),
    name: Args.string({ required: true, description: 'Name of the new volume.' }),
  };

  static override flags = {
    size: Flags.string({
      char: 's',
      summary: 'With - (stdin): the volume size (a bare number is MiB); default: what stdin holds.',
      helpValue: 'SIZE',
    }),
    inflight: Flags.integer({
      summary: 'Blocks in flight.',
      default: DEFAULT_IMPORT_INFLIGHT,
      min: 1,
      max: 256,
    }),
  };

  async run(): Promise<TransferStats> {
    const { args, flags } = await this.parse(Import);
    if (args.file === '-') {
      const size = flags.size === undefined ? {} : { size: parseSize(flags.size) };
      const stats = await this.withProgress('import', (onProgress) =>
        importImage(this.session(), process.stdin, args.name, {
          inflight: flags.inflight,
          ...size,
          ...onProgress,
        }),
      );
      this.say(transferSummary(`imported stdin into ${args.name}`, stats));
      return stats;
    }
    if (flags.size !== undefined) {
      throw new ArchipelagoError(
        'EINVAL',
        `--size is for an import from stdin (-); ${args.file} has its own size`,
      );
    }
    const stats = await this.withProgress('import', (onProgress) =>
      importImage(this.session(), args.file, args.name, { inflight: flags.inflight, ...onProgress }),
    );
    this.say(transferSummary(`imported ${args.file} into ${args.name}`, stats));
    return stats;
  }
}
