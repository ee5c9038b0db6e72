/**
 * vitest global setup: one throwaway Ceph cluster per test run, shared by every RADOS test file.
 *
 * Started lazily: this only picks the clusters' root directory and hands it to the workers; the first
 * RADOS test file to need the cluster starts it (`ensureCluster()` in cluster.ts; the script
 * serializes concurrent starts with flock, so later files find it running). Runs that select no
 * RADOS test never start Ceph, and machines without Ceph only fail the RADOS tests. Teardown
 * stops the cluster and removes its directory once, after the last test file.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    cephDir: string;
  }
}

export const CLUSTER_SCRIPT = join(import.meta.dirname, '..', '..', '..', 'scripts', 'ceph-cluster.sh');

export default function setup(project: TestProject): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'archip-ceph-'));
  project.provide('cephDir', dir);
  return () => {
    // One subdirectory per cluster (the shared one, and the fault test's own).
    for (const sub of readdirSync(dir)) {
      const cdir = join(dir, sub);
      if (!existsSync(join(cdir, 'ceph.conf'))) continue;
      try {
        execFileSync('bash', [CLUSTER_SCRIPT, 'purge', cdir], { stdio: 'ignore', timeout: 60_000 });
      } catch {
        // best effort: a leftover temp dir is not worth failing the run for
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
}
