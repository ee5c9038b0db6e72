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
import { type LoadedConfig, loadConfig } from './config.js';
import { type ClientRegistrar, RadosDirectDataBlocker } from './direct-data.js';
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

afterAll(async () => {
  await Promise.all(opened.map((o) => o.close().catch(() => {})));
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
});
