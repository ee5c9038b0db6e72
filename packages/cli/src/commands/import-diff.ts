import { formatSize } from '@archipelago/cli-kit';
import { DEFAULT_DIFF_INFLIGHT, type ImportDiffStats, importDiff } from '@archipelago/runtime';
import { Args, Flags } from '@oclif/core';
import { VlmcCommand } from '../base.js';

export default class ImportDiff extends VlmcCommand {
  static override summary =
    'Apply an RBD diff stream (rbd export-diff) to a volume and take its to-snapshot.';

  static override description =
    `Reads a stream in Ceph's RBD diff v1 format (what \`rbd export-diff\` and \`vlmc export-diff\` \
write) and applies it to VOLUME as \`rbd import-diff\` does. The whole stream is read and checked first \
(from stdin it is spooled to a temporary file, under TMPDIR): a malformed or truncated stream is refused \
with the byte offset of the fault, and so is a stream whose from-snapshot does not exist or that VOLUME \
is no longer at (VOLUME's contents must be that snapshot's: roll it back first), or whose to-snapshot \
exists already. Any of these changes nothing. Then VOLUME is resized to the stream's size, its data and \
zeroed ranges are written, and the to-snapshot, when the stream names one, is taken. A mapped volume is \
refused (unmap it first). A progress bar is drawn on stderr when it is a terminal.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> /backup/vm1-mon-tue.diff vm1',
    'rbd export-diff --from-snap s1 rbd/vm1@s2 - | <%= config.bin %> <%= command.id %> - vm1',
  ];

  static override args = {
    file: Args.string({ required: true, description: 'Stream to read; - for stdin.' }),
    volume: Args.string({ required: true, description: 'Volume to apply it to.' }),
  };

  static override flags = {
    inflight: Flags.integer({
      summary: 'Writes in flight.',
      default: DEFAULT_DIFF_INFLIGHT,
      min: 1,
      max: 256,
    }),
  };

  async run(): Promise<ImportDiffStats> {
    const { args, flags } = await this.parse(ImportDiff);
    const s = await this.withProgress('import-diff', (onProgress) =>
      importDiff(this.session(), args.file === '-' ? process.stdin : args.file, args.volume, {
        inflight: flags.inflight,
        ...onProgress,
      }),
    );
    const snap = s.toSnap === null ? '' : `, took snapshot ${s.toSnap}`;
    this.say(
      `applied ${args.file === '-' ? 'stdin' : args.file} to ${s.volume}: ${formatSize(s.dataBytes)} written, ` +
        `${formatSize(s.zeroBytes)} zeroed, size ${s.size} bytes${snap}, ${s.seconds.toFixed(2)} s`,
    );
    return s;
  }
}
