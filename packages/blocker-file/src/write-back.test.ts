import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileBlocker } from './index.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'archip-wb-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('write-back mode (sync: flush)', () => {
  it('acknowledges writes unsynced, syncs them at flush, and honours durable writes at once', async () => {
    const b = new FileBlocker({ dir, sync: 'flush' });
    await b.write('a', 0, Buffer.from('hello'));
    await b.write('b', 4096, Buffer.from('world'));
    expect(b.unsynced).toBe(2);
    // Readers see the data at once (page cache), from this blocker and from the file itself.
    expect((await b.read('a', 0, 5)).toString()).toBe('hello');
    expect((await readFile(FileBlocker.objectPath(dir, 'b'))).subarray(4096).toString()).toBe('world');
    await b.write('c', 0, Buffer.from('fua'), { durable: true });
    expect(b.unsynced).toBe(2);
    await b.delete('b');
    expect(b.unsynced).toBe(1);
    await b.flush();
    expect(b.unsynced).toBe(0);
    await b.close();
  });

  it('leaves the directory entries of new objects to the flush, and syncs them before anything durable', async () => {
    const b = new FileBlocker({ dir, sync: 'flush' });
    await b.write('obj-1', 0, Buffer.from('one'));
    await b.write('obj-2', 0, Buffer.from('two'));
    // Each new object added an entry to its (new) hashed directory and to the parents created.
    expect(b.unsyncedDirs).toBeGreaterThanOrEqual(2);
    await b.flush();
    expect(b.unsyncedDirs).toBe(0);
    expect(b.unsynced).toBe(0);

    await b.write('obj-3', 0, Buffer.from('three'));
    expect(b.unsyncedDirs).toBeGreaterThan(0);
    // A durable write (FUA) must not depend on an entry a crash could still lose.
    await b.write('obj-4', 0, Buffer.from('four'), { durable: true });
    expect(b.unsyncedDirs).toBe(0);
    expect(b.unsynced).toBe(1); // obj-3's data still waits for the flush

    await b.write('obj-5', 0, Buffer.from('five'));
    expect(b.unsyncedDirs).toBeGreaterThan(0);
    // So must a lock, and any copy or full write.
    await b.acquire('vol');
    expect(b.unsyncedDirs).toBe(0);
    for (const [n, v] of [
      ['obj-1', 'one'],
      ['obj-3', 'three'],
      ['obj-5', 'five'],
    ] as const)
      expect((await b.read(n, 0, v.length)).toString()).toBe(v);
    await b.release('vol');
    await b.close();
  });

  it('keeps the default mode durable on every write', async () => {
    const b = new FileBlocker({ dir });
    expect(b.sync).toBe('always');
    await b.write('a', 0, Buffer.from('x'));
    expect(b.unsynced).toBe(0);
    expect(b.unsyncedDirs).toBe(0);
    expect(() => new FileBlocker({ dir, sync: 'sometimes' as 'flush' })).toThrow(TypeError);
    await b.close();
  });
});
