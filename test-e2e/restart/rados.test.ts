/**
 * Restarts under a mapped volume with rados_blocker peers (blockerb and blockerm on the test Ceph
 * cluster, started once per run by the RADOS global setup): `archipelago restart` under fio
 * verify, and the admin guide's peer-failure procedure for blockerm, the lock keeper, as written
 * (its step 4 looks at the volume locks in RADOS).
 */
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ensureCluster, freshNamespace, lockInfo } from '../../packages/blocker-rados/test/cluster.js';
import {
  BLOCKERM_PORT,
  makeConfig,
  sleep,
  type TestConfig,
  until,
  useRados,
  XSEG,
} from '../daemons/helpers.js';
import { requireTool } from '../lib/vlmc.js';
import { alive, expectClean, expectCleanSegment, startFio } from './helpers.js';

let cfg: TestConfig | undefined;

afterEach(() => {
  cfg?.cleanup();
  cfg = undefined;
});

/** The daemons' test configuration with both blockers on RADOS (pools blocks and maps, namespace `ns`). */
function radosConfig(conf: string, ns: string): TestConfig {
  return useRados(makeConfig(), conf, ns);
}

function ok(r: { status: number | null; stdout: string; stderr: string }, what: string): string {
  expect(r.status, `${what}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

async function setUp(vol: string): Promise<{ c: TestConfig; uri: string; conf: string; ns: string }> {
  requireTool('fio', 'fio');
  const { conf } = await ensureCluster();
  const ns = freshNamespace('e2e-restart');
  cfg = radosConfig(conf, ns);
  const c = cfg;
  ok(c.tool('start'), 'start');
  ok(c.vlmc('create', vol, '--size', '64M'), 'create');
  const uri = ok(c.vlmc('map', vol), 'map').trim();
  return { c, uri, conf, ns };
}

async function expectUnmappedClean(c: TestConfig, vol: string, conf: string, ns: string): Promise<void> {
  ok(c.vlmc('unmap', vol), 'unmap');
  expect((await lockInfo(conf, 'maps', ns, vol)).lockers).toEqual([]);
  const st = c.tool('status', '--json').json as { peers: { state: string }[] };
  expect(st.peers.map((p) => p.state)).toEqual(['running', 'running', 'running', 'running']);
  expectCleanSegment(c);
}

describe('restarts under a mapped volume (rados_blocker peers)', () => {
  it('archipelago restart: fio verify sees no I/O error and no bad block; vlmc unmap works afterwards', async () => {
    const { c, uri, conf, ns } = await setUp('rrv');
    const fio = startFio(c.dir, uri, '16M', 300);
    await sleep(2500);
    const t0 = Date.now();
    const r = c.tool('restart', '--json');
    const restartMs = Date.now() - t0;
    ok(r, 'restart');
    expect(fio.running(), 'fio was still writing when the restart ended').toBe(true);
    const f = await fio.done;
    console.log(
      `RADOS: restart under fio verify: restart took ${restartMs} ms (per peer ${JSON.stringify((r.json as { downMs: unknown }).downMs)}); the client's longest write ${f.maxWriteMs.toFixed(0)} ms, longest read ${f.maxReadMs.toFixed(0)} ms; ${f.writes} writes, ${f.reads} verified, error ${f.error}`,
    );
    expectClean(f, 4096);
    expect(Math.max(f.maxWriteMs, f.maxReadMs)).toBeLessThan(5000);
    await expectUnmappedClean(c, 'rrv', conf, ns);
  }, 180_000);

  it("the admin guide's peer-failure procedure for blockerm, as written, under fio verify", async () => {
    const { c, uri, conf, ns } = await setUp('rgv');
    const fio = startFio(c.dir, uri, '16M', 300);
    await sleep(2000);
    const pid = c.pidOf('blockerm') as number;
    process.kill(pid, 'SIGKILL');
    await until(() => !alive(pid), 5000, 'blockerm to die');
    const xseg = (...args: string[]) =>
      spawnSync(process.execPath, [XSEG, `posix:${c.segment}:`, ...args], { encoding: 'utf8' });
    // 1. Remove the pidfile.
    rmSync(join(c.runDir, 'blockerm.pid'));
    // 2. Recover the locks the peer may have left stale.
    ok(xseg('recoverlocks', String(BLOCKERM_PORT)), 'recoverlocks');
    // 3. Fail the requests the peer had accepted.
    ok(xseg('recoverport', String(BLOCKERM_PORT)), 'recoverport');
    // 4. Recover the volume locks (a RADOS blockerm): for each mapped volume, who holds its lock.
    expect(ok(c.vlmc('showmapped'), 'showmapped')).toMatch(/\brgv\b/);
    // It is this host's, held for mapperd (alive): nothing to unlock (the guide's "from another
    // node" unlock would cut the mapped volume off); the restarted blockerm renews it.
    const info = await lockInfo(conf, 'maps', ns, 'rgv');
    expect(info.lockers).toHaveLength(1);
    expect(info.lockers[0]?.description).toMatch(
      new RegExp(`^archipelago \\S+ on \\S+ pid ${c.pidOf('mapperd')}$`),
    );
    // 5. Start the peer.
    ok(c.tool('start', 'blockerm'), 'start blockerm');
    // 6. Perform an Archipelago restart.
    ok(c.tool('restart'), 'restart');
    expect(fio.running(), 'fio was still writing after the procedure').toBe(true);
    const f = await fio.done;
    console.log(
      `RADOS: guide's peer-failure procedure (blockerm) under fio verify: longest write ${f.maxWriteMs.toFixed(0)} ms, longest read ${f.maxReadMs.toFixed(0)} ms; ${f.writes} writes, ${f.reads} verified, error ${f.error}`,
    );
    expectClean(f, 4096);
    await expectUnmappedClean(c, 'rgv', conf, ns);
  }, 180_000);
});
