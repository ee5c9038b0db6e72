import { formatSize } from '@archipelago/cli-kit';
import type { GcProgress, GcReport } from '@archipelago/mapper';
import { gcStore } from '@archipelago/runtime';
import { Flags } from '@oclif/core';
import { VlmcCommand } from '../base.js';

export default class Gc extends VlmcCommand {
  static override summary = 'Collect garbage: delete the objects no volume, snapshot or file names any more.';

  static override description =
    `An online mark-and-sweep over the configured blockers, safe while volumes are mapped and \
written. Every map that is not removed (volumes, snapshots, hashed maps, incomplete imports, the \
trash) and every gateway file is a root; an object of blockerb that none of them names is deleted \
when it belongs to a removed volume (or to an epoch its volume has left behind), or when it is \
older than [mapperd] gc_grace (counted back from the start of this run, or of the oldest import, \
hash or upload under way). Map blocks of removed volumes go too; their headers stay. A second gc \
waits for the first. It prints what it found and what it freed; --dry-run only tells what it \
would free (so does "vlmc du"). In the daemon wiring it opens the blockers itself, next to the \
daemons.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --dry-run --json',
  ];

  static override flags = {
    'dry-run': Flags.boolean({ summary: 'Find and count; delete nothing.', default: false }),
    grace: Flags.integer({
      summary:
        'Seconds an unreferenced object is left alone after it was written (default: [mapperd] gc_grace).',
      min: 0,
    }),
  };

  async run(): Promise<GcReport> {
    const { flags } = await this.parse(Gc);
    const tty = this.progressAllowed();
    let shown = 0;
    const onProgress = (p: GcProgress) => {
      const t = Date.now();
      if (t - shown < 100 && p.done !== p.total) return;
      shown = t;
      const what =
        p.phase === 'wait' ? 'waiting for another gc' : `${p.phase} ${p.done}${p.total ? `/${p.total}` : ''}`;
      process.stderr.write(`\r\x1b[Kgc: ${what}`);
    };
    let r: GcReport;
    try {
      r = await gcStore(this.session(), {
        dryRun: flags['dry-run'],
        ...(flags.grace !== undefined ? { graceMs: flags.grace * 1000 } : {}),
        ...(tty ? { onProgress } : {}),
      });
    } finally {
      if (tty) process.stderr.write('\r\x1b[K');
    }
    const b = (n: number) => `${formatSize(n)} (${n} bytes)`;
    const rows: Array<[string, string]> = [
      ['maps', `${r.maps} live, ${r.deletedMaps} removed (${r.rounds} mark rounds)`],
      ...(r.fileRecords ? [['files', String(r.fileRecords)] as [string, string]] : []),
      // Gateway maps whose last file was deleted: removed, so their blocks are garbage.
      ...(r.fileRecords || r.gatewayMaps
        ? [
            [
              'gateway maps',
              `${r.gatewayMaps} ${r.dryRun ? 'would be removed' : 'removed'} (no file names them)`,
            ] as [string, string],
          ]
        : []),
      ['blocker', `${r.blockerObjects} objects`],
      ['referenced', `${r.referencedObjects} objects`],
      ['unreferenced', `${r.unreferencedObjects} objects, ${b(r.unreferencedBytes)}`],
      [r.dryRun ? 'would free' : 'reclaimable', `${r.reclaimableObjects} objects, ${b(r.reclaimableBytes)}`],
      ['kept (young or held)', `${r.keptObjects} objects, ${b(r.keptBytes)}`],
      ['map blocks', `${r.mapBlocks} of removed maps, ${b(r.mapBlockBytes)}`],
    ];
    if (!r.dryRun) {
      rows.push(['freed', `${r.freedObjects} objects, ${b(r.freedBytes)}; ${r.freedMapBlocks} map blocks`]);
    }
    for (const h of r.holds) rows.push(['hold', `${h.what} (${h.kind}, pid ${h.pid} on ${h.host})`]);
    if (r.unknownMapObjects)
      rows.push(['unknown in blockerm', `${r.unknownMapObjects} objects (left alone)`]);
    if (r.waitedMs > 1000) rows.push(['waited', `${(r.waitedMs / 1000).toFixed(1)} s for another gc`]);
    rows.push(['time', `${r.seconds.toFixed(2)} s`]);
    const w = Math.max(...rows.map(([k]) => k.length)) + 1;
    for (const [k, v] of rows) this.say(`${`${k}:`.padEnd(w)} ${v}`);
    return r;
  }
}
