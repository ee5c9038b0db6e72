/**
 * The daemons over RADOS: `archipelago start` with `[blockerb]`/`[blockerm] type = rados_blocker`
 * on the real single-node test cluster (started once per run by the RADOS global setup; without
 * Ceph these fail, as every RADOS test does), then the built `vlmc` through mapperd and vlmcd:
 * import, NBD writes (qemu-io), snapshot, clone, export, byte for byte; volume locks as `rados lock
 * info` shows them; and a cluster that cannot be reached failing `archipelago start` in bounded time.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { loadConfig, peerOptions } from '@archipelago/runtime';
import { afterEach, describe, expect, it } from 'vitest';
import { ensureCluster, freshNamespace, lockInfo } from '../../packages/blocker-rados/test/cluster.js';
import { requireTool, sh } from '../lib/vlmc.js';
import { BLOCKERB_PORT, BLOCKERM_PORT, makeConfig, type TestConfig } from './helpers.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
let cfg: TestConfig | undefined;

afterEach(() => {
  cfg?.cleanup();
  cfg = undefined;
});

/** The helpers' configuration with both blockers replaced by rados_blocker sections. */
function radosConfig(blockers: (role: string, pool: string, port: number) => string): TestConfig {
  const c = makeConfig();
  const text = readFileSync(c.conf, 'utf8');
  const start = text.indexOf('[blockerb]');
  const end = text.indexOf('[mapperd]');
  writeFileSync(
    c.conf,
    `${text.slice(0, start)}${blockers('blockerb', 'blocks', BLOCKERB_PORT)}\n${blockers('blockerm', 'maps', BLOCKERM_PORT)}\n${text.slice(end)}`,
  );
  return c;
}

const section = (role: string, port: number, body: string) => `[${role}]
type = rados_blocker
portno_start = ${port}
portno_end = ${port}
nr_ops = 16
${body}`;

interface StatusJson {
  peers: { role: string; state: string }[];
}

describe('archipelago start with rados_blocker peers', () => {
  it('vlmc import, NBD write, snapshot, clone and export through the daemons are byte-exact; mapperd holds the lock in RADOS', async () => {
    requireTool('qemu-io', 'qemu-utils');
    const { conf } = await ensureCluster();
    const ns = freshNamespace('e2e-daemons');
    cfg = radosConfig(
      (role, pool, port) =>
        `${section(role, port, `pool = ${pool}\nnamespace = ${ns}\nceph_conf = ${conf}\nconnect_timeout = 10\nop_timeout = 0\n`)}${role === 'blockerm' ? 'unique_str = rdm\n' : ''}`,
    );
    const c = cfg;
    // the options the tool passes to the peers: the keys the embedded vlmc reads
    expect(peerOptions(loadConfig(c.conf), 'blockerm').blocker).toEqual({
      type: 'rados_blocker',
      pool: 'maps',
      namespace: ns,
      cephConf: conf,
      connectTimeoutMs: 10_000,
      opTimeoutMs: 0,
      sync: 'always',
      identity: `${hostname()}_rdm`,
    });

    const started = c.tool('start');
    expect(started.status, started.stderr).toBe(0);
    expect(started.stdout).toMatch(
      /blockerb: started[\s\S]*blockerm: started[\s\S]*mapperd: started[\s\S]*vlmcd: started/,
    );
    expect(c.log('blockerb')).toMatch(/"pool":"blocks".*"msg":"blockerb started"/);

    const img = join(c.dir, 'disk.img');
    const data = Buffer.concat([randomBytes(5 * MiB), Buffer.alloc(8 * MiB), randomBytes(3 * MiB)]);
    writeFileSync(img, data);
    const imported = c.vlmc('import', img, 'rdv');
    expect(imported.status, imported.stderr).toBe(0);
    expect(c.log('mapperd')).toMatch(/"volume":"rdv"/); // through the daemons, not embedded

    // NBD writes through the vlmc map endpoint → vlmcd → RADOS
    const mapped = c.vlmc('map', 'rdv');
    expect(mapped.status, mapped.stderr).toBe(0);
    const uri = mapped.stdout.trim();
    const w = await sh('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 4190000 20000', uri]);
    expect(w.code, w.stderr).toBe(0);
    Buffer.alloc(20000, 0x5a).copy(data, 4190000);
    const r = await sh('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5a 4190000 20000', uri]);
    expect(r.stdout).not.toMatch(/Pattern verification failed/);
    expect(c.vlmc('unmap', 'rdv').status).toBe(0);

    expect(c.vlmc('snapshot', 'rdv', 'rdv-snap').status).toBe(0);
    expect(c.vlmc('create', 'rdclone', '--snap', 'rdv-snap').status).toBe(0);
    const out = join(c.dir, 'out.img');
    const exported = c.vlmc('export', 'rdclone', out);
    expect(exported.status, exported.stderr).toBe(0);
    expect(sha(readFileSync(out))).toBe(sha(data));

    // the volume lock taken through the daemons carries the host's one identity, in RADOS
    expect(c.vlmc('open', 'rdclone').status).toBe(0);
    const info = await lockInfo(conf, 'maps', ns, 'rdclone');
    expect(info.lockers).toHaveLength(1);
    expect(info.lockers[0]?.cookie).toMatch(new RegExp(`^${hostname()}_rdm#[0-9a-f]{16}$`));
    expect(info.lockers[0]?.description).toContain(`archipelago ${hostname()}_rdm on `);
    expect(c.vlmc('close', 'rdclone').status).toBe(0);

    const stopped = c.tool('stop');
    expect(stopped.status, stopped.stderr).toBe(0);
    expect(c.log('blockerm')).toMatch(/blockerm stopped/);
  }, 180_000);

  it('an unreachable cluster fails `archipelago start` within the connect timeout, naming the cause', async () => {
    const port = await new Promise<number>((res) => {
      const srv = createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => res(p));
      });
    });
    cfg = radosConfig((role, pool, p) =>
      section(role, p, `pool = ${pool}\nceph_conf = bad.conf\nconnect_timeout = 2\n`),
    );
    const c = cfg;
    writeFileSync(
      join(c.dir, 'bad.conf'),
      `[global]\nmon_host = v2:127.0.0.1:${port}\nauth_client_required = none\n`,
    );
    const t0 = Date.now();
    const r = c.tool('start');
    const ms = Date.now() - t0;
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(
      /blockerb failed to start \(exit 1\): blockerb: ETIMEDOUT: cannot reach the Ceph cluster of \S+bad\.conf within 2000 ms/,
    );
    expect(ms).toBeLessThan(12_000);
    const st = c.tool('status', '--json').json as StatusJson;
    expect(st.peers.map((p) => p.state)).toEqual([
      'not running',
      'not running',
      'not running',
      'not running',
    ]);
  }, 60_000);
});
