/**
 * The read fast path with the real addon: page-cache hits are copied on the main thread
 * (preadv2 RWF_NOWAIT), misses fall back to the thread pool; either way the bytes are the file's.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { available, EAGAIN, preadNowait } from '@archipelago/fastio';
import { afterAll, describe, expect, it } from 'vitest';
import { FileBlocker } from './index.js';
import { diskTmpDir } from './test-util.js';

const root = mkdtempSync(join(diskTmpDir(), 'archip-cached-read-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Drops the object's clean pages from the page cache (POSIX_FADV_DONTNEED through dd). */
function evict(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return spawnSync('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none']).status === 0;
}

/** Whether the first page of `path` is out of the page cache now (not on tmpfs, eviction worked). */
function isEvicted(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    return preadNowait(fd, Buffer.alloc(1), 0, 1, 0) === EAGAIN;
  } finally {
    closeSync(fd);
  }
}

describe('FileBlocker reads through the page-cache fast path', () => {
  const b = new FileBlocker({ dir: join(root, 'data') });
  afterAll(() => b.close());
  const data = randomBytes((1 << 20) + 777);

  it('has the fast path on Linux', () => {
    if (process.platform === 'linux' && process.env.ARCHIP_FASTIO !== '0') expect(available()).toBe(true);
  });

  it('reads cached bytes, short tails and past the end exactly as before', async () => {
    await b.write('obj', 0, data);
    expect((await b.read('obj', 0, data.length)).equals(data)).toBe(true);
    expect((await b.read('obj', 4096, 4096)).equals(data.subarray(4096, 8192))).toBe(true);
    expect((await b.read('obj', 123, 5)).equals(data.subarray(123, 128))).toBe(true);
    // 4 MiB: over NOWAIT_MAX, through the thread pool.
    const big = await b.read('obj', 0, 4 << 20);
    expect(big.subarray(0, data.length).equals(data)).toBe(true);
    expect(big.subarray(data.length).every((x) => x === 0)).toBe(true);
    const tail = await b.read('obj', data.length - 10, 4096);
    expect(tail.subarray(0, 10).equals(data.subarray(data.length - 10))).toBe(true);
    expect(tail.subarray(10).every((x) => x === 0)).toBe(true);
    expect((await b.read('obj', data.length + 4096, 4096)).every((x) => x === 0)).toBe(true);
    const into = Buffer.alloc(8192, 0xee);
    await b.readInto('obj', data.length - 4096, into);
    expect(into.subarray(0, 4096).equals(data.subarray(data.length - 4096))).toBe(true);
    expect(into.subarray(4096).every((x) => x === 0)).toBe(true);
  });

  it('falls back to the thread pool for data not in the page cache and returns the right bytes', async (ctx) => {
    const path = FileBlocker.objectPath(b.dir, 'obj');
    if (!evict(path) || !isEvicted(path)) ctx.skip(); // tmpfs keeps everything cached
    expect((await b.read('obj', 512 * 1024, 4096)).equals(data.subarray(512 * 1024, 516 * 1024))).toBe(true);
    evict(path);
    const into = Buffer.alloc(64 * 1024);
    await b.readInto('obj', 12345, into);
    expect(into.equals(data.subarray(12345, 12345 + into.length))).toBe(true);
    evict(path);
    expect((await b.read('obj', 0, data.length)).equals(data)).toBe(true);
  });
});
