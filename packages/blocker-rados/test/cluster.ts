/**
 * The shared test cluster (see global-setup.ts). `ensureCluster()` starts it on first use and
 * fails loudly, never skips, when Ceph or the native binding is missing.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { inject } from 'vitest';
import { NOT_BUILT_MESSAGE, RadosBlocker, type RadosBlockerOptions, radosAvailable } from '../src/index.js';

const run = promisify(execFile);
const SCRIPT = join(import.meta.dirname, '..', '..', '..', 'scripts', 'ceph-cluster.sh');
const CEPH_PACKAGES = 'ceph-mon ceph-osd ceph-common librados-dev';

export interface TestCluster {
  dir: string;
  conf: string;
  restartOsd(): Promise<void>;
}

function which(bin: string): Promise<boolean> {
  return run('sh', ['-c', `command -v ${bin}`]).then(
    () => true,
    () => false,
  );
}

const started = new Map<string, Promise<TestCluster>>();

/** A RadosBlocker on the shared cluster (`ceph.conf` filled in). */
export async function openRados(o: Omit<RadosBlockerOptions, 'cephConf'>): Promise<RadosBlocker> {
  return RadosBlocker.open({ cephConf: (await ensureCluster()).conf, ...o });
}

/**
 * The two blockers of a volume stack in namespace `ns`, as the daemons have them: blockerm on
 * pool "maps", blockerb on pool "blocks", both with `identity` (and `extra`).
 */
export async function openPair(
  ns: string,
  identity: string,
  extra: Partial<RadosBlockerOptions> = {},
): Promise<{ blockerm: RadosBlocker; blockerb: RadosBlocker }> {
  const blockerm = await openRados({ pool: 'maps', namespace: ns, identity, ...extra });
  const blockerb = await openRados({ pool: 'blocks', namespace: ns, identity, ...extra }).catch(async (e) => {
    await blockerm.close();
    throw e;
  });
  return { blockerm, blockerb };
}

/**
 * The cluster `name` of this run ("shared" by default; the fault test restarts its OSD, so it
 * gets one of its own and never stalls the other files' I/O).
 */
export function ensureCluster(name = 'shared'): Promise<TestCluster> {
  let p = started.get(name);
  if (!p) {
    p = startCluster(name);
    started.set(name, p);
  }
  return p;
}

async function startCluster(name: string): Promise<TestCluster> {
  await requireCephTools();
  if (!radosAvailable()) throw new Error(`${NOT_BUILT_MESSAGE} (pnpm run build in packages/blocker-rados)`);
  let root: string;
  try {
    root = inject('cephDir');
  } catch {
    root = '';
  }
  if (!root) root = mkdtempSync(join(tmpdir(), 'archip-ceph-')); // run without the global setup
  return startClusterIn(join(root, name));
}

/** Fails with the packages to install when the Ceph daemons or clients are missing. */
export async function requireCephTools(): Promise<void> {
  const missing: string[] = [];
  for (const b of ['ceph-mon', 'ceph-osd', 'ceph', 'rados']) if (!(await which(b))) missing.push(b);
  if (missing.length > 0) {
    throw new Error(
      `RADOS tests need a Ceph cluster but ${missing.join(', ')} is not installed: apt-get install ${CEPH_PACKAGES} (scripts/test.sh does)`,
    );
  }
}

/**
 * Starts (or finds running) a cluster in `dir` with scripts/ceph-cluster.sh. `publicAddr`
 * (CEPH_PUBLIC_ADDR) makes the monitor and the OSD listen on that IPv4 address instead of
 * 127.0.0.1: network namespaces reach it there (test-e2e/lib/hosts.ts). The caller stops it
 * (`purgeClusterIn`) unless `dir` is under the run's cephDir, which the global teardown purges.
 */
export async function startClusterIn(dir: string, opts: { publicAddr?: string } = {}): Promise<TestCluster> {
  const env = opts.publicAddr ? { ...process.env, CEPH_PUBLIC_ADDR: opts.publicAddr } : process.env;
  try {
    await run('bash', [SCRIPT, 'start', dir], { timeout: 90_000, env });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`could not start the test Ceph cluster in ${dir}: ${err.stderr || err.message}`);
  }
  return {
    dir,
    conf: join(dir, 'ceph.conf'),
    restartOsd: async () => {
      await run('bash', [SCRIPT, 'restart-osd', dir], { timeout: 90_000, env });
    },
  };
}

/** Stops the cluster in `dir` (if it runs) and removes `dir`. */
export async function purgeClusterIn(dir: string): Promise<void> {
  await run('bash', [SCRIPT, 'purge', dir], { timeout: 90_000 });
}

/** A fresh RADOS namespace name: a test that uses one sees an empty pool. */
export function freshNamespace(tag: string): string {
  return `${tag}-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
}

/** What `rados lock info <object> RadosLock` prints (JSON). */
export interface RadosLockInfo {
  name: string;
  type: string;
  /** `expiration`: when the OSD drops the holder (`0.000000`: never), on the OSD's clock. */
  lockers: Array<{ cookie: string; description: string; name: string; expiration: string; addr: string }>;
}

/** `rados lock info` of `<volume>_lock` in namespace `ns` of `pool`, as an administrator reads it. */
export async function lockInfo(
  conf: string,
  pool: string,
  ns: string,
  volume: string,
): Promise<RadosLockInfo> {
  const { runOk } = await import('./run.js');
  const r = await runOk('rados', [
    '-c',
    conf,
    '-p',
    pool,
    '-N',
    ns,
    'lock',
    'info',
    `${volume}_lock`,
    'RadosLock',
  ]);
  return JSON.parse(r.stdout) as RadosLockInfo;
}
