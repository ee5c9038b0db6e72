import { formatSize } from '@archipelago/cli-kit';
import { listTrash } from '@archipelago/runtime';
import { VlmcCommand } from '../../base.js';

/** One trash entry as `vlmc trash ls --json` prints it (times in ISO 8601, UTC). */
export interface TrashRecord {
  name: string;
  kind: 'volume' | 'snapshot';
  size: number;
  blocksize: number;
  removedAt: string;
  expiresAt: string;
  /** The entry's internal name: `vlmc trash restore NAME --entry ENTRY` picks it. */
  entry: string;
}

export default class TrashLs extends VlmcCommand {
  static override aliases = ['trash:list'];

  static override summary = 'List removed volumes and snapshots (the trash).';

  static override description =
    `A removed volume or snapshot stays in the trash, with its data, until the garbage collection \
after [mapperd] trash_ttl seconds (0, the default: the next gc) drops it; until then \
"vlmc trash restore NAME" brings it back. One line per entry, oldest removal first: name, kind, \
size, when it was removed and when it expires. With --json, one record per entry (name, kind, \
size, blocksize, removedAt, expiresAt, entry).`;

  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> trash ls --json'];

  async run(): Promise<TrashRecord[]> {
    await this.parse(TrashLs);
    const all = (await listTrash(this.session())).map(
      (e): TrashRecord => ({
        name: e.name,
        kind: e.kind,
        size: e.size,
        blocksize: e.blocksize,
        removedAt: new Date(e.removedAt).toISOString(),
        expiresAt: new Date(e.expiresAt).toISOString(),
        entry: e.entry,
      }),
    );
    const rows = all.map((e) => [e.name, e.kind, formatSize(e.size), e.removedAt, e.expiresAt]);
    if (rows.length > 0) {
      const header = ['NAME', 'KIND', 'SIZE', 'REMOVED', 'EXPIRES'];
      const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
      for (const r of [header, ...rows])
        this.say(
          r
            .map((c, i) => c.padEnd(widths[i]!))
            .join('  ')
            .trimEnd(),
        );
    }
    return all;
  }
}
