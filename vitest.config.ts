import { defineConfig } from 'vitest/config';

// One vitest run covers every package. Workspace packages resolve to their TypeScript sources
// through the "source" export condition, so tests never depend on a stale dist/.
export default defineConfig({
  resolve: { conditions: ['source'] },
  ssr: { resolve: { conditions: ['source'] } },
  test: {
    include: ['packages/*/src/**/*.test.ts', 'packages/*/test/**/*.test.ts', 'test-e2e/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // One throwaway Ceph cluster per run, started lazily by the first RADOS test file.
    globalSetup: ['packages/blocker-rados/test/global-setup.ts'],
  },
});
