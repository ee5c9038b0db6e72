/**
 * A librados client per tag (`connectionTag`) and `removeClient`, on the real cluster.
 * Ceph fences a client, not a volume: blockers of one process with the same connection options
 * share one client, so a break of one lock they hold blocklists all of them; blockers with tags of
 * their own have clients of their own, and the break fences only the client that held the lock.
 * Every blocklist entry made here is removed.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { connectionCount, type RadosBlocker } from '../src/index.js';
import { ensureCluster, freshNamespace, openRados } from './cluster.js';
import { runOk } from './run.js';

const opened: RadosBlocker[] = [];
const listed: string[] = [];

afterEach(async () => {
  await Promise.all(opened.splice(0).map((b) => b.close().catch(() => {})));
});

afterAll(async () => {
  const { conf } = await ensureCluster();
  for (const a of listed) await runOk('ceph', ['-c', conf, '--admin-socket=', 'osd', 'blocklist', 'rm', a]);
});

async function open(ns: string, pool: string, extra: Partial<Parameters<typeof openRados>[0]> = {}) {
  const b = await openRados({ pool, namespace: ns, identity: 'tagtest_embedded', ...extra });
  opened.push(b);
  return b;
}

describe('connectionTag: a librados client per tag', () => {
  it('untagged blockers share a client; each tag is a client of its own, shared within the tag; the last close ends it', async () => {
    const ns = freshNamespace('conn-tag');
    const before = connectionCount();
    const [u1, u2] = [await open(ns, 'maps'), await open(ns, 'blocks')];
    expect(u2.clientAddr).toBe(u1.clientAddr);
    const a1 = await open(ns, 'maps', { connectionTag: 'volume a' });
    const a2 = await open(ns, 'blocks', { connectionTag: 'volume a' });
    const b1 = await open(ns, 'maps', { connectionTag: 'volume b' });
    expect(a1.connectionTag).toBe('volume a');
    expect(a2.clientAddr, "one volume's blockerm and blockerb: one client").toBe(a1.clientAddr);
    expect(new Set([u1.clientAddr, a1.clientAddr, b1.clientAddr]).size).toBe(3);
    expect(connectionCount() - before).toBe(3);
    await a1.close();
    expect(connectionCount() - before, 'a2 still uses it').toBe(3);
    await a2.close();
    expect(connectionCount() - before).toBe(2);
    await expect(open(ns, 'maps', { connectionTag: '' })).rejects.toThrow(/"connectionTag" must be/);
  });

  it("fencing one tag's client (blocklisted, as a break does) leaves another tag's blocker of the same process writing", async () => {
    const ns = freshNamespace('conn-tag-break');
    const lease = { leaseMs: 30_000 };
    const a = await open(ns, 'maps', { connectionTag: 'volume a', ...lease });
    const b = await open(ns, 'maps', { connectionTag: 'volume b', ...lease });
    await a.acquire('va');
    await b.acquire('vb');
    await a.write('va_data', 0, Buffer.from('a1'));
    await b.write('vb_data', 0, Buffer.from('b1'));
    // What a break from another host does to the holder: blocklist its client. (In this process
    // a breaker would not: a process never fences a client of its own, `isOwnAddress`.)
    const addrA = a.clientAddr as string;
    listed.push(addrA);
    const { conf } = await ensureCluster();
    await runOk('ceph', ['-c', conf, '--admin-socket=', 'osd', 'blocklist', 'add', addrA, '600']);
    await expect(a.write('va_data', 0, Buffer.from('a2'))).rejects.toMatchObject({
      code: 'EIO',
      details: { fenced: true },
    });
    // The other tag's client: not blocklisted, its lock renewed, its writes land.
    await b.write('vb_data', 0, Buffer.from('b2'));
    await expect(b.renew('vb')).resolves.toMatchObject({ owner: 'tagtest_embedded' });
    const reader = await open(ns, 'maps', { connectionTag: 'reader' });
    expect((await reader.read('vb_data', 0, 2)).toString()).toBe('b2');
    expect((await reader.read('va_data', 0, 2)).toString()).toBe('a1');
  });
});

describe('removeClient', () => {
  it("takes an address off a held lock's record, for its holder only; nothing to take off: null", async () => {
    const ns = freshNamespace('remove-client');
    const h = await open(ns, 'maps', { leaseMs: 30_000 });
    const [x, y] = ['10.0.0.7:0/11', '10.0.0.7:0/12'];
    const holder = { owner: 'tagtest_embedded' };
    expect(await h.removeClient('rc', x, holder), 'a free lock').toBeNull();
    await h.acquire('rc');
    await h.addClient('rc', x, holder);
    await h.addClient('rc', y, holder);
    expect(await h.removeClient('rc', x, { owner: 'someone_else' })).toBeNull();
    expect(await h.removeClient('rc', x, holder)).toMatchObject({ clients: [y] });
    expect(await h.removeClient('rc', x, holder), 'idempotent').toBeNull();
    // The holder's renewals keep what is left; the last removal drops the list.
    await h.renew('rc');
    expect((await h.lockInfo('rc'))?.clients).toEqual([y]);
    const last = await h.removeClient('rc', y, holder);
    expect(last?.owner).toBe('tagtest_embedded');
    expect(last?.clients).toBeUndefined();
    expect((await h.lockInfo('rc'))?.clients).toBeUndefined();
    await expect(h.removeClient('rc', 'a b', holder)).rejects.toMatchObject({ code: 'EINVAL' });
  });
});
