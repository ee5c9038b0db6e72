/**
 * Issue 18 on RADOS: through `archipelago start` (rados_blocker peers on the test cluster) and
 * `vlmc map` with `ARCHIPELAGO_DATA_PATH=direct`, the endpoint registers its own librados client
 * in the volume lock's record (`clients`) and then writes the data objects itself: blockerb
 * serves no READ or WRITE for the NBD I/O once registered, and the bytes read back. A break of the
 * lock by another host (a RadosBlocker of another host's identity, as `vlmc unlock -f` there would)
 * blocklists the endpoint's client too: the endpoint, stopped (SIGSTOP) in the middle of a stream
 * of writes across the break and resumed, gets its writes refused by the OSDs, and none of them
 * lands (the volume's objects read back unchanged).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { currentProcess } from '../../packages/blocker/src/holder.js';
import type { RadosBlocker } from '../../packages/blocker-rados/src/index.js';
import { ensureCluster, freshNamespace, openRados } from '../../packages/blocker-rados/test/cluster.js';
import {
  dataRequests,
  ENV,
  makeConfig,
  objectHashes,
  qemuIo,
  type TestConfig,
  useRados,
  VLMC,
} from './helpers.js';

let cfg: TestConfig | undefined;
const opened: RadosBlocker[] = [];
const children: ChildProcess[] = [];
const blocklisted: string[] = [];

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  for (const p of endpointPids()) {
    process.kill(p, 'SIGCONT');
    process.kill(p, 'SIGKILL');
  }
  await Promise.all(opened.map((b) => b.close().catch(() => {})));
  const { conf } = await ensureCluster();
  for (const a of blocklisted)
    spawnSync('ceph', ['-c', conf, '--admin-socket=', 'osd', 'blocklist', 'rm', a], { env: ENV });
  cfg?.cleanup();
});

/** The pids of the `vlmc map` endpoints (run-state files of the run directory). */
function endpointPids(): number[] {
  if (!cfg) return [];
  const pids: number[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else if (e.name.endsWith('.json')) {
        try {
          const pid = (JSON.parse(readFileSync(join(d, e.name), 'utf8')) as { pid?: number }).pid;
          if (pid && pid !== process.pid) pids.push(pid);
        } catch {
          // not a run-state file
        }
      }
    }
  };
  walk(cfg.runDir);
  return pids;
}

/** Runs qemu-io commands against a mapped volume's NBD URI; fails on any error or mismatch. */
function qemuIoOk(uri: string, ...cmds: string[]): void {
  const r = qemuIo(uri, ...cmds);
  expect(r.ok, r.out).toBe(true);
}

describe('the vlmc map endpoint on RADOS: its own client, registered in the volume lock', () => {
  it('writes directly once registered; a break blocklists it, also stopped across the break, and nothing it sends after lands', async () => {
    const { conf } = await ensureCluster();
    const ns = freshNamespace('e2e-rdirect');
    cfg = useRados(makeConfig({ logLevel: 3 }), conf, ns, {
      extra: 'log_level = 3\n',
      mapperd: 'lease_timeout = 3\n', // a break waits out mapperd's lease (proxied): keep it short
    });
    const c = cfg;
    const started = c.tool('start');
    expect(started.status, started.stderr).toBe(0);
    expect(c.vlmc('create', 'rdv', '--size', '16M').status).toBe(0);

    const m = spawnSync(process.execPath, [VLMC, '-c', c.conf, 'map', 'rdv'], {
      encoding: 'utf8',
      env: { ...ENV, ARCHIPELAGO_DATA_PATH: 'direct' },
      timeout: 30_000,
    });
    expect(m.status, m.stderr).toBe(0);
    const uri = m.stdout.trim();
    const [ep] = endpointPids();
    expect(ep).toBeGreaterThan(0);

    // The first write goes across the segment and starts the registration; after it, none does.
    qemuIoOk(uri, 'write -P 0x11 0 8M', 'flush');
    const maps = await openRados({ pool: 'maps', namespace: ns, identity: 'rdirect_reader' });
    opened.push(maps);
    const rec = await maps.lockInfo('rdv');
    expect(rec?.clients).toHaveLength(1);
    const epAddr = rec?.clients?.[0] as string;
    blocklisted.push(epAddr, rec?.addr as string);
    const before = dataRequests(c);
    qemuIoOk(
      uri,
      'write -P 0xa5 0 2M',
      'write -P 0x5a 3M 64k',
      'write -P 0x3c 4092k 8k',
      'flush',
      'read -P 0xa5 0 2M',
      'read -P 0x5a 3M 64k',
      'read -P 0x3c 4092k 8k',
    );
    const crossed = dataRequests(c) - before;
    // (a write right after a lease was taken up afresh waits for its registration on the segment)
    expect(crossed, 'READ/WRITE requests blockerb served for registered NBD I/O').toBeLessThanOrEqual(2);

    // A stream of writes, many in flight (aio_write); the endpoint is stopped in the middle of it,
    // maybe with writes past its lease check and not yet sent to the OSD (the case the lease cannot cover).
    const cmds: string[] = [];
    for (let i = 0; i < 400; i++)
      cmds.push('-c', `aio_write -P 0x${(0x40 + (i % 64)).toString(16)} ${(i % 64) * 64}k 64k`);
    cmds.push('-c', 'aio_flush');
    const writer = spawn('qemu-io', ['-f', 'raw', ...cmds, uri], { env: ENV, stdio: 'ignore' });
    children.push(writer);
    await new Promise((r) => setTimeout(r, 400));
    process.kill(ep as number, 'SIGSTOP');

    const breaker = await openRados({
      pool: 'maps',
      namespace: ns,
      identity: 'otherhost_breaker',
      blocklistExpireSeconds: 600,
      process: { ...currentProcess(), host: 'rdirect-elsewhere' },
    });
    opened.push(breaker);
    const report = await breaker.breakLock('rdv');
    expect(report.fenced).toContain(`blocklisted ${epAddr} (writing for`);
    const blocks = await openRados({ pool: 'blocks', namespace: ns, identity: 'rdirect_reader' });
    opened.push(blocks);
    const landed = await objectHashes(blocks, 'rdv');
    expect(Object.keys(landed).length).toBeGreaterThan(0);

    const { stdout: listed } = spawnSync('ceph', ['-c', conf, '--admin-socket=', 'osd', 'blocklist', 'ls'], {
      encoding: 'utf8',
      env: ENV,
    });
    expect(listed).toContain(epAddr);

    process.kill(ep as number, 'SIGCONT');
    await new Promise((r) => setTimeout(r, 1500));
    expect(await objectHashes(blocks, 'rdv')).toEqual(landed);
    // And a later write through the endpoint fails (its volume is fenced), landing nothing.
    const late = spawnSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x99 0 64k', uri], {
      encoding: 'utf8',
      env: ENV,
      timeout: 30_000,
    });
    expect(late.stdout + late.stderr).toMatch(/failed|error/i);
    expect(await objectHashes(blocks, 'rdv')).toEqual(landed);
  }, 120_000);
});
