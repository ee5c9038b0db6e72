/**
 * Issue 18 on RADOS: one shared `vlmc map` endpoint process serves several RADOS volumes, each
 * with a librados client of its own, because Ceph fences (blocklists) a client, not a volume.
 * - Embedded wiring: two volumes mapped by one process (same pid) hold their locks with two
 *   different clients; another host breaks the lock of one (a RadosBlocker of another host's
 *   identity, as `vlmc unlock -f` there does), which blocklists that volume's client: its writes
 *   fail and land nothing, while the other volume goes on reading and writing verified bytes, and
 *   the next `vlmc map` there (same process) works.
 * - Daemon wiring with the direct data path (`ARCHIPELAGO_DATA_PATH=direct`): one process, and
 *   each volume's data client is its own, registered in its own volume's lock record alone.
 * - Daemon wiring with `ARCHIPELAGO_DATA_PATH=segment`: blockerb serves the data, and the
 *   endpoint registers no client.
 */
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { currentProcess } from '../../packages/blocker/src/holder.js';
import type { RadosBlocker } from '../../packages/blocker-rados/src/index.js';
import { ensureCluster, freshNamespace, openRados } from '../../packages/blocker-rados/test/cluster.js';
import { requireTool } from '../lib/vlmc.js';
import * as D from './helpers.js';

const configs: D.TestConfig[] = [];
const opened: RadosBlocker[] = [];
const blocklisted: string[] = [];

afterAll(async () => {
  // cleanup() kills what is left (endpoints, daemons): a failed test may leave volumes mapped.
  for (const c of configs) c.cleanup();
  await Promise.all(opened.map((b) => b.close().catch(() => {})));
  const { conf } = await ensureCluster();
  for (const a of blocklisted)
    spawnSync('ceph', ['-c', conf, '--admin-socket=', 'osd', 'blocklist', 'rm', a], { env: D.ENV });
}, 60_000);

interface Row {
  volume: string;
  pid: number;
  uri: string;
}

function mapJson(c: D.TestConfig, volume: string, env: NodeJS.ProcessEnv = {}): Row {
  const r = spawnSync(process.execPath, [D.VLMC, '-c', c.conf, 'map', volume, '--json'], {
    encoding: 'utf8',
    env: { ...D.ENV, ...env },
    timeout: 30_000,
  });
  if (r.status !== 0) throw new Error(`vlmc map ${volume}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Row;
}

/**
 * A configuration on RADOS (namespace `tag`) with the daemons started and `volumes` created; a
 * reader of its maps pool.
 */
async function daemonsOnRados(tag: string, volumes: string[], logLevel = 2) {
  requireTool('qemu-io', 'qemu-utils');
  const { conf } = await ensureCluster();
  const ns = freshNamespace(tag);
  const c = D.useRados(D.makeConfig({ logLevel }), conf, ns, {
    extra: `log_level = ${logLevel}\n`,
    mapperd: 'lease_timeout = 3\n',
  });
  configs.push(c);
  const started = c.tool('start');
  expect(started.status, started.stderr).toBe(0);
  for (const v of volumes) expect(c.vlmc('create', v, '--size', '16M').status).toBe(0);
  const maps = await openRados({ pool: 'maps', namespace: ns, identity: 'rshared_reader' });
  opened.push(maps);
  return { c, maps };
}

/** Writes `byte` at `off` and reads it back through the NBD URI; none may fail. */
function writeVerified(uri: string, byte: number, off: string, len = '1M'): void {
  const r = D.qemuIo(uri, `write -P ${byte} ${off} ${len}`, 'flush', `read -P ${byte} ${off} ${len}`);
  expect(r.ok, r.out).toBe(true);
}

describe('one shared endpoint process over RADOS: a client per volume', () => {
  it('embedded: a break of one volume fences its client alone; the other keeps its verified I/O; the next map works', async () => {
    requireTool('qemu-io', 'qemu-utils');
    const { conf } = await ensureCluster();
    const ns = freshNamespace('e2e-rshared');
    const c = D.useRados(D.makeConfig(), conf, ns, { mapperd: 'lease_timeout = 3\n' });
    configs.push(c);
    for (const v of ['ra', 'rb', 'rc']) expect(c.vlmc('create', v, '--size', '16M').status).toBe(0);

    const a = mapJson(c, 'ra');
    const b = mapJson(c, 'rb');
    expect(b.pid, 'one endpoint process serves both').toBe(a.pid);
    writeVerified(a.uri, 0x11, '0');
    writeVerified(b.uri, 0x22, '0');

    const maps = await openRados({ pool: 'maps', namespace: ns, identity: 'rshared_reader' });
    const blocks = await openRados({ pool: 'blocks', namespace: ns, identity: 'rshared_reader' });
    opened.push(maps, blocks);
    const recA = await maps.lockInfo('ra');
    const recB = await maps.lockInfo('rb');
    expect(recA?.process?.pid).toBe(a.pid);
    expect(recB?.process?.pid).toBe(a.pid);
    const addrA = recA?.addr as string;
    expect(addrA).toMatch(/\S/);
    expect(recB?.addr, 'each volume holds its lock with a client of its own').not.toBe(addrA);
    blocklisted.push(addrA);

    // Another host's breaker, as `vlmc unlock -f ra` there.
    const elsewhere = { ...currentProcess(), host: 'rshared-elsewhere' };
    const id = { identity: 'otherhost_breaker', process: elsewhere };
    const breaker = await openRados({ pool: 'maps', namespace: ns, blocklistExpireSeconds: 600, ...id });
    opened.push(breaker);
    const report = await breaker.breakLock('ra');
    expect(report.fenced).toContain(`blocklisted ${addrA}`);
    const landed = await D.objectHashes(blocks, 'ra');

    // The broken volume: its writes fail, and nothing lands.
    const late = D.qemuIo(a.uri, 'write -P 0x99 0 64k', 'flush');
    expect(late.ok).toBe(false);
    expect(late.out).toMatch(/Input\/output error|failed/i);
    expect(await D.objectHashes(blocks, 'ra')).toEqual(landed);

    // The other volume of the same process: verified reads and writes go on.
    writeVerified(b.uri, 0x33, '2M');
    const old = D.qemuIo(b.uri, 'read -P 0x22 0 1M');
    expect(old.ok, old.out).toBe(true);
    // And the next map there works, in the same process.
    const c3 = mapJson(c, 'rc');
    expect(c3.pid).toBe(a.pid);
    writeVerified(c3.uri, 0x44, '1M');
    expect((await maps.lockInfo('rc'))?.addr).not.toBe(addrA);
    expect(c.vlmc('unmap', 'rc').status).toBe(0);
  }, 90_000);

  it('daemons, direct data path: one process, each volume registers a data client of its own in its own lock; the segment path registers none', async () => {
    const { c, maps } = await daemonsOnRados('e2e-rshared-d', ['da', 'db'], 3);

    const direct = { ARCHIPELAGO_DATA_PATH: 'direct' };
    const a = mapJson(c, 'da', direct);
    const b = mapJson(c, 'db', direct);
    expect(b.pid, 'one endpoint process serves both').toBe(a.pid);
    // The first write of each goes across the segment and registers the volume's client.
    writeVerified(a.uri, 0x11, '0');
    writeVerified(b.uri, 0x22, '0');
    writeVerified(a.uri, 0x12, '1M');
    writeVerified(b.uri, 0x23, '1M');

    const recA = await maps.lockInfo('da');
    const recB = await maps.lockInfo('db');
    expect(recA?.clients).toHaveLength(1);
    expect(recB?.clients).toHaveLength(1);
    expect(recA?.clients?.[0], 'a data client per volume').not.toBe(recB?.clients?.[0]);

    // mapperd releases db at its unmap (CLOSE): the record and its list go; da is still served,
    // its own client alone registered.
    expect(c.vlmc('unmap', 'db').status).toBe(0);
    expect(await maps.lockInfo('db')).toBeNull();
    writeVerified(a.uri, 0x13, '2M');
    expect((await maps.lockInfo('da'))?.clients).toEqual(recA?.clients);
    expect(c.vlmc('unmap', 'da').status).toBe(0);

    // The process exited with its last volume; the next one started with
    // ARCHIPELAGO_DATA_PATH=segment holds no RADOS client: blockerb serves the data.
    const s = mapJson(c, 'db', { ARCHIPELAGO_DATA_PATH: 'segment' });
    expect(s.pid).not.toBe(a.pid);
    const before = D.dataRequests(c);
    writeVerified(s.uri, 0x55, '3M', '64k');
    expect(D.dataRequests(c) - before, 'READ/WRITE requests blockerb served').toBeGreaterThanOrEqual(2);
    expect((await maps.lockInfo('db'))?.clients, 'no client of the endpoint registered').toBeUndefined();
    const old = D.qemuIo(s.uri, 'read -P 0x23 1M 1M');
    expect(old.ok, old.out).toBe(true);
    expect(c.vlmc('unmap', 'db').status).toBe(0);
  }, 90_000);
});
