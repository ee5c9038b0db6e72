/**
 * `vlmc import` in bulk mode, in process: the embedded runtime's file blockers write back (data
 * with O_DIRECT where the filesystem takes it), blockerb is flushed in the background as the copy
 * goes, and nothing is left unsynced when the import returns. Real files in a temporary directory.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FaultyBlocker } from '@archipelago/blocker';
import { FileBlocker } from '@archipelago/blocker-file';
import { Composer } from '@archipelago/composer';
import { ArchipelagoError } from '@archipelago/libxseg';
import { Mapper } from '@archipelago/mapper';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { defaultConfig } from './config.js';
import { openEmbeddedRuntime } from './embedded.js';
import { exportVolume, importFile } from './transfer.js';
import type { Runtime } from './types.js';

const MiB = 1024 * 1024;
let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'archip-transfer-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** 10 blocks of 4 MiB: data, except blocks 2 and 7 (all zero); the last one is partial. */
function image(): Buffer {
  const img = randomBytes(9 * 4 * MiB + 123 * 1024);
  img.fill(0, 2 * 4 * MiB, 3 * 4 * MiB);
  img.fill(0, 7 * 4 * MiB, 8 * 4 * MiB);
  return img;
}

describe('bulk import', () => {
  it('writes back, flushes blockerb as it goes, and leaves nothing unsynced', async () => {
    const img = image();
    await writeFile(join(dir, 'img.raw'), img);
    const rt = await openEmbeddedRuntime(defaultConfig(dir), { bulk: true });
    const blockerb = rt.blockerb as FileBlocker;
    const blockerm = rt.blockerm as FileBlocker;
    expect(blockerb.sync).toBe('flush');
    expect(blockerm.sync).toBe('flush');
    let flushes = 0;
    let maxUnsynced = 0;
    const flush = blockerb.flush.bind(blockerb);
    blockerb.flush = () => {
      flushes++;
      return flush();
    };
    try {
      const stats = await importFile(rt, join(dir, 'img.raw'), 'bulk1', {
        inflight: 2,
        flushEvery: 8 * MiB,
        onProgress: () => {
          maxUnsynced = Math.max(maxUnsynced, blockerb.unsynced);
        },
      });
      expect(stats.written).toBe(8);
      expect(stats.zeroSkipped).toBe(2);
      // Background flushes every 2 blocks written, plus the final one: the dirty set stays small.
      expect(flushes).toBeGreaterThanOrEqual(4);
      expect(maxUnsynced).toBeLessThanOrEqual(6);
      for (const b of [blockerb, blockerm]) {
        expect(b.unsynced).toBe(0);
        expect(b.unsyncedDirs).toBe(0);
      }
      await exportVolume(rt, 'bulk1', join(dir, 'out.raw'));
      expect(sha(await readFile(join(dir, 'out.raw')))).toBe(sha(img));
    } finally {
      await rt.close();
    }
    // A second, ordinary runtime sees the same bytes (nothing was only in the first one's cache).
    const again = await openEmbeddedRuntime(defaultConfig(dir));
    try {
      expect((again.blockerb as FileBlocker).sync).toBe('flush'); // the default: write-back data
      const back = Buffer.alloc(img.length);
      (await again.composer.read('bulk1', 0, back.length)).copy(back);
      expect(sha(back)).toBe(sha(img));
    } finally {
      await again.close();
    }
  });

  it('exports byte-exact and sparse with O_DIRECT, and buffered where O_DIRECT is refused', async () => {
    const img = image();
    await writeFile(join(dir, 'img.raw'), img);
    const rt = await openEmbeddedRuntime(defaultConfig(dir));
    // tmpfs refuses O_DIRECT: the export must fall back to buffered writes.
    const shm = await mkdtemp(join('/dev/shm', 'archip-transfer-'));
    try {
      await importFile(rt, join(dir, 'img.raw'), 'exp1');
      for (const out of [join(dir, 'out.raw'), join(shm, 'out.raw')]) {
        const stats = await exportVolume(rt, 'exp1', out);
        expect(stats.written).toBe(8);
        expect(sha(await readFile(out))).toBe(sha(img));
        // The two all-zero blocks are holes: 8 of 10 blocks' worth of space at most.
        expect((await stat(out)).blocks * 512).toBeLessThanOrEqual(8 * 4 * MiB);
      }
    } finally {
      await rt.close();
      await rm(shm, { recursive: true, force: true });
    }
  });

  it('removes the half-imported volume when a background flush fails', async () => {
    await writeFile(join(dir, 'img.raw'), image());
    const rt = await openEmbeddedRuntime(defaultConfig(dir), { bulk: true });
    const blockerb = rt.blockerb as FileBlocker;
    blockerb.flush = () => Promise.reject(Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' }));
    try {
      await expect(
        importFile(rt, join(dir, 'img.raw'), 'bulk2', { inflight: 1, flushEvery: 4 * MiB }),
      ).rejects.toMatchObject({ code: 'EIO' });
      expect((await rt.mapper.list()).map((v) => v.name)).not.toContain('bulk2');
    } finally {
      await rt.close();
    }
  });
});

describe('a killed import', () => {
  /**
   * The import crashes after each of its store changes in turn (FaultyBlocker.crashAfter(k): maps
   * and data in one file store, so that k counts every change in order), next to a volume `keep`
   * with data; a fresh mapper then finds no volume, or one marked incomplete (which nothing opens
   * and `remove` removes, leaving `keep` whole), or the complete image.
   */
  it('leaves no volume, or one marked incomplete that remove removes, or the whole image', {
    timeout: 120_000,
  }, async () => {
    // 3 blocks of 4 MiB and a partial one; block 1 all zero.
    const img = randomBytes(3 * 4 * MiB + 100 * 1024);
    img.fill(0, 4 * MiB, 2 * 4 * MiB);
    await writeFile(join(dir, 'img.raw'), img);
    const shm = await mkdtemp(join('/dev/shm', 'archip-import-'));
    const keep = randomBytes(64 * 1024);
    const stack = (b: FileBlocker | FaultyBlocker) => {
      const mapper = new Mapper({ blockerm: b, blockerb: b, lockTimeoutMs: 100 });
      const composer = new Composer({ mapper, blockerb: b });
      return { mapper, composer, blockerm: b, blockerb: b } as unknown as Runtime & { mapper: Mapper };
    };
    const run = async (k: number | null) => {
      await rm(shm, { recursive: true, force: true });
      const setup = new FileBlocker({ dir: shm });
      const s = stack(setup);
      await s.mapper.create('keep', { size: keep.length, blocksize: 64 * 1024 });
      await s.composer.write('keep', 0, keep);
      await s.mapper.close();
      await setup.close();
      const inner = new FileBlocker({ dir: shm });
      const faulty = new FaultyBlocker(inner);
      faulty.crashAfter(k);
      const rt = stack(faulty);
      const error = await importFile(rt, join(dir, 'img.raw'), 'img', { inflight: 2 }).then(
        () => null,
        (e: unknown) => e,
      );
      await rt.mapper.close().catch(() => {});
      await inner.close(); // the calls in flight settle: the process is gone
      return { n: faulty.changes.length, error };
    };
    try {
      const dry = await run(null);
      expect(dry.error).toBeNull();
      const seen = new Set<string>();
      for (let k = 1; k <= dry.n; k++) {
        const { error } = await run(k);
        const at = `crash after change ${k}/${dry.n}`;
        const b = new FileBlocker({ dir: shm });
        const rt = stack(b);
        try {
          const names = (await rt.mapper.list()).map(
            (v) => `${v.name}${v.incomplete ? ' (incomplete)' : ''}`,
          );
          if (names.includes('img (incomplete)')) {
            seen.add('incomplete');
            expect(error, at).not.toBeNull();
            expect((await rt.mapper.info('img')).incomplete).toBe(true);
            const open = await rt.mapper.openVolume('img').catch((e: unknown) => e);
            expect(ArchipelagoError.is(open, 'EBUSY'), at).toBe(true);
            await rt.mapper.remove('img');
            expect(
              (await rt.mapper.list()).map((v) => v.name),
              at,
            ).toEqual(['keep']);
            const left: string[] = [];
            for await (const o of b.list('img_')) left.push(o);
            expect(left, `${at}: objects of the removed import`).toEqual([]);
          } else if (names.includes('img')) {
            seen.add('done');
            const back = await rt.composer.read('img', 0, img.length);
            expect(sha(back), at).toBe(sha(img));
          } else {
            seen.add('none');
            expect(names, at).toEqual(['keep']);
          }
          expect(sha(await rt.composer.read('keep', 0, keep.length)), `${at}: keep`).toBe(sha(keep));
        } finally {
          await rt.mapper.close();
          await b.close();
        }
      }
      expect([...seen].sort()).toEqual(['done', 'incomplete', 'none']);
    } finally {
      await rm(shm, { recursive: true, force: true });
    }
  });

  it('a successful import is complete', async () => {
    await writeFile(join(dir, 'img.raw'), randomBytes(MiB));
    const rt = await openEmbeddedRuntime(defaultConfig(dir));
    try {
      await importFile(rt, join(dir, 'img.raw'), 'ok1');
      expect((await rt.mapper.info('ok1')).incomplete).toBe(false);
    } finally {
      await rt.close();
    }
    const again = await openEmbeddedRuntime(defaultConfig(dir));
    try {
      expect((await again.mapper.list()).map((v) => [v.name, v.incomplete])).toEqual([['ok1', false]]);
    } finally {
      await again.close();
    }
  });
});
