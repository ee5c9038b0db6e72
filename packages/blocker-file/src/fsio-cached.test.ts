/**
 * preadCachedFully's bookkeeping with a scripted fast path: partial page-cache hits, EAGAIN in
 * the middle, end of file, chunking, errors. The thread-pool part is the real fs.read.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it, vi } from 'vitest';

const script = vi.hoisted(() => ({
  /** Per call: how many bytes the fake page cache returns (-11 for EAGAIN), or an Error to throw. */
  answers: [] as Array<number | Error>,
  calls: [] as Array<{ length: number; position: number }>,
}));

vi.mock('@archipelago/fastio', async () => {
  const fs = await import('node:fs');
  return {
    EAGAIN: -11,
    available: () => true,
    preadNowait: (fd: number, buf: Uint8Array, off: number, len: number, pos: number) => {
      script.calls.push({ length: len, position: pos });
      const a = script.answers.shift() ?? -11;
      if (a instanceof Error) throw a;
      if (a < 0) return a;
      return fs.readSync(fd, buf, off, Math.min(a, len), pos);
    },
  };
});

const { preadCachedFully, NOWAIT_MAX } = await import('./fsio.js');

const dir = mkdtempSync(join(tmpdir(), 'archip-fsio-cached-'));
const data = randomBytes(NOWAIT_MAX + 100_000);
writeFileSync(join(dir, 'f'), data);
const fd = openSync(join(dir, 'f'), 'r');
afterAll(() => {
  closeSync(fd);
  rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => {
  script.answers = [];
  script.calls = [];
});

describe('preadCachedFully', () => {
  it('serves a full hit synchronously in one call', async () => {
    script.answers = [4096];
    const buf = Buffer.alloc(4096);
    expect(await preadCachedFully(fd, buf, 0, 4096, 8192)).toBe(4096);
    expect(buf.equals(data.subarray(8192, 12288))).toBe(true);
    expect(script.calls).toEqual([{ length: 4096, position: 8192 }]);
  });

  it('continues a partial hit, then sends the rest to the thread pool after EAGAIN', async () => {
    script.answers = [1000, 500, -11];
    const buf = Buffer.alloc(10_000 + 16, 0xee);
    expect(await preadCachedFully(fd, buf, 16, 10_000, 77)).toBe(10_000);
    expect(buf.subarray(16).equals(data.subarray(77, 10_077))).toBe(true);
    expect(buf.subarray(0, 16).every((x) => x === 0xee)).toBe(true);
    expect(script.calls).toEqual([
      { length: 10_000, position: 77 },
      { length: 9000, position: 1077 },
      { length: 8500, position: 1577 },
    ]);
  });

  it('stops at the end of file (0) and reports the short count', async () => {
    script.answers = [60, 0];
    const buf = Buffer.alloc(4096);
    expect(await preadCachedFully(fd, buf, 0, 4096, data.length - 60)).toBe(60);
    expect(buf.subarray(0, 60).equals(data.subarray(data.length - 60))).toBe(true);
  });

  it('sends reads over NOWAIT_MAX straight to the thread pool', async () => {
    script.answers = [NOWAIT_MAX];
    const buf = Buffer.alloc(data.length);
    expect(await preadCachedFully(fd, buf, 0, data.length, 0)).toBe(data.length);
    expect(buf.equals(data)).toBe(true);
    expect(script.calls).toEqual([]);
    expect(await preadCachedFully(fd, buf, 0, NOWAIT_MAX, 0)).toBe(NOWAIT_MAX);
    expect(script.calls).toEqual([{ length: NOWAIT_MAX, position: 0 }]);
  });

  it('rejects (never throws synchronously) with the fast path error', async () => {
    script.answers = [Object.assign(new Error('EBADF'), { code: 'EBADF' })];
    const p = preadCachedFully(fd, Buffer.alloc(10), 0, 10, 0);
    await expect(p).rejects.toMatchObject({ code: 'EBADF' });
  });

  it('reads nothing for a zero length', async () => {
    expect(await preadCachedFully(fd, Buffer.alloc(0), 0, 0, 0)).toBe(0);
    expect(script.calls).toEqual([]);
  });
});
