/**
 * The RADOS direct data path's client per volume, on the shared test cluster: embedded runtimes
 * with a `radosClientTag` of their own hold their locks with clients of their own (what the shared
 * endpoint gives each volume), and a `RadosDirectDataBlocker` registers its client in its volume's
 * lock and, retired (an unmap), takes it off a record that stays held and stops writing RADOS
 * itself. The registrar is the lock holder's own RadosBlocker (what mapperd reaches through
 * blockerm), the "blockerb" a RadosBlocker of the same pool.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RadosBlocker } from '@archipelago/blocker-rados';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureCluster, freshNamespace, openRados } from '../../blocker-rados/test/cluster.js';
import { runOk } from '../../blocker-rados/test/run.js';
import { type LoadedConfig, loadConfig } from './config.js';
import { type ClientRegistrar, openDirectData, RadosDirectDataBlocker } from './direct-data.js';
import { openBlocker, openEmbeddedRuntime } from './embedded.js';
import { blockerOptions } from './sections.js';

let dir: string;
let loaded: LoadedConfig;
let ns: string;
const opened: Array<{ close(): Promise<void> }> = [];

beforeAll(async () => {
  const { conf } = await ensureCluster();
  ns = freshNamespace('rt-own-client');
  dir = await mkdtemp(join(tmpdir(), 'archip-rt-own-'));
  const file = join(dir, 'archipelago.conf');
  const section = (role: string, pool: string) =>
    `[${role}]\ntype = rados_blocker\npool = ${pool}\nnamespace = ${ns}\nceph_conf = ${conf}\n`;
  await writeFile(file, `${section('blockerb', 'blocks')}${section('blockerm', 'maps')}`);
  loaded = loadConfig(file);
}, 180_000);

/** Addresses this file blocklisted (removed at the end). */
const listed: string[] = [];

/** What a break from another host does to the clients of the lock's record: blocklists them. */
async function blocklist(addr: string): Promise<void> {
  listed.push(addr);
  const { conf } = await ensureCluster();
  await runOk('ceph', ['-c', conf, '--admin-socket=', 'osd', 'blocklist', 'add', addr, '600']);
}

/** True when `p` rejects with the fenced error. */
async function isFenced(p: Promise<unknown>): Promise<boolean> {
  return p.then(
    () => false,
    (e: unknown) => (e as { details?: { fenced?: boolean } }).details?.fenced === true,
  );
}

async function until(cond: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 100));
  }
}

afterAll(async () => {
  await Promise.all(opened.map((o) => o.close().catch(() => {})));
  const { conf } = await ensureCluster();
  for (const a of listed) await runOk('ceph', ['-c', conf, '--admin-socket=', 'osd', 'blocklist', 'rm', a]);
  await rm(dir, { recursive: true, force: true });
});

const addrOf = (b: unknown) => (b as RadosBlocker).clientAddr;

describe('a RADOS client per volume', () => {
  it('embedded runtimes with tags of their own hold their volumes with clients of their own', async () => {
    const a = await openEmbeddedRuntime(loaded, { radosClientTag: 'volume a' });
    opened.push(a);
    const b = await openEmbeddedRuntime(loaded, { radosClientTag: 'volume b' });
    opened.push(b);
    const plain = await openEmbeddedRuntime(loaded);
    opened.push(plain);
    expect(addrOf(a.blockerb), "one runtime's blockerm and blockerb share its client").toBe(
      addrOf(a.blockerm),
    );
    expect(new Set([addrOf(a.blockerm), addrOf(b.blockerm), addrOf(plain.blockerm)]).size).toBe(3);
    await a.mapper.create('ta', { size: 8 << 20 });
    await b.mapper.create('tb', { size: 8 << 20 });
    await a.mapper.openVolume('ta');
    await b.mapper.openVolume('tb');
    expect((await plain.blockerm.lockInfo('ta'))?.addr).toBe(addrOf(a.blockerm));
    expect((await plain.blockerm.lockInfo('tb'))?.addr).toBe(addrOf(b.blockerm));
    await a.close();
    await b.close();
  });

  it('a direct data client registers in its volume lock; retired, it is taken off the held record and writes no more itself', async () => {
    const holder = await openRados({ pool: 'maps', namespace: ns, identity: 'rt_holder', leaseMs: 30_000 });
    opened.push(holder);
    const peer = await openRados({ pool: 'blocks', namespace: ns, identity: 'rt_holder' });
    opened.push(peer);
    await holder.acquire('dv');
    let epoch = 1;
    const registrar: ClientRegistrar = {
      get mapEpoch() {
        return epoch;
      },
      openVolumes: () => ['dv'],
      addClient: (n, addr) => holder.addClient(n, addr, { owner: 'rt_holder' }),
      removeClient: (n, addr) => holder.removeClient(n, addr, { owner: 'rt_holder' }),
    };
    const data = (await openBlocker(
      blockerOptions(loaded, 'blockerb'),
      null,
      { role: 'blockerb', file: loaded.path },
      { connectionTag: 'volume dv' },
    )) as RadosBlocker;
    const direct = new RadosDirectDataBlocker(data, peer, registrar);
    opened.push(direct);
    const addr = data.clientAddr as string;
    expect(addr).not.toBe(peer.clientAddr);

    await direct.write('dv_0', 0, Buffer.from('one')); // across to "blockerb"; registers
    await direct.register();
    expect(direct.registered).toBe(true);
    expect((await holder.lockInfo('dv'))?.clients).toEqual([addr]);
    await direct.write('dv_0', 0, Buffer.from('two'));
    expect(direct.stats.writes).toBe(1);
    expect(direct.fencing.segmentWrites).toBe(1);

    await direct.retire();
    const rec = await holder.lockInfo('dv');
    expect(rec?.owner, 'the lock stays held').toBe('rt_holder');
    expect(rec?.clients, 'its address taken off').toBeUndefined();
    // A write after it (none comes from an unmapped volume) would go to blockerb: nothing registers.
    epoch++;
    await direct.write('dv_0', 0, Buffer.from('three'));
    expect(direct.fencing.segmentWrites).toBe(2);
    await direct.register();
    expect((await holder.lockInfo('dv'))?.clients).toBeUndefined();
    expect((await peer.read('dv_0', 0, 5)).toString()).toBe('three');
    await direct.retire(); // idempotent
  });

  /** A lock holder (mapperd's blockerm) with a client of its own, its registrar, and "blockerb". */
  async function volumeOf(owner: string, vol: string, elsewhere = false) {
    const holder = await openRados({
      pool: 'maps',
      namespace: ns,
      identity: owner,
      // "Another host" (its process named elsewhere), with a short lease: a breaker of this
      // process cannot cut off a client of its own, so it waits the lease out.
      ...(elsewhere
        ? { leaseMs: 2_000, process: { host: 'rt-home-elsewhere', boot: 'x', pid: 1, start: '1' } }
        : { leaseMs: 30_000 }),
      connectionTag: `${owner} holder`,
    });
    opened.push(holder);
    const peer = await openRados({
      pool: 'blocks',
      namespace: ns,
      identity: owner,
      connectionTag: `${owner} holder`,
    });
    opened.push(peer);
    await holder.acquire(vol);
    const registrar: ClientRegistrar = {
      mapEpoch: 1,
      openVolumes: () => [vol],
      addClient: (n, addr) => holder.addClient(n, addr, { owner }),
      removeClient: (n, addr) => holder.removeClient(n, addr, { owner }),
    };
    const direct = (await openDirectData(loaded, peer, registrar, {
      connectionTag: `volume ${vol}`,
    })) as RadosDirectDataBlocker;
    opened.push(direct);
    await direct.write(`${vol}_0`, 0, Buffer.from('one')); // across to "blockerb"; registers
    await direct.register();
    expect(direct.registered).toBe(true);
    return { holder, peer, direct };
  }

  it('a fenced direct client (a take-over by its own host, as a daemons restart does) is replaced by a new registered one; the failed I/Os are retried once, one reconnect for all', async () => {
    const { holder, peer, direct } = await volumeOf('rt_restart', 'rv');
    const old = direct.data;
    const oldAddr = old.clientAddr as string;
    // `[blockerb] sync` is flush (the default): the endpoint's own client writes through all the same.
    expect(blockerOptions(loaded, 'blockerb')).toMatchObject({ sync: 'flush' });
    expect(old.sync).toBe('always');
    await direct.write('rv_0', 0, Buffer.from('two'));
    expect(direct.stats.writes).toBe(1);
    await blocklist(oldAddr);
    // The OSDs refuse the client once they have the new OSD map (a write of the same bytes meanwhile).
    await until(() => isFenced(old.write('rv_0', 0, Buffer.from('two'))));
    // A write the OSDs refuse to a blocklisted client does not apply: what makes one retry safe.
    await expect(old.write('rv_0', 0, Buffer.from('bad'))).rejects.toMatchObject({
      code: 'EIO',
      details: { fenced: true },
    });
    expect((await peer.read('rv_0', 0, 3)).toString()).toBe('two');

    // Many I/Os fail at once: one reconnect, they all wait for it and are retried on the new client.
    const writes = Array.from({ length: 8 }, (_, i) => direct.write(`rv_${i + 1}`, 0, Buffer.from(`w${i}`)));
    const read = direct.read('rv_0', 0, 3);
    await Promise.all(writes);
    expect((await read).toString()).toBe('two');
    expect(direct.fencing.reconnects).toBe(1);
    expect(direct.fencing.segmentWrites, 'no fall-back to blockerb').toBe(1);
    const addr = direct.data.clientAddr as string;
    expect(addr).not.toBe(oldAddr);
    expect((await holder.lockInfo('rv'))?.clients).toContain(addr);
    for (let i = 0; i < 8; i++) expect((await peer.read(`rv_${i + 1}`, 0, 2)).toString()).toBe(`w${i}`);
    await direct.write('rv_0', 0, Buffer.from('new'));
    expect((await peer.read('rv_0', 0, 3)).toString()).toBe('new');
    expect(direct.fencing.reconnects).toBe(1);
    await direct.retire();
  });

  it('a legitimately fenced direct client (another host broke and took the lock) gets nothing through: mapperd refuses its new client', async () => {
    const { holder, peer, direct } = await volumeOf('rt_home', 'lv', true);
    await direct.write('lv_0', 0, Buffer.from('home'));
    const oldAddr = direct.data.clientAddr as string;
    // Another host breaks the lock and takes it: it blocklists the record's clients (here by
    // hand: a breaker never fences a client of its own process) and holds the lock.
    const other = await openRados({
      pool: 'maps',
      namespace: ns,
      identity: 'rt_other',
      leaseMs: 30_000,
      connectionTag: 'rt_other',
    });
    opened.push(other);
    await blocklist(oldAddr);
    await until(async () => isFenced(direct.data.write('lv_9', 0, Buffer.from('x'))));
    await other.breakLock('lv', { waitMs: 5_000 });
    await other.acquire('lv');
    await expect(direct.write('lv_0', 0, Buffer.from('late'))).rejects.toMatchObject({
      code: 'EIO',
      details: { fenced: true },
    });
    // Many at once: each fails with the fenced error (none goes across to blockerb).
    const late = await Promise.allSettled([
      ...[1, 2, 3].map((i) => direct.write(`lv_${i}`, 0, Buffer.from('late'))),
      direct.read('lv_0', 0, 4),
    ]);
    for (const r of late)
      expect(r).toMatchObject({
        status: 'rejected',
        reason: { code: 'EIO', details: { fenced: true }, message: expect.stringMatching(/not let in/) },
      });
    expect(direct.fencing.reconnects).toBe(0);
    expect(direct.fencing.refused).toBeGreaterThanOrEqual(2);
    expect(direct.fencing.segmentWrites, 'never across to blockerb').toBe(1);
    expect((await peer.read('lv_0', 0, 4)).toString()).toBe('home');
    expect(await peer.exists('lv_1')).toBe(false);
    const rec = await other.lockInfo('lv');
    expect(rec?.owner).toBe('rt_other');
    expect(rec?.clients ?? []).toEqual([]);
    void holder;
  });
});
