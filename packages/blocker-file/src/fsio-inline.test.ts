/**
 * Buffered writes up to WRITE_INLINE_MAX run on the main thread (pwriteInline), larger ones
 * through the thread pool: both land byte-exact, in write-back and durable modes, and a failing
 * inline write throws the system error.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pwriteInline, WRITE_INLINE_MAX } from './fsio.js';
import { FileBlocker } from './index.js';

const dir = mkdtempSync(join(tmpdir(), 'archip-fsio-inline-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('inline (main-thread) buffered writes', () => {
  it('pwriteInline writes every byte at the position, and throws the errno of a failed pwrite', () => {
    const path = join(dir, 'f');
    writeFileSync(path, Buffer.alloc(100));
    const fd = openSync(path, 'r+');
    const data = randomBytes(50);
    pwriteInline(fd, data, 10, 30, 7);
    closeSync(fd);
    expect(readFileSync(path).subarray(7, 37).equals(data.subarray(10, 40))).toBe(true);
    const ro = openSync(path, 'r');
    try {
      expect(() => pwriteInline(ro, data, 0, 10, 0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    } finally {
      closeSync(ro);
    }
  });

  it.each(['flush', 'always'] as const)(
    'FileBlocker (sync %s): writes at, below and above the inline limit read back',
    async (sync) => {
      expect(WRITE_INLINE_MAX).toBe(64 << 10); // the default (ARCHIP_WRITE_INLINE_MAX unset)
      const b = new FileBlocker({ dir: join(dir, sync), sync });
      try {
        for (const [i, n] of [4096, WRITE_INLINE_MAX, WRITE_INLINE_MAX + 4096].entries()) {
          const data = randomBytes(n);
          await b.write(`obj${i}`, 512, data);
          expect((await b.read(`obj${i}`, 512, n)).equals(data)).toBe(true);
        }
        expect(b.unsynced).toBe(sync === 'flush' ? 3 : 0);
      } finally {
        await b.close();
      }
    },
  );
});
