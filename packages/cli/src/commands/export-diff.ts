import { formatSize } from '@archipelago/cli-kit';
import { ArchipelagoError } from '@archipelago/libxseg';
import { DEFAULT_DIFF_INFLIGHT, type ExportDiffStats, exportDiff } from '@archipelago/runtime';
import { Args, Flags } from '@oclif/core';
import { VlmcCommand } from '../base.js';

/** The one-line summary of an export-diff. */
function summary(s: ExportDiffStats): string {
  const what = s.fromSnap === null ? s.snapshot : `${s.fromSnap}..${s.snapshot}`;
  return (
    `exported the diff ${what} to ${s.file === '-' ? 'stdout' : s.file}: ${formatSize(s.dataBytes)} data, ` +
    `${formatSize(s.zeroBytes)} zeroed, ${s.streamBytes} bytes of stream, ${s.seconds.toFixed(2)} s`
  );
}

export default class ExportDiff extends VlmcCommand {
  static override summary =
    'Write the change of a snapshot since another as an RBD diff stream (rbd export-diff).';

  static override description =
    `The stream is Ceph's RBD diff v1 format, the one \`rbd export-diff\` writes and \`rbd import-diff\` \
reads: the from- and to-snapshot names, the image size, then the changed data and zeroed ranges. The \
change is found from the maps (see \`vlmc diff\`); only changed blocks are read. Without --from-snap, \
the stream holds every allocated extent (a full backup that \`rbd import-diff\` applies to an empty image). \
Exporting a volume rather than a snapshot leaves the to-snapshot out (as rbd does for an image's head).

With FILE "-" the stream goes to stdout and nothing else does: the summary goes to stderr when it \
is a terminal, and --json is refused. A progress bar is drawn on stderr when it is a terminal.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> --from-snap vm1-mon vm1-tue /backup/vm1-mon-tue.diff',
    '<%= config.bin %> <%= command.id %> --from-snap s1 s2 - | rbd import-diff - rbd/vm1',
  ];

  static override args = {
    snapshot: Args.string({ required: true, description: 'The snapshot the diff leads to.' }),
    file: Args.string({ required: true, description: 'Stream to write; - for stdout.' }),
  };

  static override flags = {
    'from-snap': Flags.string({
      summary: 'The snapshot the diff starts from (default: nothing).',
      helpValue: 'SNAP',
    }),
    inflight: Flags.integer({
      summary: 'Blocks read ahead.',
      default: DEFAULT_DIFF_INFLIGHT,
      min: 1,
      max: 256,
    }),
  };

  async run(): Promise<ExportDiffStats> {
    const { args, flags } = await this.parse(ExportDiff);
    const toStdout = args.file === '-';
    if (toStdout && this.jsonEnabled())
      throw new ArchipelagoError(
        'EINVAL',
        'export-diff to - writes the stream to stdout: --json cannot share it',
      );
    const stats = await this.withProgress('export-diff', (onProgress) =>
      exportDiff(this.session(), args.snapshot, toStdout ? process.stdout : args.file, {
        ...(flags['from-snap'] === undefined ? {} : { fromSnap: flags['from-snap'] }),
        inflight: flags.inflight,
        ...onProgress,
      }),
    );
    if (!toStdout) this.say(summary(stats));
    else if (process.stderr.isTTY) process.stderr.write(`${summary(stats)}\n`);
    return stats;
  }
}
