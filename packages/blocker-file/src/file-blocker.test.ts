import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { collect, expectCode, patternBytes } from '@archipelago/blocker/test';
import { ArchipelagoError } from '@archipelago/libxseg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FileBlocker, type FileBlockerOptions, RESERVE_FILE } from './index.js';
import { diskTmpDir, supportsODirect, walk } from './test-util.js';

const roots: string[] = [];
const blockers: FileBlocker[] = [];

function freshDir(base = tmpdir()): string {
  const d = mkdtempSync(join(base, 'archip-file-test-'));
  roots.push(d);
  return d;
}

function make(opts: FileBlockerOptions): FileBlocker {
  const b = new FileBlocker(opts);
  blockers.push(b);
  return b;
}

/** The path §4.3 prescribes, computed here without the blocker's code. */
function expectedPath(dir: string, name: string): string {
  const h = createHash('sha256').update(Buffer.from(name, 'utf8')).digest();
  const hex = (i: number) => (h[i] as number).toString(16).padStart(2, '0');
  return `${dir}/${hex(0)}/${hex(1)}/${hex(2)}/${name}`;
}

afterEach(async () => {
  await Promise.all(blockers.splice(0).map((b) => b.close()));
});

afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

describe('layout', () => {
  it('stores an object at <dir>/h0h1/h2h3/h4h5/<name>, h = sha256(name)', async () => {
    const dir = freshDir();
    const b = make({ dir });
    const names = [
      'myvol_0000000000000000_0000000000000001',
      'myvol_0000000000000000',
      'myvol',
      'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
      'a',
    ];
    for (const name of names) {
      await b.write(name, 0, Buffer.from(`content of ${name}`));
      const p = expectedPath(dir, name);
      expect(FileBlocker.objectPath(dir, name)).toBe(p);
      expect(readFileSync(p, 'utf8')).toBe(`content of ${name}`);
    }
    // Nothing but the three hex levels and the objects.
    for (const rel of walk(dir))
      expect(rel).toMatch(/^[0-9a-f]{2}(\/[0-9a-f]{2}(\/[0-9a-f]{2}(\/[A-Za-z0-9._-]+)?)?)?$/);
  });

  it('has a known path for a fixed name', () => {
    // `printf myvol | sha256sum` = 30d8d1210b822c79...
    expect(FileBlocker.objectPath('/data', 'myvol')).toBe('/data/30/d8/d1/myvol');
    expect(FileBlocker.objectPath('/data/', 'myvol_lock')).toBe(expectedPath('/data', 'myvol_lock'));
  });

  it('refuses a bad name in objectPath with EINVAL_NAME', () => {
    for (const bad of ['../x', 'a/b', '', '.', '..', 'x'.repeat(124)]) {
      let caught: unknown;
      try {
        FileBlocker.objectPath('/data', bad);
      } catch (e) {
        caught = e;
      }
      expect(ArchipelagoError.is(caught, 'EINVAL_NAME'), bad).toBe(true);
    }
  });

  it('creates no file or directory outside its dir for names that try to escape', async () => {
    const root = freshDir();
    const dir = join(root, 'store');
    const b = make({ dir, lockDir: join(root, 'locks') });
    await b.write('ok', 0, Buffer.from('ok'));
    await b.acquire('ok');
    const before = walk(root);
    const evil = ['../escaped', '../../escaped', 'a/../../escaped', '/tmp/escaped', '..', '.', ''];
    for (const name of evil) {
      await expectCode(b.write(name, 0, Buffer.from('x')), 'EINVAL_NAME');
      await expectCode(b.writeFull(name, Buffer.from('x')), 'EINVAL_NAME');
      await expectCode(b.copy('ok', name), 'EINVAL_NAME');
      await expectCode(b.acquire(name), 'EINVAL_NAME');
      await expectCode(b.delete(name), 'EINVAL_NAME');
    }
    expect(walk(root)).toEqual(before);
    expect(existsSync(join(root, 'escaped'))).toBe(false);
    expect(existsSync('/tmp/escaped')).toBe(false);
  });

  it('leaves no temporary file behind after writeFull, copy, acquire and release', async () => {
    const dir = freshDir();
    const b = make({ dir });
    await b.writeFull('full', patternBytes(10_000, 1));
    await b.copy('full', 'copied');
    await b.copy('missing', 'empty', { missingOk: true });
    await expectCode(b.copy('missing', 'nothing'), 'ENOENT_OBJECT');
    await b.acquire('vol');
    await b.acquire('vol');
    const other = make({ dir, identity: 'other_1' });
    await expectCode(other.acquire('vol'), 'ELOCKED');
    await b.release('vol');
    expect(walk(dir).filter((p) => p.includes('~'))).toEqual([]);
    expect((await collect(b.list())).sort()).toEqual(['copied', 'empty', 'full']);
  });

  it('lists nothing for a directory that does not exist yet, and creates it on first write', async () => {
    const dir = join(freshDir(), 'not', 'yet');
    const b = make({ dir });
    expect(await collect(b.list())).toEqual([]);
    expect(await b.read('x', 0, 4, { missingOk: true })).toEqual(Buffer.alloc(4));
    await b.write('x', 0, Buffer.from('made'));
    expect(readFileSync(expectedPath(dir, 'x'), 'utf8')).toBe('made');
  });

  it('ignores stray files that are not objects when listing', async () => {
    const dir = freshDir();
    const b = make({ dir });
    await b.write('real', 0, Buffer.from('1'));
    const leaf = expectedPath(dir, 'real').replace(/\/real$/, '');
    writeFileSync(join(leaf, 'half~written'), 'x');
    writeFileSync(join(leaf, 'vol_lock'), 'someone_1');
    mkdirSync(join(leaf, 'subdir'));
    mkdirSync(join(dir, 'not-hex'));
    writeFileSync(join(dir, 'not-hex', 'file'), 'x');
    writeFileSync(join(dir, 'README'), 'x');
    expect(await collect(b.list())).toEqual(['real']);
  });
});

describe('lock files', () => {
  it('holds the owner identity on its first line and the holding process after it, so `cat` shows both', async () => {
    const dir = freshDir();
    const b = make({ dir, identity: 'node7_1601' });
    const t0 = Date.now();
    await b.acquire('myvol', { leaseMs: 60_000 });
    const lockFile = expectedPath(dir, 'myvol_lock');
    expect(b.lockPath('myvol')).toBe(lockFile);
    const [owner, record, end] = execFileSync('cat', [lockFile]).toString().split('\n');
    expect(owner).toBe('node7_1601');
    const r = JSON.parse(record as string) as Record<string, unknown>;
    expect(r).toMatchObject({ pid: process.pid, host: hostname() });
    expect(r.expires).toBeGreaterThanOrEqual(t0 + 60_000);
    expect(end).toBe('');
    // A host hold (vlmc open) is the identity alone, as every lock of an older version.
    await b.acquire('myvol', { hold: 'host' });
    expect(execFileSync('cat', [lockFile]).toString()).toBe('node7_1601\n');
    await b.release('myvol');
    expect(existsSync(lockFile)).toBe(false);
  });

  it('defaults the identity to <hostname>_embedded', async () => {
    const dir = freshDir();
    const b = make({ dir });
    expect(b.identity).toBe(`${hostname()}_embedded`);
    await b.acquire('v');
    expect(readFileSync(expectedPath(dir, 'v_lock'), 'utf8').split('\n')[0]).toBe(`${hostname()}_embedded`);
  });

  it('keeps locks flat in lockDir when set, and out of the data tree', async () => {
    const root = freshDir();
    const dir = join(root, 'data');
    const lockDir = join(root, 'locks');
    const a = make({ dir, lockDir, identity: 'a_1' });
    const b = make({ dir, lockDir, identity: 'b_2' });
    await a.acquire('myvol');
    expect(readdirSync(lockDir)).toEqual(['myvol_lock']);
    expect(readFileSync(join(lockDir, 'myvol_lock'), 'utf8').split('\n')[0]).toBe('a_1');
    expect(existsSync(dir)).toBe(false); // a lock touches nothing in the data tree
    const e = await expectCode(b.acquire('myvol'), 'ELOCKED');
    expect(e.details.owner).toBe('a_1');
    await a.release('myvol');
    expect(readdirSync(lockDir)).toEqual([]);
  });

  it('reads a lock written by an operator (trailing newline) and lets its owner release it', async () => {
    const root = freshDir();
    const lockDir = join(root, 'locks');
    mkdirSync(lockDir);
    writeFileSync(join(lockDir, 'vol_lock'), 'host9_1601\n');
    const a = make({ dir: join(root, 'data'), lockDir, identity: 'host9_1601' });
    expect(await a.lockOwner('vol')).toBe('host9_1601');
    await a.acquire('vol'); // ours already: idempotent
    await a.release('vol');
    expect(await a.lockOwner('vol')).toBeNull();
  });

  it('does not confuse an identity with a longer one that starts with it', async () => {
    // The original compared only a prefix, so host_1 thought it owned host_10's lock.
    const dir = freshDir();
    const ten = make({ dir, identity: 'host_10' });
    const one = make({ dir, identity: 'host_1' });
    await ten.acquire('vol');
    await expectCode(one.acquire('vol'), 'ELOCKED');
    await expectCode(one.release('vol'), 'ELOCKED');
  });

  it('is shared by two blockers on the same directory, and survives close()', async () => {
    const dir = freshDir();
    const a = make({ dir, identity: 'a_1' });
    await a.acquire('vol');
    await a.close();
    const b = make({ dir, identity: 'b_2', lockPollMs: 10 });
    expect(await b.lockOwner('vol')).toBe('a_1');
    await expectCode(b.acquire('vol', { wait: true, timeoutMs: 50 }), 'ETIMEDOUT');
    await b.release('vol', { force: true });
    await b.acquire('vol');
    expect(readFileSync(expectedPath(dir, 'vol_lock'), 'utf8').split('\n')[0]).toBe('b_2');
  });

  it('uses lockTimeoutMs when a waiting acquire names no timeout', async () => {
    const dir = freshDir();
    const a = make({ dir, identity: 'a_1' });
    const b = make({ dir, identity: 'b_2', lockTimeoutMs: 150, lockPollMs: 10 });
    await a.acquire('vol');
    const t0 = Date.now();
    const e = await expectCode(b.acquire('vol', { wait: true }), 'ETIMEDOUT');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    expect(e.details).toMatchObject({ owner: 'a_1', lock: 'vol', timeoutMs: 150 });
  });
});

describe('options', () => {
  it('refuses bad identities and sizes', () => {
    const dir = '/nonexistent';
    expect(() => new FileBlocker({ dir, identity: '' })).toThrow(TypeError);
    expect(() => new FileBlocker({ dir, identity: 'a\nb' })).toThrow(TypeError);
    expect(() => new FileBlocker({ dir, identity: 'x'.repeat(129) })).toThrow(TypeError);
    expect(() => new FileBlocker({ dir, fdCache: 0 })).toThrow(RangeError);
    expect(() => new FileBlocker({ dir, lockPollMs: 0 })).toThrow(RangeError);
    expect(() => new FileBlocker({ dir, lockTimeoutMs: -1 })).toThrow(RangeError);
    expect(() => new FileBlocker({ dir: '' })).toThrow(TypeError);
    expect(new FileBlocker({ dir: 'relative/path' }).dir).toBe(join(process.cwd(), 'relative/path'));
  });
});

describe('fd cache', () => {
  /** How many of this process's fds point into `dir` (Linux /proc; unrelated fds do not count). */
  function openFdsUnder(dir: string): number {
    let n = 0;
    for (const fd of readdirSync('/proc/self/fd')) {
      try {
        if (readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir)) n++;
      } catch {
        // closed meanwhile
      }
    }
    return n;
  }

  it('never holds more than fdCache idle fds, and serves every object correctly', async () => {
    const dir = freshDir();
    const b = make({ dir, fdCache: 3 });
    const n = 40;
    await Promise.all(Array.from({ length: n }, (_, i) => b.write(`o${i}`, i, patternBytes(3000, i))));
    expect(b.cachedFds).toBeLessThanOrEqual(3);
    for (let round = 0; round < 3; round++) {
      const back = await Promise.all(Array.from({ length: n }, (_, i) => b.read(`o${i}`, i, 3000)));
      back.forEach((buf, i) => {
        expect(buf.equals(patternBytes(3000, i))).toBe(true);
      });
      expect(b.cachedFds).toBeLessThanOrEqual(3);
    }
  });

  it('closes every fd on close()', async () => {
    const dir = freshDir(diskTmpDir());
    const b = new FileBlocker({ dir, fdCache: 16, direct: true });
    await Promise.all(Array.from({ length: 30 }, (_, i) => b.write(`o${i}`, 0, Buffer.from('x'))));
    await Promise.all(Array.from({ length: 30 }, (_, i) => b.read(`o${i}`, 0, 1)));
    await b.delete('o0');
    await b.writeFull('o1', Buffer.from('y'));
    expect(openFdsUnder(dir)).toBeGreaterThanOrEqual(10);
    await b.close();
    expect(openFdsUnder(dir)).toBe(0);
  });

  it('waits for calls in flight before closing their fds', async () => {
    const dir = freshDir();
    const b = new FileBlocker({ dir });
    const data = patternBytes(4 << 20, 3);
    const writes = Array.from({ length: 8 }, (_, i) => b.write(`big${i}`, 0, data));
    const closed = b.close();
    await Promise.all(writes);
    await closed;
    const c = make({ dir });
    for (let i = 0; i < 8; i++) expect((await c.read(`big${i}`, 0, data.length)).equals(data)).toBe(true);
  });

  it('never serves a deleted object from a cached or half-opened fd', async () => {
    const dir = freshDir();
    for (let i = 0; i < 30; i++) {
      const b = new FileBlocker({ dir });
      await b.write('obj', 0, Buffer.from('data'));
      if (i % 2) await b.read('obj', 0, 4); // cached before the race, or not
      const settled = await Promise.allSettled([b.read('obj', 0, 4), b.delete('obj'), b.read('obj', 0, 4)]);
      expect(settled[1]).toEqual({ status: 'fulfilled', value: true });
      await expectCode(b.read('obj', 0, 4), 'ENOENT_OBJECT');
      expect(await b.info('obj')).toBeNull();
      await b.close();
    }
  });

  it('sees an object replaced by writeFull or copy even with an fd cached for it', async () => {
    const dir = freshDir();
    const b = make({ dir });
    await b.write('obj', 0, Buffer.from('one'));
    expect((await b.read('obj', 0, 3)).toString()).toBe('one');
    await b.writeFull('obj', Buffer.from('two'));
    expect((await b.read('obj', 0, 3)).toString()).toBe('two');
    await b.write('src', 0, Buffer.from('three'));
    await b.copy('src', 'obj');
    expect((await b.read('obj', 0, 5)).toString()).toBe('three');
    await b.write('obj', 0, Buffer.from('T'));
    expect(readFileSync(expectedPath(dir, 'obj'), 'utf8')).toBe('Three');
  });
});

describe('O_DIRECT', () => {
  const base = diskTmpDir();
  const canDirect = supportsODirect(base);

  it(`reads back data written with direct: true on a disk directory (${base})`, async () => {
    const dir = freshDir(base);
    const b = make({ dir, direct: true });
    const cases: Array<[number, number]> = [
      [0, 4096],
      [0, 1],
      [1, 4095],
      [4095, 2],
      [100, 10_000],
      [8192, 1 << 20],
      [3, (1 << 20) + 5000], // spans two bounce chunks, unaligned at both ends
      [(4 << 20) - 512, 512],
    ];
    for (const [offset, length] of cases) {
      const name = `obj_${offset}_${length}`;
      const data = patternBytes(length, offset + length);
      await b.write(name, offset, data);
      expect((await b.read(name, offset, length)).equals(data), name).toBe(true);
      // The size is exact (the aligned write was truncated back) and the bytes are really on disk.
      expect(statSync(expectedPath(dir, name)).size).toBe(offset + length);
      const onDisk = readFileSync(expectedPath(dir, name));
      expect(onDisk.subarray(offset).equals(data), name).toBe(true);
      expect(onDisk.subarray(0, offset).equals(Buffer.alloc(offset))).toBe(true);
    }
    expect(b.directIo).toBe(canDirect);
  });

  it('keeps the bytes around a small direct write, and the ones past it', async () => {
    const dir = freshDir(base);
    const b = make({ dir, direct: true });
    const base8k = patternBytes(8192 + 100, 42);
    await b.writeFull('obj', base8k);
    await b.write('obj', 4000, Buffer.from('0123456789ABCDEF'));
    const expected = Buffer.from(base8k);
    Buffer.from('0123456789ABCDEF').copy(expected, 4000);
    expect(
      (await b.read('obj', 0, expected.length + 50)).equals(Buffer.concat([expected, Buffer.alloc(50)])),
    ).toBe(true);
    expect(readFileSync(expectedPath(dir, 'obj')).equals(expected)).toBe(true);
    expect(await b.info('obj')).toMatchObject({ size: expected.length });
    // The file's mtime (garbage collection leaves young objects alone).
    expect((await b.info('obj'))?.mtime).toBe(statSync(expectedPath(dir, 'obj')).mtimeMs);
  });

  it('is readable by a buffered blocker and vice versa', async () => {
    const dir = freshDir(base);
    const d = make({ dir, direct: true });
    const p = make({ dir });
    const x = patternBytes(20_000, 5);
    await d.write('from-direct', 7, x);
    expect((await p.read('from-direct', 7, x.length)).equals(x)).toBe(true);
    await p.write('from-buffered', 9, x);
    expect((await d.read('from-buffered', 9, x.length)).equals(x)).toBe(true);
  });
});

describe('storage errors', () => {
  it('maps a system failure to EIO with the system error as cause', async () => {
    const root = freshDir();
    const notADir = join(root, 'file');
    writeFileSync(notADir, 'I am a file');
    const b = make({ dir: notADir });
    const e = await expectCode(b.write('obj', 0, Buffer.from('x')), 'EIO');
    expect((e.cause as NodeJS.ErrnoException).code).toMatch(/^E/);
    await expectCode(b.writeFull('obj', Buffer.from('x')), 'EIO');
    await expectCode(b.acquire('vol'), 'EIO');
  });

  describe('on a full filesystem', () => {
    let mnt = '';
    let mounted = false;

    beforeAll(() => {
      mnt = freshDir();
      if (process.platform !== 'linux') return;
      const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt], { stdio: 'ignore' });
      mounted = r.status === 0;
    });

    afterAll(async () => {
      await Promise.all(blockers.splice(0).map((b) => b.close()));
      if (mounted) spawnSync('umount', [mnt], { stdio: 'ignore' });
    });

    it('reports ENOSPC, keeps the old object, and leaves no temp files', async (ctx) => {
      if (!mounted) ctx.skip(); // needs root (mount -t tmpfs -o size=1m)
      const b = make({ dir: join(mnt, 'store') });
      await b.writeFull('keep', Buffer.from('precious'));
      const big = patternBytes(2 << 20, 1);
      const e1 = await expectCode(b.write('big', 0, big), 'ENOSPC');
      expect((e1.cause as NodeJS.ErrnoException).code).toBe('ENOSPC');
      await expectCode(b.writeFull('keep', big), 'ENOSPC');
      expect((await b.read('keep', 0, 8)).toString()).toBe('precious');
      expect(walk(join(mnt, 'store')).filter((p) => p.includes('~'))).toEqual([]);
      await b.delete('big');
      await b.write('small', 0, Buffer.from('fits'));
      expect((await b.read('small', 0, 4)).toString()).toBe('fits');
    });
  });
});

describe('the space reserve (reserveBytes)', () => {
  let mnt = '';
  let mounted = false;
  beforeAll(() => {
    mnt = freshDir();
    if (process.platform !== 'linux') return;
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', mnt], { stdio: 'ignore' });
    mounted = r.status === 0;
  });
  afterAll(() => {
    if (mounted) spawnSync('umount', [mnt], { stdio: 'ignore' });
  });

  it('a full disk: data writes fail, a map write takes the reserve; a delete makes it again', async (ctx) => {
    if (!mounted) ctx.skip(); // needs root (mount -t tmpfs)
    const dir = join(mnt, 'store');
    const reserve = join(dir, RESERVE_FILE);
    const b = make({ dir, reserveBytes: 256 * 1024 });
    const until = async (cond: () => boolean) => {
      for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
      expect(cond()).toBe(true);
    };
    await b.writeFull('first', Buffer.from('x'));
    await until(() => existsSync(reserve));
    // Fill the file system with data: the last write fails, and the reserve stays.
    const chunk = Buffer.alloc(1 << 20, 7);
    let n = 0;
    for (; n < 64; n++) {
      const r = await b.write(`fill${n}`, 0, chunk).then(
        () => null,
        (e: unknown) => e,
      );
      if (r) {
        expect(ArchipelagoError.is(r, 'ENOSPC')).toBe(true);
        break;
      }
    }
    expect(n).toBeLessThan(64);
    expect(existsSync(reserve)).toBe(true);
    const warned: string[] = [];
    const onWarning = (w: Error) => warned.push(w.message);
    process.on('warning', onWarning);
    try {
      await b.writeFull('map_0000000000000000', Buffer.alloc(8192, 1));
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off('warning', onWarning);
    }
    expect((await b.read('map_0000000000000000', 0, 8192)).equals(Buffer.alloc(8192, 1))).toBe(true);
    expect(existsSync(reserve)).toBe(false);
    expect(warned.join('\n')).toMatch(/is full: its space reserve \(262144 bytes\) was given up/);
    for (let i = 0; i < n; i++) await b.delete(`fill${i}`);
    await until(() => existsSync(reserve));
    await b.close();
  });
});

describe('revalidateWrites: no write through a cached fd of a replaced file', () => {
  for (const revalidate of [false, true]) {
    it(`${revalidate ? 'with' : 'without'} it, a write after another blocker replaced the object ${revalidate ? 'lands in the new file' : 'is lost in the unlinked one'}`, async () => {
      const dir = freshDir();
      const a = make({ dir, identity: 'a_1', revalidateWrites: revalidate });
      const b = make({ dir, identity: 'b_2' });
      await a.write('map_0000000000000000', 0, Buffer.alloc(256, 1)); // a caches the fd
      await b.writeFull('map_0000000000000000', Buffer.alloc(256, 2)); // temp + rename: a new inode
      await a.write('map_0000000000000000', 0, Buffer.alloc(128, 3)); // a 128-byte map entry
      const back = await b.read('map_0000000000000000', 0, 256);
      expect(back.subarray(0, 128).every((x) => x === (revalidate ? 3 : 2))).toBe(true);
      expect(back.subarray(128).every((x) => x === 2)).toBe(true);
      await Promise.all([a.close(), b.close()]);
    });
  }

  it('with it, a read after another blocker replaced or removed the object sees that, not the cached fd', async () => {
    const dir = freshDir();
    const a = make({ dir, identity: 'a_1', revalidateWrites: true });
    const b = make({ dir, identity: 'b_2' });
    await b.writeFull('vol', Buffer.from('one'));
    expect((await a.read('vol', 0, 3)).toString()).toBe('one'); // a caches the fd
    await b.writeFull('vol', Buffer.from('two')); // a header rewritten by another process
    expect((await a.read('vol', 0, 3)).toString()).toBe('two');
    await b.writeFull('vol', Buffer.from('six'));
    const into = Buffer.alloc(3);
    await a.readInto?.('vol', 0, into);
    expect(into.toString()).toBe('six');
    await b.delete('vol');
    expect(await a.read('vol', 0, 3, { missingOk: true })).toEqual(Buffer.alloc(3));
    await Promise.all([a.close(), b.close()]);
  });
});
