import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { FileBlocker } from '@archipelago/blocker-file';
import { build } from 'esbuild';
import { afterAll, beforeAll } from 'vitest';
import { concurrentVolumeModelTest, type OpenBlockers, volumeModelTest } from './test/index.js';

volumeModelTest({
  name: 'file blocker',
  stack: async () => {
    const dir = await mkdtemp(join(tmpdir(), 'archip-model-'));
    return {
      blockerm: new FileBlocker({ dir: join(dir, 'maps'), identity: 'model_embedded' }),
      blockerb: new FileBlocker({ dir: join(dir, 'blocks'), identity: 'model_embedded' }),
      dispose: () => rm(dir, { recursive: true, force: true }),
    };
  },
});

volumeModelTest({
  name: 'file blocker, write-back',
  runs: 15,
  stack: async () => {
    const dir = await mkdtemp(join(tmpdir(), 'archip-model-wb-'));
    return {
      blockerm: new FileBlocker({ dir: join(dir, 'maps'), identity: 'model_embedded' }),
      blockerb: new FileBlocker({ dir: join(dir, 'blocks'), identity: 'model_embedded', sync: 'flush' }),
      dispose: () => rm(dir, { recursive: true, force: true }),
    };
  },
});

// Two processes of one host: each child is test/model-child.ts bundled from the TypeScript
// sources (workspace packages through their "source" condition, as vitest resolves them) with
// the file blockers below (the children's and the parent's must be the same: blockerm as the
// runtime opens it, revalidating its cached fds). fastio finds its flock addon next to its own
// module: the bundle keeps that module's real location.
const scratch = mkdtempSync(join('/var/tmp', 'archip-model-2p-'));
const child = join(scratch, 'model-child.mjs');
const fileBlockers: OpenBlockers = (root, identity) => ({
  blockerm: new FileBlocker({ dir: join(root, 'maps'), identity, revalidateWrites: true }),
  blockerb: new FileBlocker({ dir: join(root, 'blocks'), identity }),
});
beforeAll(async () => {
  await build({
    stdin: {
      resolveDir: fileURLToPath(new URL('.', import.meta.url)),
      loader: 'ts',
      contents: `import { join } from 'node:path';
        import { FileBlocker } from '@archipelago/blocker-file';
        import { serveModelChild } from './test/model-child.ts';
        serveModelChild((root, identity) => ({
          blockerm: new FileBlocker({ dir: join(root, 'maps'), identity, revalidateWrites: true }),
          blockerb: new FileBlocker({ dir: join(root, 'blocks'), identity }),
        }));`,
    },
    outfile: child,
    bundle: true,
    conditions: ['source'],
    platform: 'node',
    target: 'node20',
    format: 'esm',
    logLevel: 'error',
    plugins: [
      {
        name: 'module-url',
        setup: (b) =>
          b.onLoad({ filter: /[\\/]fastio[\\/]src[\\/]index\.ts$/ }, ({ path }) => {
            const here = JSON.stringify(pathToFileURL(path).href);
            return { contents: readFileSync(path, 'utf8').replaceAll('import.meta.url', here), loader: 'ts' };
          }),
      },
    ],
  });
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

concurrentVolumeModelTest({
  name: 'file blocker',
  child: () => child,
  blockers: fileBlockers,
  scratch,
  ...(process.env.ARCHIP_MODEL_RUNS ? { runs: Number(process.env.ARCHIP_MODEL_RUNS) } : {}),
  ...(process.env.ARCHIP_MODEL_NO_HOST_LOCKS === '1' ? { hostLocks: false } : {}),
  ...(process.env.ARCHIP_MODEL_LONG_LIVED === '1' ? { perCommand: false } : {}),
  // Pairs that lock two names in opposite orders, and clones racing with a remove or rename of
  // their source: the mapper takes both names' host locks in name order, so they are in.
  lockCycles: process.env.ARCHIP_MODEL_LOCK_CYCLES !== '0',
  cloneRaces: process.env.ARCHIP_MODEL_CLONE_RACES !== '0',
});
