/**
 * The test guest (test-e2e/lib/guest.ts) on an Archipelago clone: a Debian kernel + busybox
 * initramfs booted by qemu (TCG) from `vlmc map`'s NBD URI, whose writer writes checksummed files
 * on ext4 until told to stop, then unmounts and powers off.
 * - smoke: import + snapshot + clone, map the clone, boot, see the writer make progress, stop it,
 *   clean power-off; unmap, export: `e2fsck -fn` clean, every logged file with its sha256, and the
 *   snapshot unchanged;
 * - a local live migration: a second qemu `-incoming` on the same NBD URI, QMP `migrate`, the
 *   guest keeps writing on the destination; the same checks afterwards. (Two hosts with the lock
 *   hand-over are issue 15's; this proves qemu migration itself works with the NBD disk.)
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  bootGuest,
  type Guest,
  guestUnavailable,
  makeGuestDisk,
  type PreparedGuest,
  prepareGuest,
  verifyGuestImage,
} from '../lib/guest.js';
import { Env } from '../lib/vlmc.js';

const reason = guestUnavailable();
const suite = reason ? describe.skip : describe;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const DISK_MIB = 32;
/** Some seconds here; TCG on a loaded 2-core machine can be several times slower. */
const SLOW = { timeout: 180_000 };

suite(reason ? `a qemu guest on a vlmc clone (skipped: ${reason})` : 'a qemu guest on a vlmc clone', () => {
  let env: Env;
  let prepared: PreparedGuest;
  let baseSha: string;
  const guests: Guest[] = [];

  beforeAll(async () => {
    prepared = await prepareGuest();
    console.log(
      `guest: kernel ${prepared.kernelVersion}, modules ${prepared.modules.join(' ')}, ` +
        `${prepared.cached ? 'cached' : 'built'} in ${prepared.ms} ms (${prepared.dir})`,
    );
    env = await Env.create('guest');
    const disk = await makeGuestDisk((...a) => env.ok(...a), env.dir, {
      volume: 'base',
      clones: ['vm1', 'vm2'],
      sizeMiB: DISK_MIB,
    });
    expect(disk.snapshot).toBe('base-snap');
    baseSha = disk.imageSha256;
  });

  afterEach(async () => {
    for (const g of guests.splice(0)) await g.kill();
  });

  afterAll(async () => {
    await env?.dispose();
  });

  /** Maps a clone of the snapshot: its NBD URI. */
  const mappedClone = (name: string): Promise<string> => env.ok('map', name);

  /** Unmaps `name`, exports it and checks what the writer left; also that the snapshot never changed. */
  async function checkClone(name: string, files: number) {
    await env.ok('unmap', name);
    const raw = join(env.dir, `${name}.raw`);
    await env.ok('export', name, raw);
    const report = await verifyGuestImage(raw);
    expect(report.last, 'the log names every file the writer said it wrote').toBe(files - 1);
    expect(report.files + report.removed).toBe(files);
    const snap = join(env.dir, 'base-snap.raw');
    await env.ok('export', 'base-snap', snap);
    expect(sha(await readFile(snap)), 'the snapshot is the image imported').toBe(baseSha);
    return report;
  }

  async function boot(uri: string, tag: string, incoming?: string): Promise<Guest> {
    const g = await bootGuest({
      guest: prepared,
      diskUri: uri,
      qmpSocket: join(env.dir, `${tag}.qmp`),
      incoming,
    });
    guests.push(g);
    return g;
  }

  it(
    'boots from a mapped clone, writes until stopped, powers off cleanly; the clone checks clean',
    SLOW,
    async () => {
      const uri = await mappedClone('vm1');
      expect(uri).toMatch(/^nbd\+unix:\/\//);
      const g = await boot(uri, 'vm1');
      await g.waitFor(/writer: started/, 90_000);
      const bootMs = Date.now() - g.startedAt;
      expect(await g.qmp.queryStatus()).toMatchObject({ status: 'running', running: true });
      // 60 files (~32 MiB) fill the disk: the writer removes old files and reuses their blocks.
      await g.waitFiles(60, 90_000);
      const files = await g.stopWriter();
      const runMs = Date.now() - g.startedAt;
      expect(g.serial).not.toMatch(/writer: ERROR|guest: FAILED|I\/O error|EXT4-fs error/);
      const report = await checkClone('vm1', files);
      expect(report.removed, 'the writer filled the disk and removed old files').toBeGreaterThan(0);
      console.log(
        `guest smoke: writer started ${bootMs} ms after qemu did; ${files} files written, ` +
          `${report.files} on the disk (${(report.bytes / 1048576).toFixed(1)} MiB), ` +
          `${report.removed} removed; powered off after ${runMs} ms`,
      );
    },
  );

  it('migrates live to a second qemu on the same NBD disk; the guest keeps writing there', SLOW, async () => {
    const uri = await mappedClone('vm2');
    const src = await boot(uri, 'vm2-src');
    await src.waitFiles(10, 90_000);
    const migration = `unix:${join(env.dir, 'vm2.migrate')}`;
    const dst = await boot(uri, 'vm2-dst', migration);
    expect(await dst.qmp.queryStatus()).toMatchObject({ status: 'inmigrate', running: false });

    await src.qmp.migrate(migration);
    const info = await src.qmp.waitMigration(60_000);
    const atSwitch = src.files;
    expect(await src.qmp.queryStatus()).toMatchObject({ status: 'postmigrate', running: false });
    expect(await dst.qmp.queryStatus()).toMatchObject({ status: 'running', running: true });
    await src.qmp.quit();
    await src.exited;

    // The destination goes on where the source left: its console shows the writer's next files.
    const more = await dst.waitFiles(atSwitch + 15, 90_000);
    expect(more).toBeGreaterThanOrEqual(atSwitch + 15);
    const files = await dst.stopWriter();
    expect(dst.serial).not.toMatch(/writer: ERROR|guest: FAILED|I\/O error|EXT4-fs error/);
    expect(src.serial).not.toMatch(/writer: ERROR|guest: FAILED|I\/O error|EXT4-fs error/);
    const report = await checkClone('vm2', files);
    console.log(
      `guest migration: downtime ${info.downtime} ms, total ${info['total-time']} ms, ` +
        `setup ${info['setup-time']} ms, ${((info.ram?.transferred ?? 0) / 1048576).toFixed(1)} MiB RAM ` +
        `in ${info.ram?.['dirty-sync-count']} passes; ${atSwitch} files before the switch, ${files} in all ` +
        `(${report.files} on the disk)`,
    );
  });
});
