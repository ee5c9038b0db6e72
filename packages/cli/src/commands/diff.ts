import { formatSize } from '@archipelago/cli-kit';
import { diffVolume } from '@archipelago/runtime';
import { Args, Flags } from '@oclif/core';
import { VlmcCommand } from '../base.js';

export default class Diff extends VlmcCommand {
  static override summary = 'List the extents of a snapshot or volume that changed since a snapshot.';

  static override description =
    `Compares two maps of one lineage, block by block, without reading any data: a block whose \
entry names the same object in both is unchanged (objects a snapshot holds are never rewritten), one \
that became the zero block is a "zero" extent, any other change is "data". Without --from-snap, every \
allocated extent of TARGET is listed (as \`rbd diff\` does). Adjacent extents of one kind are merged. \
The text output has one line per extent: offset, length, type, as \`rbd diff\` prints them.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> --from-snap vm1-mon vm1-tue',
    '<%= config.bin %> <%= command.id %> vm1 --from-snap vm1-tue --json',
  ];

  static override args = {
    target: Args.string({ required: true, description: 'The later snapshot, or the volume itself.' }),
  };

  static override flags = {
    'from-snap': Flags.string({ summary: 'The earlier snapshot (default: nothing).', helpValue: 'SNAP' }),
  };

  async run() {
    const { args, flags } = await this.parse(Diff);
    const d = await diffVolume(this.session(), args.target, {
      ...(flags['from-snap'] === undefined ? {} : { fromSnap: flags['from-snap'] }),
    });
    const extents = d.extents.map((e) => ({
      offset: e.offset,
      length: e.length,
      type: e.zero ? ('zero' as const) : ('data' as const),
    }));
    if (!this.jsonEnabled()) {
      const w = Math.max(6, ...extents.map((e) => String(e.offset).length));
      const l = Math.max(6, ...extents.map((e) => String(e.length).length));
      const lines = [`${'Offset'.padEnd(w)} ${'Length'.padEnd(l)} Type`];
      for (const e of extents)
        lines.push(`${String(e.offset).padEnd(w)} ${String(e.length).padEnd(l)} ${e.type}`);
      process.stdout.write(`${lines.join('\n')}\n`);
      if (process.stderr.isTTY) {
        process.stderr.write(
          `${extents.length} extents: ${formatSize(d.dataBytes)} data, ${formatSize(d.zeroBytes)} zeroed\n`,
        );
      }
    }
    return { ...d, extents };
  }
}
