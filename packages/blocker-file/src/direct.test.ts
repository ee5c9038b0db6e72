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

function probeFd(): number {
  const p = join(dir, `probe-${Math.random().toString(36).slice(2)}`);
  writeFileSync(p, Buffer.alloc(DIRECT_ALIGN, 1));
  return openSync(p, constants.O_RDONLY | constants.O_DIRECT);
}

describe.skipIf(!canDirect)('aligned bounce buffers', () => {
  it('finds a window in a Buffer.alloc that the kernel accepts for O_DIRECT', async () => {
    const fd = probeFd();
    try {
      const buf = Buffer.alloc(3 * DIRECT_ALIGN);
      const shift = await findAlignedShift(fd, buf);
      expect(shift).toBeGreaterThanOrEqual(0);
      expect(shift).toBeLessThan(DIRECT_ALIGN);
      expect(await fsio.pread(fd, buf, shift, DIRECT_ALIGN, 0)).toBe(DIRECT_ALIGN);
      expect(buf[shift]).toBe(1);
    } finally {
      closeSync(fd);
    }
  });

  it('hands out aligned chunks of CHUNK_SIZE, page-aligned when WebAssembly memory is there', async () => {
    const fd = probeFd();
    try {
      const pool = await AlignedPool.create(fd, 3);
      expect(pool.pageAligned).toBe(true);
      const chunks = [await pool.take(), await pool.take(), await pool.take()];
      for (const c of chunks) {
        expect(c.length).toBe(CHUNK_SIZE);
        expect(await fsio.pread(fd, c, 0, DIRECT_ALIGN, 0)).toBe(DIRECT_ALIGN);
        expect(await fsio.pread(fd, c, CHUNK_SIZE - DIRECT_ALIGN, DIRECT_ALIGN, 0)).toBe(DIRECT_ALIGN);
      }
      for (const c of chunks) pool.put(c);
    } finally {
      closeSync(fd);
    }
  });

  it('makes takers wait while every chunk is in use', async () => {
    const fd = probeFd();
    try {
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
    } finally {
      closeSync(fd);
    }
  });
});
