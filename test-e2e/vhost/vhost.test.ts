/**
 * `vlmc map --vhost-user` with real qemu (TCG): the test guest (test-e2e/lib/guest.ts: a Debian
 * kernel and a busybox initramfs whose writer writes checksummed files on ext4) boots with its
 * disk as `vhost-user-blk-pci` on the endpoint's socket, guest RAM in a shared memfd.
 * - a clone of a snapshot, mapped writable (two queues): the guest mounts it and writes files;
 *   `vlmc snapshot` while mapped; the endpoint is killed with kill -9 under the running guest and
 *   mapped again: qemu reconnects (`reconnect=1`), the requests that were in flight are sent
 *   again, the guest goes on; it stops; the host checks the clone (e2fsck, every logged file's
 *   sha256) and that the snapshot it was cloned from is unchanged;
 * - a read-only map: the guest sees a read-only disk (VIRTIO_BLK_F_RO) and cannot write.
 * Malformed descriptor chains are packages/vhost/src/vhost.test.ts's (a front-end that sends them).
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import * as lib from '../lib/guest.js';
import { Env } from '../lib/vlmc.js';
import { vhostSpawn } from './qemu-vhost.js';

const reason = lib.guestUnavailable();
const suite = reason ? describe.skip : describe;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const SLOW = { timeout: 120_000 };
const MEM = 128;

suite(reason ? `vhost-user-blk with qemu (skipped: ${reason})` : 'vhost-user-blk with qemu', () => {
  let env: Env;
  let prepared: lib.PreparedGuest;
  let baseSha: string;
  const guests: lib.Guest[] = [];

  beforeAll(async () => {
    prepared = await lib.prepareGuest();
    env = await Env.create('vhost');
    const disk = await lib.makeGuestDisk((...a) => env.ok(...a), env.dir, {
      volume: 'base',
      clones: ['vm1'],
      sizeMiB: 32,
    });
    baseSha = disk.imageSha256;
  }, 60_000);

  afterEach(async () => {
    for (const g of guests.splice(0)) await g.kill();
  });

  afterAll(async () => {
    await env?.dispose();
  });

  async function boot(socket: string, tag: string, queues = 1): Promise<lib.Guest> {
    const g = await lib.bootGuest({
      guest: prepared,
      diskUri: 'nbd+unix:///unused?socket=/nonexistent',
      qmpSocket: join(env.dir, `${tag}.qmp`),
      memoryMiB: MEM,
      spawn: vhostSpawn(socket, queues, MEM),
    });
    guests.push(g);
    return g;
  }

  it(
    'a guest writes a clone over vhost-user-blk; snapshot while mapped; kill -9 and map again under it; the host checks',
    SLOW,
    async () => {
      const sock = join(env.dir, 'vm1.vhost');
      await env.ok('map', 'vm1', '--vhost-user', sock, '--queues', '2');
      const mapped = JSON.parse(await env.ok('showmapped', '--json')) as Array<{
        volume: string;
        vhostUser?: string;
      }>;
      expect(mapped.find((e) => e.volume === 'vm1')?.vhostUser).toBe(sock);
      const g = await boot(sock, 'vm1', 2);
      await g.waitFor(/writer: started/, 60_000);
      const bootMs = Date.now() - g.startedAt;
      await g.waitFiles(3, 60_000);
      await env.ok('snapshot', 'vm1', 'vm1-live');
      const pid = (
        JSON.parse(await env.ok('showmapped', '--json')) as Array<{ volume: string; pid: number }>
      ).find((e) => e.volume === 'vm1')!.pid;
      process.kill(pid, 'SIGKILL');
      const before = g.files;
      const t0 = Date.now();
      await env.ok('map', 'vm1', '--vhost-user', sock, '--queues', '2');
      const remapMs = Date.now() - t0;
      await g.waitFiles(before + 2, 60_000);
      const files = await g.stopWriter();
      expect(g.serial).not.toMatch(/writer: ERROR|guest: FAILED|I\/O error|EXT4-fs error/);
      await env.ok('unmap', 'vm1');
      const raw = join(env.dir, 'vm1.raw');
      await env.ok('export', 'vm1', raw);
      const report = await lib.verifyGuestImage(raw);
      expect(report.last).toBe(files - 1);
      expect(report.files + report.removed).toBe(files);
      const snap = join(env.dir, 'base-snap.raw');
      await env.ok('export', 'base-snap', snap);
      expect(sha(await readFile(snap)), 'the snapshot is the image imported').toBe(baseSha);
      console.log(
        `vhost guest: writer started ${bootMs} ms after qemu, map again after kill -9 took ${remapMs} ms; ` +
          `${files} files written, ${report.files} on the disk (${(report.bytes / 1048576).toFixed(1)} MiB); ` +
          `${Date.now() - g.startedAt} ms from qemu's start to the checks' end`,
      );
    },
  );

  it('a read-only map: the guest sees a read-only disk and writes nothing', SLOW, async () => {
    const sock = join(env.dir, 'snap.vhost');
    await env.ok('map', 'base-snap', '--vhost-user', sock, '--readonly');
    const g = await boot(sock, 'ro');
    // busybox mount falls back to read-only; the writer cannot create its directory and powers off.
    await g.waitFor(/guest: FAILED: cannot create/, 60_000);
    await g.exited;
    await env.ok('unmap', 'base-snap');
    const snap = join(env.dir, 'base-snap-ro.raw');
    await env.ok('export', 'base-snap', snap);
    expect(sha(await readFile(snap))).toBe(baseSha);
  });
});
