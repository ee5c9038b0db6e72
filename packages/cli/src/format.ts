/** Human-readable renderings shared by the commands. */

import { formatSize } from '@archipelago/cli-kit';
import type { VolumeInfo } from '@archipelago/mapper';
import type { Lineage, MappedStatus, TransferStats } from '@archipelago/runtime';

/** `vlmc info` lines: one `key: value` per line, aligned. */
export function infoLines(v: VolumeInfo & Lineage): string[] {
  const rows: Array<[string, string]> = [
    ['name', v.name],
    ['size', `${formatSize(v.size)} (${v.size} bytes)`],
    ['blocksize', formatSize(v.blocksize)],
    ['epoch', String(v.epoch)],
    ['readonly', v.readonly ? 'yes (snapshot)' : 'no'],
    ...(v.incomplete
      ? [
          [
            'incomplete',
            'yes (an interrupted import: vlmc remove removes it; or a rename: its next use settles it)',
          ] as [string, string],
        ]
      : []),
    ...lineageRows(v),
    ['version', String(v.version)],
    ['objects', String(v.objects)],
    ['allocated', `${v.allocated} (${formatSize(v.allocated * v.blocksize)} at most)`],
    ['writable', String(v.writable)],
    ['lock owner', v.lockOwner ?? '(none)'],
  ];
  const w = Math.max(...rows.map(([k]) => k.length)) + 1;
  return rows.map(([k, val]) => `${`${k}:`.padEnd(w)} ${val}`);
}

/** One-line summary of an import or export. */
export function transferSummary(verb: string, s: TransferStats): string {
  return (
    `${verb}: ${formatSize(s.bytes)} (${s.bytes} bytes), ${s.written} blocks written, ` +
    `${s.zeroSkipped} zero blocks skipped, ${s.seconds.toFixed(2)} s, ${s.mibPerSec.toFixed(1)} MiB/s`
  );
}

/** The `parent` (a clone) or `origin` (a snapshot) rows of `vlmc info`, when they were worked out. */
function lineageRows(v: Lineage): Array<[string, string]> {
  if (v.origin !== undefined) return [['origin', v.origin ?? '(unknown)']];
  if (v.parent === undefined) return [];
  if (v.parent !== null) return [['parent', `${v.parent} (snapshot)`]];
  const c = v.parentCandidates ?? [];
  return [['parent', c.length > 0 ? `one of ${c.join(', ')} (identical snapshots)` : '(none)']];
}

/** A `vlmc ls` line: the name, marked `(snapshot)` or `(incomplete)` when it is one. */
export function listLine(v: { name: string; readonly: boolean; incomplete: boolean }): string {
  const marks = [v.readonly ? 'snapshot' : '', v.incomplete ? 'incomplete' : ''].filter(Boolean);
  return marks.length > 0 ? `${v.name} (${marks.join(', ')})` : v.name;
}

/**
 * The `vlmc showmapped` table: per mapping its NBD URI, its kernel device (nbd or loop), its FUSE
 * file and vhost-user-blk socket (`-` when none), the endpoint's pid, mapped or stale, ro or rw.
 */
export function mappedTable(all: MappedStatus[]): string[] {
  const rows = [['VOLUME', 'URI', 'DEVICE', 'FUSE', 'VHOST-USER', 'PID', 'STATE', 'MODE']];
  for (const e of all)
    rows.push([
      e.volume,
      e.uri,
      e.device ?? '-',
      e.fuse ?? '-',
      e.vhostUser ?? '-',
      String(e.pid),
      e.alive ? 'mapped' : 'stale',
      e.readonly ? 'ro' : 'rw',
    ]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) =>
    r
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd(),
  );
}
