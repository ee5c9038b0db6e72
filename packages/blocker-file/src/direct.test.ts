import { closeSync, constants, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AlignedPool, CHUNK_SIZE, DIRECT_ALIGN, findAlignedShift } from './direct.js';
import * as fsio from './fsio.js';
import { diskTmpDir, supportsODirect } from './test-util.js';

const base = diskTmpDir();
const canDirect = process.platform === 'linux' && supportsODirect(base);
const dir = mkdtempSync(join(base, 'archip-direct-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs `fn` with an O_DIRECT fd on a fresh file of one aligned block of 1s; closes it after. */
async function withProbe(fn: (fd: number) => Promise<void>): Promise<void> {
  const p = join(dir, `probe-${Math.random().toString(36).slice(2)}`);
  writeFileSync(p, Buffer.alloc(DIRECT_ALIGN, 1));
  const fd = openSync(p, constants.O_RDONLY | constants.O_DIRECT);
  try {
    await fn(fd);
  } finally {
    closeSync(fd);
  }
}

describe.skipIf(!canDirect)('aligned bounce buffers', () => {
  it('finds a window in a Buffer.alloc that the kernel accepts for O_DIRECT', () =>
    withProbe(async (fd) => {
      const buf = Buffer.alloc(3 * DIRECT_ALIGN);
      const shift = await findAlignedShift(fd, buf);
      expect(shift).toBeGreaterThanOrEqual(0);
      expect(shift).toBeLessThan(DIRECT_ALIGN);
      expect(await fsio.pread(fd, buf, shift, DIRECT_ALIGN, 0)).toBe(DIRECT_ALIGN);
      expect(buf[shift]).toBe(1);
    }));

  it('hands out aligned chunks of CHUNK_SIZE, page-aligned when WebAssembly memory is there', () =>
    withProbe(async (fd) => {
      const pool = await AlignedPool.create(fd, 3);
      expect(pool.pageAligned).toBe(true);
      const chunks = [await pool.take(), await pool.take(), await pool.take()];
      for (const c of chunks) {
        expect(c.length).toBe(CHUNK_SIZE);
        expect(await fsio.pread(fd, c, 0, DIRECT_ALIGN, 0)).toBe(DIRECT_ALIGN);
        expect(await fsio.pread(fd, c, CHUNK_SIZE - DIRECT_ALIGN, DIRECT_ALIGN, 0)).toBe(DIRECT_ALIGN);
      }
      for (const c of chunks) pool.put(c);
    }));

  it('makes takers wait while every chunk is in use', () =>
    withProbe(async (fd) => {
      const pool = await AlignedPool.create(fd, 1);
      const first = await pool.take();
      let second: Buffer | null = null;
      const pending = pool.take().then((b) => {
        second = b;
      });
      await new Promise((r) => setTimeout(r, 20));
      expect(second).toBeNull();
      pool.put(first);
      await pending;
      expect(second).toBe(first);
    }));
});

describe.skipIf(!canDirect)('O_DIRECT with page-aligned caller memory (fastio.largeBuffer)', () => {
  it('writes and reads straight from and into aligned buffers, and still handles every other shape', async () => {
    const { largeBuffer, addressAlignment } = await import('@archipelago/fastio');
    const { FileBlocker } = await import('./index.js');
    const b = new FileBlocker({ dir: join(dir, 'fb'), direct: true });
    try {
      const src = largeBuffer(4 * 1024 * 1024);
      for (let i = 0; i < src.length; i += 4096) src.fill(i / 4096 + 1, i, i + 4096);
      // 3 MiB + 8 KiB written whole from aligned memory (no bounce copy).
      const obj = src.subarray(0, 3 * 1024 * 1024 + 8192);
      await b.write('vol_a', 0, obj);
      expect(b.directIo).toBe(true);
      const into = largeBuffer(4 * 1024 * 1024);
      if (addressAlignment(into) >= DIRECT_ALIGN) {
        // Aligned target, past the end of the object: the tail reads as zeros.
        into.fill(0xee);
        await b.readInto('vol_a', 0, into);
        expect(into.subarray(0, obj.length).equals(obj)).toBe(true);
        expect(into.subarray(obj.length).every((x) => x === 0)).toBe(true);
        // A missing object reads as zeros too.
        into.fill(0xee);
        await b.readInto('vol_none', 0, into.subarray(0, 8192));
        expect(into.subarray(0, 8192).every((x) => x === 0)).toBe(true);
      }
      // Unaligned memory, offset and length go through the bounce buffers.
      const odd = Buffer.alloc(5000);
      await b.readInto('vol_a', 4095, odd);
      expect(odd.equals(obj.subarray(4095, 4095 + 5000))).toBe(true);
      await b.write('vol_a', 4097, src.subarray(1, 100));
      expect((await b.read('vol_a', 4097, 99)).equals(src.subarray(1, 100))).toBe(true);
      expect((await b.read('vol_a', 0, 4097)).equals(obj.subarray(0, 4097))).toBe(true);
    } finally {
      await b.close();
    }
  });
});
