/**
 * A guest fio verify job (issue 19): the test guest (test-e2e/lib/guest.ts, TCG) with the host's
 * fio and its shared libraries in its initramfs (`prepareScriptGuest`) has two disks, two volumes:
 * one through `vlmc map --vhost-user` (two queues, vhost-user-blk-pci, RAM in a shared memfd), one
 * through `vlmc map`'s NBD endpoint (qemu's nbd driver, virtio-blk-pci). One fio run in the guest
 * runs the job on both at once: 4 KiB-64 KiB random writes at QD16 (libaio, O_DIRECT) over 16 MiB
 * with `verify=crc32c`: fio writes every block once with a checksummed header, then reads all back
 * and checks it. Then the host checks what the volumes hold: the same jobs with `verify_only`
 * through each volume's `vlmc map` NBD socket (fio's nbd engine), so every block's checksum and
 * offset is checked as stored, by another client, after the guest is gone. The host's check is
 * shown to catch a changed block: 512 bytes written over one block make the same verify fail there.
 * One boot serves both endpoints (TCG boot ~4-6 s, fio ~4 s, the rest vlmc commands).
 */
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import * as lib from '../lib/guest.js';
import { Env, sh } from '../lib/vlmc.js';
import { vhostSpawn } from './qemu-vhost.js';

const FIO = '/usr/bin/fio';
const reason =
  lib.guestUnavailable() ??
  ((await sh(FIO, ['--version'])).code === 0 ? null : 'the guest fio job needs the Debian package fio');
const suite = reason ? describe.skip : describe;
const SLOW = { timeout: 240_000 };
/** Guest RAM: fio's shared libraries (~84 MiB) live in the initramfs, unpacked into RAM. */
const MEM = 384;
/** Bytes each job writes and verifies. */
const SIZE_MIB = 16;
/** Volume sizes: the guest tells its disks apart by size (512-byte sectors in /sys/block). */
const VHOST_MIB = 32;
const NBD_MIB = 48;

/** The jobs' options, the same in the guest and on the host (fio's default randrepeat: the same sequence). */
const JOB = [
  '--rw=randwrite',
  '--bsrange=4k-64k',
  `--size=${SIZE_MIB}m`,
  '--randseed=20261207',
  '--iodepth=16',
  '--verify=crc32c',
  '--verify_fatal=1',
];
const GUEST_SCRIPT = `i=0; while [ ! -b /dev/vdb ] && [ $i -lt 100 ]; do i=$((i + 1)); usleep 100000; done
for d in vda vdb; do
  case "$(cat /sys/block/$d/size)" in
    ${VHOST_MIB * 2048}) V=/dev/$d ;;
    ${NBD_MIB * 2048}) N=/dev/$d ;;
  esac
done
echo "guest: vhost disk $V, nbd disk $N"
[ -b "$V" ] && [ -b "$N" ] || exit 2
fio ${JOB.join(' ')} --thread --direct=1 --ioengine=libaio --name=vhost --filename=$V --name=nbd --filename=$N`;

suite(reason ? `guest fio verify (skipped: ${reason})` : 'guest fio verify', () => {
  let env: Env;
  let prepared: lib.PreparedGuest;
  const guests: lib.Guest[] = [];

  beforeAll(async () => {
    prepared = await lib.prepareScriptGuest({ name: 'fio-verify', script: GUEST_SCRIPT, programs: [FIO] });
    env = await Env.create('vhost-fio');
  }, 120_000);

  afterEach(async () => {
    for (const g of guests.splice(0)) await g.kill();
  });

  afterAll(async () => {
    await env?.dispose();
  });

  /** The jobs' verify pass from the host through the volumes' NBD URIs (fio's nbd engine). */
  async function hostVerify(vhostUri: string, nbdUri: string) {
    const r = await sh(FIO, [
      ...JOB,
      '--ioengine=nbd',
      '--verify_only',
      '--name=vhost',
      `--uri=${vhostUri}`,
      '--name=nbd',
      `--uri=${nbdUri}`,
    ]);
    return { code: r.code, out: r.stdout + r.stderr };
  }

  /** The NBD URI `vlmc map VOL` prints. */
  async function mapNbd(vol: string): Promise<string> {
    return (await env.ok('map', vol)).trim();
  }

  it(
    'the guest writes and verifies 16 MiB on a vhost-user-blk and an NBD disk; the host verifies both volumes',
    SLOW,
    async () => {
      await env.ok('create', 'fio-vhost', '--size', `${VHOST_MIB}M`);
      await env.ok('create', 'fio-nbd', '--size', `${NBD_MIB}M`);
      const sock = join(env.dir, 'fio-vhost.vhost');
      await env.ok('map', 'fio-vhost', '--vhost-user', sock, '--queues', '2');
      const nbdUri = await mapNbd('fio-nbd');
      const g = await lib.bootGuest({
        guest: prepared,
        diskUri: nbdUri,
        qmpSocket: join(env.dir, 'fio.qmp'),
        memoryMiB: MEM,
        spawn: vhostSpawn(sock, 2, MEM, true),
      });
      guests.push(g);
      const m = await g.waitFor(/guest: script exit (\d+) at ([\d.]+)s/, 200_000);
      const exit = await g.exited;
      const guestMs = Date.now() - g.startedAt;
      const serial = g.serial;
      expect(serial, serial).toMatch(/vhost: \(groupid=0, jobs=1\): err= 0/);
      expect(serial, serial).toMatch(/nbd: \(groupid=0, jobs=1\): err= 0/);
      expect(Number(m[1]), serial).toBe(0);
      expect(exit.code).toBe(0);
      // Both jobs wrote 16 MiB and fio's verify pass read it back: 32 MiB each way.
      expect(serial).toMatch(/READ: .*io=32\.0MiB/);
      expect(serial).toMatch(/WRITE: .*io=32\.0MiB/);

      await env.ok('unmap', 'fio-vhost');
      const vhostUri = await mapNbd('fio-vhost');
      const t0 = Date.now();
      const host = await hostVerify(vhostUri, nbdUri);
      const verifyMs = Date.now() - t0;
      expect(host.code, host.out).toBe(0);
      expect(host.out).toMatch(/vhost: \(groupid=0, jobs=1\): err= 0/);
      expect(host.out).toMatch(/nbd: \(groupid=0, jobs=1\): err= 0/);
      expect(host.out).toMatch(/READ: .*io=32\.0MiB/);

      // 512 bytes changed inside a block of the NBD disk's volume (fio wrote all of its 16 MiB):
      // the host's verify fails there.
      const w = await sh('nbdsh', ['-u', nbdUri, '-c', `h.pwrite(b"\\x01" * 512, ${5 * 1048576 + 1000})`]);
      expect(w.code, w.stderr).toBe(0);
      const bad = await hostVerify(vhostUri, nbdUri);
      expect(bad.code).not.toBe(0);
      expect(bad.out).toMatch(/crc32c: verify failed at file .* offset \d+/);
      await env.ok('unmap', 'fio-vhost');
      await env.ok('unmap', 'fio-nbd');
      console.log(
        `guest fio verify (vhost-user-blk and NBD at once): qemu start to power-off ${guestMs} ms, ` +
          `fio done at ${m[2]} s of the guest's uptime; host verify through NBD ${verifyMs} ms`,
      );
    },
  );
});
