/**
 * `vlmc map --fuse PATH --device loop`: a kernel block device for a volume on a kernel without
 * the nbd module. The built vlmc, the real endpoint process, the kernel's FUSE and loop drivers,
 * ext4 and e2fsprogs: mkfs, mount, files written and read, a snapshot while mounted (after
 * fsfreeze), fsck of the volume and of a clone of the snapshot, a read-only map, and kill -9 of
 * the endpoint (I/O errors, no hung task; `vlmc unmap` recovers).
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pidAlive } from '../../packages/libxseg/src/process.js';
import { Env, requireTool, sh } from '../lib/vlmc.js';

const canRun = process.getuid?.() === 0 && existsSync('/dev/fuse') && existsSync('/dev/loop-control');

interface Entry {
  volume: string;
  pid: number;
  device?: string;
  fuse?: string;
  alive: boolean;
  readonly: boolean;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe.skipIf(!canRun)('vlmc map --fuse --device loop: ext4 on a volume through FUSE + loop', () => {
  let env: Env;
  let mnt: string;
  const payload = randomBytes(3 << 20);

  async function run(cmd: string, ...args: string[]) {
    const r = await sh(cmd, args, { timeout: 20_000 });
    if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.code} ${r.stderr}`);
    return r.stdout;
  }
  /** `vlmc map VOLUME --fuse FILE --device loop --json`: the run-state entry it prints. */
  async function mapFuse(
    volume: string,
    ...extra: string[]
  ): Promise<Entry & { device: string; fuse: string }> {
    const fuse = join(env.dir, `${volume}.img`);
    const r = await env.vlmc('map', volume, '--fuse', fuse, '--device', 'loop', ...extra, '--json');
    if (r.code !== 0) throw new Error(`vlmc map ${volume}: ${r.stderr}`);
    const e = r.json as Entry & { device: string; fuse: string };
    expect(e.device).toMatch(/^\/dev\/loop[0-9]+$/);
    expect(e.fuse).toBe(fuse);
    return e;
  }
  const sysLoop = (dev: string, what: string) => `/sys/block/${dev.slice('/dev/'.length)}/${what}`;
  function mountOptions(path: string): string[] | null {
    const line = readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .find((l) => l.split(' ')[1] === path);
    return line ? line.split(' ')[3]!.split(',') : null;
  }

  beforeAll(async () => {
    requireTool('mkfs.ext4', 'e2fsprogs');
    requireTool('losetup', 'mount');
    env = await Env.create('fuse');
    mnt = join(env.dir, 'mnt');
    await mkdir(mnt);
    await env.ok('create', 'vol', '--size', '64M');
  });

  afterAll(async () => {
    if (!env) return;
    if (mountOptions(mnt)) await sh('umount', [mnt]);
    await env.dispose();
  });

  it('mkfs, mount, files, a snapshot while mounted (fsfreeze), fsck of the volume and of a clone of the snapshot', async () => {
    const { device: dev, fuse, pid } = await mapFuse('vol');
    // The loop device is backed by the FUSE file, with direct I/O (no second page cache).
    expect(readFileSync(sysLoop(dev, 'loop/backing_file'), 'utf8').trim()).toBe(fuse);
    expect(readFileSync(sysLoop(dev, 'loop/dio'), 'utf8').trim()).toBe('1');
    expect(Number(await run('blockdev', '--getsize64', dev))).toBe(64 << 20);
    expect(mountOptions(fuse)).toContain('rw');
    // Another map of the volume is refused while this one holds it.
    const again = await env.vlmc('map', 'vol', '--fuse', join(env.dir, 'other.img'));
    expect(again.stderr).toContain('EBUSY');
    expect(again.stderr).toContain(`pid ${pid}`);

    await run('mkfs.ext4', '-q', dev);
    await run('mount', dev, mnt);
    await writeFile(join(mnt, 'before'), payload);
    await writeFile(join(mnt, 'note.txt'), 'written before the snapshot\n');
    await run('fsfreeze', '-f', mnt);
    try {
      expect(await env.ok('snapshot', 'vol', 'snap1')).toContain('snap1');
    } finally {
      await run('fsfreeze', '-u', mnt);
    }
    await writeFile(join(mnt, 'after'), 'written after the snapshot\n');
    await run('umount', mnt);
    // Mounted again: the bytes come back through FUSE from the volume (the page cache of the
    // first mount is gone with it).
    await run('mount', dev, mnt);
    expect(sha(await readFile(join(mnt, 'before')))).toBe(sha(payload));
    expect(await readFile(join(mnt, 'after'), 'utf8')).toBe('written after the snapshot\n');
    await run('umount', mnt);
    await run('e2fsck', '-fn', dev); // the volume, through its device
    expect(await env.ok('unmap', dev)).toContain('unmapped vol');
    expect(existsSync(sysLoop(dev, 'loop/backing_file'))).toBe(false);
    expect(mountOptions(fuse)).toBeNull();

    // A clone of the snapshot taken while mounted: clean, with what was written before it only.
    await env.ok('create', 'clone1', '--snap', 'snap1');
    const c = await mapFuse('clone1');
    await run('e2fsck', '-fn', c.device);
    await run('mount', '-o', 'ro', c.device, mnt);
    expect(sha(await readFile(join(mnt, 'before')))).toBe(sha(payload));
    expect(existsSync(join(mnt, 'after'))).toBe(false);
    await run('umount', mnt);
    await env.ok('unmap', 'clone1');
  });

  it('a read-only map gives a read-only file, loop device and mount', async () => {
    const { device: dev, fuse, readonly } = await mapFuse('vol', '--readonly');
    expect(readonly).toBe(true);
    expect(mountOptions(fuse)).toContain('ro');
    expect(readFileSync(sysLoop(dev, 'ro'), 'utf8').trim()).toBe('1');
    await expect(writeFile(fuse, 'x', { flag: 'r+' })).rejects.toMatchObject({ code: 'EROFS' });
    await run('mount', dev, mnt);
    expect(mountOptions(mnt)).toContain('ro');
    expect(sha(await readFile(join(mnt, 'before')))).toBe(sha(payload));
    await expect(writeFile(join(mnt, 'new'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
    await run('umount', mnt);
    // The file itself is the volume: the same bytes as the device, for any program.
    await run('cmp', '-n', String(8 << 20), fuse, dev);
    expect(await env.ok('unmap', fuse)).toContain('unmapped vol'); // by its file
  });

  it('refuses with one clear line: a directory as the file, a loop device without --fuse', async () => {
    const dir = await env.vlmc('map', 'vol', '--fuse', mnt);
    expect(dir.stderr).toContain(`EINVAL: ${mnt} is not a regular file`);
    const loop = await env.vlmc('map', 'vol', '--device', 'loop');
    expect(loop.stderr).toContain('EINVAL: a loop device goes over a FUSE file: add --fuse PATH');
  });

  it('kill -9 of the endpoint: the filesystem gets I/O errors at once (no hung task), vlmc unmap recovers', async () => {
    const { device: dev, fuse, pid } = await mapFuse('vol');
    await run('mount', dev, mnt);
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 250 && pidAlive(pid); i++) await new Promise((r) => setTimeout(r, 20));
    const t0 = Date.now();
    // O_DIRECT: the write must reach the device, and fails there.
    const w = await sh(
      'dd',
      ['if=/dev/zero', `of=${join(mnt, 'late')}`, 'bs=64k', 'count=4', 'oflag=direct'],
      {
        timeout: 15_000,
      },
    );
    expect(w.code).not.toBe(0);
    expect(w.stderr).toContain('Input/output error');
    const r = await sh('dd', [`if=${dev}`, 'of=/dev/null', 'bs=4k', 'count=1', 'iflag=direct'], {
      timeout: 15_000,
    });
    expect(r.stderr).toContain('Input/output error');
    expect(Date.now() - t0).toBeLessThan(5000);
    const stale = ((await env.vlmc('showmapped', '--json')).json as Entry[]).find((e) => e.volume === 'vol');
    expect(stale?.alive).toBe(false);
    // Still mounted: unmap says so and leaves everything as it is.
    const busy = await env.vlmc('unmap', 'vol');
    expect(busy.stderr).toContain('EBUSY');
    expect(readFileSync(sysLoop(dev, 'loop/backing_file'), 'utf8').trim()).toBe(fuse);
    await run('umount', mnt);
    expect(await env.ok('unmap', 'vol')).toContain('stale');
    expect(existsSync(sysLoop(dev, 'loop/backing_file'))).toBe(false);
    expect(mountOptions(fuse)).toBeNull();
    // The volume maps again (its lock was released); ext4 replays its journal, the files are there.
    const again = await mapFuse('vol');
    await run('mount', again.device, mnt);
    expect(sha(await readFile(join(mnt, 'before')))).toBe(sha(payload));
    await run('umount', mnt);
    await env.ok('unmap', 'vol');
  });
});
