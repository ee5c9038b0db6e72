/**
 * The conformance suite again, over the file blocker's other configurations: a flat lock
 * directory, a one-entry fd cache (every call evicts), O_DIRECT on a disk-backed directory, and
 * a FaultyBlocker with no fault armed (it must be a transparent wrapper), and write-back mode.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FaultyBlocker } from '@archipelago/blocker';
import { blockerConformance } from '@archipelago/blocker/test';
import { FileBlocker } from './index.js';
import { diskTmpDir } from './test-util.js';

function tempDir(base: string, tag: string): { dir: string; cleanup: () => Promise<void> } {
  const dir = mkdtempSync(join(base, `archip-blocker-file-${tag}-`));
  return { dir, cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
}

{
  const t = tempDir(tmpdir(), 'lockdir');
  blockerConformance({
    name: 'file with lockDir',
    factory: async (o) =>
      new FileBlocker({ dir: join(t.dir, 'data'), lockDir: join(t.dir, 'locks'), lockPollMs: 20, ...o }),
    cleanup: t.cleanup,
  });
}

{
  const t = tempDir(tmpdir(), 'fdcache1');
  blockerConformance({
    name: 'file with fdCache 1',
    factory: async (o) => new FileBlocker({ dir: t.dir, fdCache: 1, lockPollMs: 20, ...o }),
    cleanup: t.cleanup,
  });
}

{
  const t = tempDir(diskTmpDir(), 'direct');
  blockerConformance({
    name: 'file with O_DIRECT',
    factory: async (o) => new FileBlocker({ dir: t.dir, direct: true, lockPollMs: 20, ...o }),
    cleanup: t.cleanup,
  });
}

{
  const t = tempDir(tmpdir(), 'faulty');
  blockerConformance({
    name: 'faulty(file) with no fault armed',
    factory: async (o) => new FaultyBlocker(new FileBlocker({ dir: t.dir, lockPollMs: 20, ...o })),
    cleanup: t.cleanup,
  });
}

{
  const t = tempDir(tmpdir(), 'writeback');
  blockerConformance({
    name: 'file, write-back (sync: flush)',
    factory: async (o) => new FileBlocker({ dir: t.dir, sync: 'flush', lockPollMs: 20, ...o }),
    cleanup: t.cleanup,
  });
}
