import { defineConfig } from 'vitest/config';

// One vitest run covers every package. Workspace packages resolve to their TypeScript sources
// through the "source" export condition, so tests never depend on a stale dist/.
//
// Two groups, one after the other: the packages' own tests two files at a time (CI has 2 cores),
// then the end-to-end tests one file at a time (they start daemons, guests and network
// namespaces, and measure leases against the wall clock).
const shared = {
  resolve: { conditions: ['source'] },
  ssr: { resolve: { conditions: ['source'] } },
};
const testShared = {
  testTimeout: 60_000,
  hookTimeout: 120_000,
  pool: 'forks' as const,
};

export default defineConfig({
  ...shared,
  test: {
    ...testShared,
    // One throwaway Ceph cluster per run (not per project), started lazily by the first RADOS
    // test file.
    globalSetup: ['packages/blocker-rados/test/global-setup.ts'],
    projects: [
      {
        ...shared,
        test: {
          ...testShared,
          name: 'packages',
          include: ['packages/*/src/**/*.test.ts', 'packages/*/test/**/*.test.ts'],
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
        },
      },
      {
        ...shared,
        test: {
          ...testShared,
          name: 'e2e',
          include: ['test-e2e/**/*.test.ts'],
          maxWorkers: 1,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
