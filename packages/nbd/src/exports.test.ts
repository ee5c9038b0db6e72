import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArchipelagoError } from '@archipelago/libxseg';
import { describe, expect, it } from 'vitest';
import { errnoFor } from './errno.js';
import { FileExport, MemoryExport } from './exports.js';

const KiB = 1024;
const no = { fua: false };

describe('MemoryExport', () => {
  it('reads zeroes and reports never-written 64 KiB regions as hole+zero', async () => {
    const m = new MemoryExport({ name: 'm', size: 256 * KiB + 100 });
    expect((await m.read(1000, 5000)).equals(Buffer.alloc(5000))).toBe(true);
    expect(await m.blockStatus(0, m.size())).toEqual([{ length: 256 * KiB + 100, hole: true, zero: true }]);
    await m.write(70 * KiB, Buffer.alloc(10, 7), no);
    expect(await m.blockStatus(0, m.size())).toEqual([
      { length: 64 * KiB, hole: true, zero: true },
      { length: 64 * KiB, hole: false, zero: false },
      { length: 128 * KiB + 100, hole: true, zero: true },
    ]);
    expect((await m.read(70 * KiB - 1, 12)).toJSON().data).toEqual([0, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 0]);
  });

  it('trims and zeroes: whole chunks become holes, partial chunks are zero-filled', async () => {
    const m = new MemoryExport({ name: 'm', size: 256 * KiB });
    await m.write(0, Buffer.alloc(256 * KiB, 1), no);
    await m.trim(64 * KiB, 64 * KiB, no);
    await m.writeZeroes(130 * KiB, 4 * KiB, { fua: false, noHole: false, fastZero: false });
    await m.writeZeroes(192 * KiB, 64 * KiB, { fua: false, noHole: true, fastZero: false });
    expect(m.allocatedBytes()).toBe(3 * 64 * KiB);
    expect((await m.read(64 * KiB, 64 * KiB)).every((b) => b === 0)).toBe(true);
    expect((await m.read(130 * KiB, 4 * KiB)).every((b) => b === 0)).toBe(true);
    expect((await m.read(134 * KiB, 1))[0]).toBe(1);
    expect((await m.blockStatus(0, 256 * KiB)).map((e) => e.hole)).toEqual([false, true, false]);
  });

  it('refuses writes when read-only, out-of-range I/O, and fast zero when disabled', async () => {
    const ro = new MemoryExport({ name: 'ro', size: KiB, readonly: true });
    await expect(ro.write(0, Buffer.alloc(1), no)).rejects.toSatisfy((e) =>
      ArchipelagoError.is(e, 'EREADONLY'),
    );
    const m = new MemoryExport({ name: 'm', size: KiB, fastZero: false });
    await expect(m.read(1000, 100)).rejects.toSatisfy((e) => ArchipelagoError.is(e, 'ERANGE'));
    await expect(m.writeZeroes(0, 512, { fua: false, noHole: false, fastZero: true })).rejects.toSatisfy(
      (e) => ArchipelagoError.is(e, 'ENOTSUP'),
    );
  });
});

describe('FileExport', () => {
  it('reads, writes, zeroes and flushes a raw file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'nbd-file-'));
    try {
      const path = join(dir, 'disk.img');
      await writeFile(path, Buffer.alloc(64 * KiB, 9));
      const f = await FileExport.open(path);
      expect(f.size()).toBe(64 * KiB);
      expect(f.name).toBe(path);
      await f.write(100, Buffer.from('hello'), { fua: true });
      expect((await f.read(100, 5)).toString()).toBe('hello');
      await f.writeZeroes(0, 4 * KiB, { fua: false, noHole: false, fastZero: false });
      expect((await f.read(0, 4 * KiB)).every((b) => b === 0)).toBe(true);
      await expect(f.writeZeroes(0, 512, { fua: false, noHole: false, fastZero: true })).rejects.toSatisfy(
        (e) => ArchipelagoError.is(e, 'ENOTSUP'),
      );
      await f.flush();
      expect(await f.blockStatus(0, 64 * KiB)).toEqual([{ length: 64 * KiB, hole: false, zero: false }]);
      await expect(f.read(60 * KiB, 8 * KiB)).rejects.toSatisfy((e) => ArchipelagoError.is(e, 'ERANGE'));
      await f.close();
      const ro = await FileExport.open(path, { readonly: true, name: 'ro' });
      await expect(ro.write(0, Buffer.alloc(1), no)).rejects.toSatisfy((e) =>
        ArchipelagoError.is(e, 'EREADONLY'),
      );
      await ro.close();
      await expect(FileExport.open(join(dir, 'missing'))).rejects.toSatisfy((e) =>
        ArchipelagoError.is(e, 'EIO'),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('errnoFor', () => {
  it('maps Archipelago and system errors to NBD errnos', () => {
    expect(errnoFor(new ArchipelagoError('ENOSPC', 'x'))).toBe(28);
    expect(errnoFor(new ArchipelagoError('EREADONLY', 'x'))).toBe(1);
    expect(errnoFor(new ArchipelagoError('ERANGE', 'x'))).toBe(22);
    expect(errnoFor(new ArchipelagoError('ENOTSUP', 'x'))).toBe(5);
    expect(errnoFor(new ArchipelagoError('ENOTSUP', 'x'), true)).toBe(95);
    expect(errnoFor(new ArchipelagoError('ECORRUPT_MAP', 'x'))).toBe(5);
    expect(errnoFor(Object.assign(new Error('full'), { code: 'EDQUOT' }))).toBe(28);
    expect(errnoFor(new Error('boom'))).toBe(5);
    expect(errnoFor('weird')).toBe(5);
  });
});
