import { randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { LockProcess } from '@archipelago/blocker';
import { blockerConformance } from '@archipelago/blocker/test';
import { Op, XF } from '@archipelago/libxseg';
import type { Segment } from '@archipelago/libxseg/segment';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ensureCluster,
  freshNamespace,
  lockInfo as radosLockInfo,
} from '../../blocker-rados/test/cluster.js';
import { runOk } from '../../blocker-rados/test/run.js';
import { SegmentBlocker } from './clients/segment-blocker.js';
import { SegmentMapper } from './clients/segment-mapper.js';
import { SegmentVolumes } from './clients/segment-volumes.js';
import type { PeerOptions, RadosBlockerPeerOptions } from './options.js';
import { PORTS, peerHarness } from './test-peers.js';

const MiB = 1 << 20;
const h = peerHarness('rdtest');
const { dir, segment, base } = h;
const P = PORTS;
const ns = freshNamespace('daemons');
let seg: Segment;
let conf: string;

const rados = (pool: string): RadosBlockerPeerOptions => ({
  type: 'rados_blocker',
  pool,
  namespace: ns,
  cephConf: conf,
  connectTimeoutMs: 10_000,
});

/** `rados lock info <obj> RadosLock` in the test namespace of `pool`. */
function lockInfo(pool: string, lockObject: string) {
  return radosLockInfo(conf, pool, ns, lockObject.replace(/_lock$/, ''));
}

beforeAll(async () => {
  conf = (await ensureCluster()).conf;
  const peers = h.fourRoles('test_mapperd', {
    blockerb: rados('blocks'),
    blockerm: { ...rados('maps'), identity: 'test_blockerm' },
  });
  seg = await h.startAll(peers);
}, 180_000);

afterAll(() => h.teardown());

// Per-identity locks go through RadosBlocker.withIdentity views inside the peer.
blockerConformance({
  name: 'segment→rados',
  factory: async (o) =>
    new SegmentBlocker({ segment: seg, port: P.blockerm, ...(o?.identity ? { identity: o.identity } : {}) }),
});

describe('mapperd and vlmcd over rados_blocker peers', () => {
  it('create, write, snapshot, clone and read back; objects and maps land in their pools', async () => {
    const mapper = new SegmentMapper({ segment: seg, port: P.mapperd, trackOpens: true });
    const vols = new SegmentVolumes({ segment: seg, port: P.vlmcd, tracker: mapper });
    try {
      await mapper.create('rv', { size: 12 * MiB, blocksize: 4 * MiB });
      const data = randomBytes(5 * MiB);
      await vols.write('rv', 2 * MiB, data, { fua: true });
      expect((await vols.read('rv', 2 * MiB, data.length)).equals(data)).toBe(true);
      // the volume lock is mapperd's, as RADOS shows it
      const held = await lockInfo('maps', 'rv_lock');
      expect(held.lockers).toHaveLength(1);
      expect(held.lockers[0]?.cookie).toMatch(/^test_mapperd#[0-9a-f]{16}$/);
      expect(held.lockers[0]?.description).toContain('archipelago test_mapperd on ');

      await vols.snapshot('rv', 'rv-s');
      await mapper.clone('rv-s', 'rv-c');
      await vols.write('rv-c', 4 * MiB, Buffer.from('clone!'));
      const c = await vols.read('rv-c', 0, 12 * MiB);
      const s = await vols.read('rv-s', 0, 12 * MiB);
      const want = Buffer.alloc(12 * MiB);
      data.copy(want, 2 * MiB);
      expect(s.equals(want)).toBe(true);
      Buffer.from('clone!').copy(want, 4 * MiB);
      expect(c.equals(want)).toBe(true);
      expect((await vols.read('rv', 4 * MiB, 6)).equals(data.subarray(2 * MiB, 2 * MiB + 6))).toBe(true);

      const objects = (await runOk('rados', ['-c', conf, '-p', 'blocks', '-N', ns, 'ls'])).stdout;
      expect(objects).toMatch(/^rv_[0-9a-f]{16}_0000000000000001$/m);
      const maps = (await runOk('rados', ['-c', conf, '-p', 'maps', '-N', ns, 'ls'])).stdout.split('\n');
      expect(maps).toEqual(expect.arrayContaining(['rv', 'rv-s', 'rv-c']));

      for (const v of ['rv', 'rv-s', 'rv-c']) await vols.close(v);
      expect(mapper.openVolumes()).toEqual([]);
      expect((await lockInfo('maps', 'rv_lock')).lockers).toEqual([]);
    } finally {
      await vols.disconnect();
      await mapper.close();
    }
  });

  it("ADD_CLIENT to mapperd records a client of the sender's in the volume lock; releases drop it", async () => {
    const mapper = new SegmentMapper({ segment: seg, port: P.mapperd });
    const addr = `10.0.0.8:0/${randomBytes(3).readUIntBE(0, 3)}`;
    try {
      await mapper.create('acv', { size: 8 * MiB, blocksize: 4 * MiB });
      await mapper.openVolume('acv');
      const rec = await mapper.addClient('acv', addr);
      expect(rec).toMatchObject({ owner: 'test_mapperd', proxied: true, clients: [addr] });
      expect(await mapper.addClient('acv', addr)).toMatchObject({ clients: [addr] }); // idempotent
      const stored = await runOk('rados', [
        ...['-c', conf, '--admin-socket=', '-p', 'maps', '-N', ns],
        ...['getxattr', 'acv_lock', 'archipelago.holder'],
      ]);
      expect(JSON.parse(stored.stdout)).toMatchObject({ owner: 'test_mapperd', clients: [addr] });
      await expect(mapper.addClient('acv', '')).rejects.toMatchObject({ code: 'EINVAL' });
      await mapper.closeVolume('acv');
      expect((await lockInfo('maps', 'acv_lock')).lockers).toEqual([]);
    } finally {
      await mapper.close();
    }
  });

  it('REMOVE_CLIENT to mapperd takes a client off a volume lock that stays held; nothing to take off: null', async () => {
    const mapper = new SegmentMapper({ segment: seg, port: P.mapperd });
    const n = randomBytes(3).readUIntBE(0, 3);
    const [x, y] = [`10.0.0.8:0/${n}`, `10.0.0.8:0/${n + 1}`];
    try {
      await mapper.create('rcv', { size: 8 * MiB, blocksize: 4 * MiB });
      await mapper.openVolume('rcv');
      await mapper.addClient('rcv', x);
      expect(await mapper.addClient('rcv', y)).toMatchObject({ clients: [x, y] });
      const rec = await mapper.removeClient('rcv', x);
      expect(rec).toMatchObject({ owner: 'test_mapperd', proxied: true, clients: [y] });
      const stored = await runOk('rados', [
        ...['-c', conf, '--admin-socket=', '-p', 'maps', '-N', ns],
        ...['getxattr', 'rcv_lock', 'archipelago.holder'],
      ]);
      expect(JSON.parse(stored.stdout)).toMatchObject({ owner: 'test_mapperd', clients: [y] });
      expect(await mapper.removeClient('rcv', x)).toBeNull(); // idempotent
      const last = await mapper.removeClient('rcv', y);
      expect(last).toMatchObject({ owner: 'test_mapperd' });
      expect(last?.clients).toBeUndefined();
      // Still held by mapperd, renewals go on; and a free lock has nothing to take off.
      expect((await lockInfo('maps', 'rcv_lock')).lockers).toHaveLength(1);
      await expect(mapper.removeClient('rcv', '')).rejects.toMatchObject({ code: 'EINVAL' });
      await mapper.closeVolume('rcv');
      expect(await mapper.removeClient('rcv', y)).toBeNull();
    } finally {
      await mapper.close();
    }
  });

  it("locks taken through the peer carry the client's identity; another identity gets ELOCKED", async () => {
    const a = new SegmentBlocker({ segment: seg, port: P.blockerm, identity: 'hostA_client' });
    const b = new SegmentBlocker({ segment: seg, port: P.blockerm, identity: 'hostB_client' });
    const port = seg.bindDynamicPort();
    try {
      await a.acquire('idlock');
      const info = await lockInfo('maps', 'idlock_lock');
      expect(info.lockers).toHaveLength(1);
      expect(info.lockers[0]?.cookie).toMatch(/^hostA_client#[0-9a-f]{16}$/);
      // Held for the client (this process), not for the blocker peer: `rados lock info` names its pid.
      expect(info.lockers[0]?.description).toBe(
        `archipelago hostA_client on ${hostname()} pid ${process.pid}`,
      );
      expect(await b.lockOwner('idlock')).toBe('hostA_client');
      await expect(b.acquire('idlock')).rejects.toMatchObject({
        code: 'ELOCKED',
        details: { owner: 'hostA_client' },
      });
      await a.acquire('idlock'); // idempotent for its identity
      // a waiting acquire of B is woken by A's release (watch/notify through the shared pool context)
      const waiting = b.acquire('idlock', { wait: true, timeoutMs: 10_000 });
      await new Promise((r) => setTimeout(r, 200));
      await a.release('idlock');
      await waiting;
      expect((await lockInfo('maps', 'idlock_lock')).lockers[0]?.cookie).toMatch(/^hostB_client#/);
      await b.release('idlock');
      // a request without an identity takes the lock as the peer's own (its configured identity)
      for (const op of [Op.ACQUIRE, Op.RELEASE]) {
        const r = await port.call({ dst: P.blockerm, op, target: 'anonlock', flags: XF.NOSYNC });
        expect(r.ok, `op ${op}`).toBe(true);
        r.release();
        if (op === Op.ACQUIRE)
          expect((await lockInfo('maps', 'anonlock_lock')).lockers[0]?.cookie).toMatch(/^test_blockerm#/);
      }
      expect((await lockInfo('maps', 'anonlock_lock')).lockers).toEqual([]);
    } finally {
      port.close();
      await Promise.all([a.close(), b.close()]);
    }
  });
});

describe('a blocker peer fenced by another host', () => {
  it('fails its clients with EIO fenced, as a local RadosBlocker would, and they do not retry', async () => {
    // A blocker peer of its own: fencing blocklists its RADOS client, so every client of it.
    const FENCED_PORT = 9;
    /** The address of no client (a fake one: this process's own clients are never blocklisted). */
    const writer = `10.0.0.9:0/${randomBytes(3).readUIntBE(0, 3)}`;
    await h.start({ ...base('blockerf', FENCED_PORT), blocker: rados('maps') });
    const a = new SegmentBlocker({ segment: seg, port: FENCED_PORT, identity: 'hostA_fenced' });
    const { RadosBlocker } = await import('@archipelago/blocker-rados');
    const other = await RadosBlocker.open({
      pool: 'maps',
      namespace: ns,
      cephConf: conf,
      identity: 'hostB_breaker',
    });
    try {
      // A process of another host holds the lock through the peer (so a break fences, not EBUSY).
      // The hold is the peer's client's (proxied): blocklisting the peer cuts off only what goes
      // through it, so the break also waits out the holder's lease.
      const elsewhere: LockProcess = { host: 'hostA', boot: 'another-boot', pid: 4242, start: '42' };
      await a.acquire('fencelock', { as: elsewhere, leaseMs: 1500 });
      // A client writing for the holder (a `vlmc map` endpoint's own data client), registered
      // through the peer (ADD_CLIENT) for the holder's process only; renewals keep it.
      await expect(
        a.addClient('fencelock', writer, { as: { ...elsewhere, pid: 4243 } }),
      ).rejects.toMatchObject({
        code: 'ELOCKED',
      });
      expect(await a.addClient('fencelock', writer, { as: elsewhere })).toMatchObject({
        owner: 'hostA_fenced',
        clients: [writer],
      });
      await a.renew('fencelock', { as: elsewhere, leaseMs: 1500 });
      expect((await other.lockInfo('fencelock'))?.clients).toEqual([writer]);
      const t0 = Date.now();
      const report = await other.breakLock('fencelock');
      expect(report.fenced).toMatch(
        new RegExp(
          `^blocklisted \\S+; blocklisted ${writer} \\(writing for hostA_fenced\\), and its lease ran out$`,
        ),
      );
      const listed = await runOk('ceph', ['-c', conf, '--admin-socket=', 'osd', 'blocklist', 'ls']);
      expect(listed.stdout).toContain(writer);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
      expect(report.previous).toMatchObject({ owner: 'hostA_fenced', process: elsewhere });
      for (const call of [
        () => a.renew('fencelock', { as: elsewhere }),
        () => a.write('fenced-object', 0, Buffer.from('late')),
      ]) {
        const e = await call().catch((err: unknown) => err);
        expect(e).toMatchObject({ code: 'EIO', message: /was fenced/, details: { fenced: true } });
      }
      expect(a.retries).toBe(0);
      expect(await other.exists('fenced-object')).toBe(false);
    } finally {
      await Promise.all([a.close(), other.close()]);
      h.children.get('blockerf')?.kill('SIGKILL');
      await runOk('ceph', ['-c', conf, '--admin-socket=', 'osd', 'blocklist', 'rm', writer]).catch(() => {});
    }
  }, 60_000);
});

describe('an unreachable cluster', () => {
  it('fails the start with ETIMEDOUT within the connect timeout, before touching the segment', async () => {
    // a port nothing listens on
    const port = await new Promise<number>((res) => {
      const srv = createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => res(p));
      });
    });
    const badConf = join(dir, 'unreachable.conf');
    writeFileSync(badConf, `[global]\nmon_host = v2:127.0.0.1:${port}\nauth_client_required = none\n`);
    const lonely = `rdbad${process.pid}x${Date.now() % 100000}`;
    const o: PeerOptions = {
      ...base('blockerb', 1),
      segment: { ...segment, name: lonely },
      pidfile: join(dir, 'run/bad.pid'),
      logfile: join(dir, 'run/bad.log'),
      blocker: { type: 'rados_blocker', pool: 'blocks', cephConf: badConf, connectTimeoutMs: 2000 },
    };
    const t0 = Date.now();
    const { child, stderr } = h.spawn(o);
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    const ms = Date.now() - t0;
    expect(code).toBe(1);
    expect(stderr()).toMatch(
      new RegExp(`blockerb: ETIMEDOUT: cannot reach the Ceph cluster of ${badConf} within 2000 ms`),
    );
    expect(ms).toBeLessThan(8000);
    expect(existsSync(o.pidfile)).toBe(false);
    expect(existsSync(`/dev/shm/${lonely}`)).toBe(false);
  }, 30_000);
});
