import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { blockerConformance } from '@archipelago/blocker/test';
import { FileBlocker } from './index.js';

const dir = mkdtempSync(join(tmpdir(), 'archip-blocker-file-'));

blockerConformance({
  name: 'file',
  factory: async (o) => new FileBlocker({ dir, lockPollMs: 20, ...o }),
  cleanup: async () => rmSync(dir, { recursive: true, force: true }),
});
