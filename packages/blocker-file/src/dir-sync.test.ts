/**
 * When the entries of new objects become durable (default mode, sync: 'always'): a write resolves
 * only after its object's name (and every directory created for it) is synced, those syncs run
 * beside the data's fdatasync instead of before it, and a failed directory sync fails the write
 * and stays pending for the next one. Real files; fsyncDir is wrapped to record, delay or fail.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

const dirSyncs = vi.hoisted(() => ({
  /** Completion time of the last sync of each directory. */
  done: new Map<string, number>(),
  /** [start, end] of every sync of each directory. */
  spans: new Map<string, Array<[number, number]>>(),
  delayMs: 0,
  failNext: 0,
}));

vi.mock('./fsio.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('./fsio.js')>();
  return {
    ...real,
    async fsyncDir(dir: string): Promise<void> {
      const start = performance.now();
      if (dirSyncs.delayMs > 0) await new Promise((r) => setTimeout(r, dirSyncs.delayMs));
      if (dirSyncs.failNext > 0) {
        dirSyncs.failNext--;
        throw Object.assign(new Error(`EIO: i/o error, fsync '${dir}'`), { code: 'EIO' });
      }
      await real.fsyncDir(dir);
      const end = performance.now();
      dirSyncs.done.set(dir, end);
      dirSyncs.spans.set(dir, [...(dirSyncs.spans.get(dir) ?? []), [start, end]]);
    },
  };
});

const { FileBlocker } = await import('./index.js');

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'archip-dirsync-'));
  dirSyncs.done.clear();
  dirSyncs.spans.clear();
  dirSyncs.delayMs = 0;
  dirSyncs.failNext = 0;
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The directories between `dir` (exclusive) and the object's own directory (inclusive). */
function chain(root: string, path: string): string[] {
  const out: string[] = [];
  for (let d = dirname(path); d !== root && d.startsWith(root); d = dirname(d)) out.push(d);
  return [...out, root];
}

describe('directory entries of new objects (sync: always)', () => {
  it('resolves each write only after its object and new directories are synced', async () => {
    dirSyncs.delayMs = 20; // slower than the data, so a write that does not wait is caught
    const b = new FileBlocker({ dir });
    const names = Array.from({ length: 24 }, (_, i) => `vol_${i}`);
    const spans = new Map<string, [number, number]>();
    await Promise.all(
      names.map(async (n, i) => {
        const start = performance.now();
        await b.write(n, 0, Buffer.alloc(4096, i + 1));
        spans.set(n, [start, performance.now()]);
      }),
    );
    for (const n of names) {
      const [start, end] = spans.get(n)!;
      // Every directory on the way holds a new entry (the object, or a directory made for it):
      // a sync of each started after the write did and ended before it resolved.
      for (const d of chain(dir, FileBlocker.objectPath(dir, n))) {
        const ok = (dirSyncs.spans.get(d) ?? []).some(([s0, s1]) => s0 >= start && s1 <= end);
        expect(ok, `${d} synced within the write of ${n}`).toBe(true);
      }
    }
    expect(b.unsyncedDirs).toBe(0);
    for (const [i, n] of names.entries()) expect((await b.read(n, 0, 1))[0]).toBe(i + 1);
    await b.close();
  });

  it('fails the write whose directory sync fails, and syncs that directory with the next write', async () => {
    const b = new FileBlocker({ dir });
    dirSyncs.failNext = 1;
    await expect(b.write('vol_a', 0, Buffer.from('a'))).rejects.toMatchObject({ code: 'EIO' });
    expect(b.unsyncedDirs).toBeGreaterThan(0);
    // The data is in the file; the failed entry stays pending and the next write syncs it.
    await b.write('vol_a', 0, Buffer.from('b'));
    expect(b.unsyncedDirs).toBe(0);
    expect(dirSyncs.done.has(dirname(FileBlocker.objectPath(dir, 'vol_a')))).toBe(true);
    expect((await b.read('vol_a', 0, 1)).toString()).toBe('b');
    await b.close();
  });

  it('a second write of an object waits for the directory sync the first one started', async () => {
    dirSyncs.delayMs = 50;
    const b = new FileBlocker({ dir });
    const first = b.write('vol_x', 0, Buffer.from('1'));
    // Let the first write create the object and start its directory syncs, then write again.
    await new Promise((r) => setTimeout(r, 15));
    const t0 = performance.now();
    await b.write('vol_x', 1, Buffer.from('2'));
    const own = dirname(FileBlocker.objectPath(dir, 'vol_x'));
    expect(dirSyncs.done.get(own)).toBeDefined();
    expect(dirSyncs.done.get(own)!).toBeLessThanOrEqual(performance.now());
    expect(performance.now() - t0).toBeGreaterThanOrEqual(20);
    await first;
    expect((await b.read('vol_x', 0, 2)).toString()).toBe('12');
    await b.close();
  });
});
