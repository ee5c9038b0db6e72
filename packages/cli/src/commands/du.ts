import { formatSize } from '@archipelago/cli-kit';
import { type StoreUsage, storeUsage, type VolumeUsage, volumeUsage } from '@archipelago/mapper';
import { gcStore } from '@archipelago/runtime';
import { Args } from '@oclif/core';
import { VlmcCommand } from '../base.js';

export default class Du extends VlmcCommand {
  static override summary =
    'Show storage use: logical size, allocated objects, bytes stored, shared and deduplicated.';

  static override description =
    `With a NAME, the use of one volume, snapshot or hashed map: its logical size, the blocks \
backed by objects, the bytes of the distinct objects it references ("stored"), the bytes saved by \
blocks sharing one object ("deduplicated"), and the bytes it shares with other maps. Without a \
NAME, the whole store, including objects that no map references ("unreferenced"; a hashed map \
the gateway made whose files were all deleted counts as removed, as the next gc removes it), of those what the trash holds ("trash": its entries, and the objects only they name: "vlmc trash restore" brings them back, gc frees them once [mapperd] trash_ttl has passed), and what "vlmc gc" would free now ("reclaimable": unreferenced objects of removed volumes, or older than [mapperd] gc_grace).`;

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> vol1 --json',
  ];

  static override args = {
    name: Args.string({ required: false, description: 'Volume, snapshot or hashed map.' }),
  };

  async run(): Promise<
    VolumeUsage | (StoreUsage & { reclaimableObjects: number; reclaimableBytes: number })
  > {
    const { args } = await this.parse(Du);
    const rt = await this.session().runtime();
    if (args.name !== undefined) {
      const u = await volumeUsage(rt, args.name);
      this.table([
        ['name', u.name],
        ['size', `${formatSize(u.size)} (${u.size} bytes)`],
        ['blocks', `${u.blocks} (${u.allocated} allocated)`],
        ['objects', `${u.objects} (${u.contentObjects} content-addressed)`],
        ['referenced', bytes(u.bytesReferenced)],
        ['stored', bytes(u.bytesStored)],
        ['deduplicated', bytes(u.bytesDeduplicated)],
        ['shared', bytes(u.bytesShared)],
        ['exclusive', bytes(u.bytesExclusive)],
        ...(u.missingObjects ? [['missing objects', String(u.missingObjects)] as [string, string]] : []),
      ]);
      return u;
    }
    const usage = await storeUsage(rt);
    const gc = await gcStore(this.session(), { dryRun: true });
    const u = {
      ...usage,
      reclaimableObjects: gc.reclaimableObjects,
      reclaimableBytes: gc.reclaimableBytes,
      reclaimableMapBlocks: gc.mapBlocks,
    };
    this.table([
      ['maps', String(u.maps)],
      ['size', `${formatSize(u.size)} (${u.size} bytes)`],
      ['allocated', `${u.allocated} blocks`],
      ['objects', `${u.objects} referenced (${u.contentObjects} content-addressed)`],
      ['referenced', bytes(u.bytesReferenced)],
      ['stored', bytes(u.bytesStored)],
      ['deduplicated', bytes(u.bytesDeduplicated)],
      ['blocker', `${u.blockerObjects} objects, ${bytes(u.blockerBytes)}`],
      ['unreferenced', `${u.unreferencedObjects} objects, ${bytes(u.unreferencedBytes)}`],
      ['reclaimable', `${u.reclaimableObjects} objects, ${bytes(u.reclaimableBytes)} (vlmc gc)`],
      [
        'trash',
        `${u.trashEntries} ${u.trashEntries === 1 ? 'entry' : 'entries'} holding ${u.trashObjects} objects, ${bytes(u.trashBytes)} (vlmc trash ls)`,
      ],
    ]);
    return u;
  }

  private table(rows: Array<[string, string]>): void {
    const w = Math.max(...rows.map(([k]) => k.length)) + 1;
    for (const [k, v] of rows) this.say(`${`${k}:`.padEnd(w)} ${v}`);
  }
}

const bytes = (n: number) => `${formatSize(n)} (${n} bytes)`;
