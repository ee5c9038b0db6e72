/**
 * Clients that write for a lock's holder (`RadosBlocker.addClient`, the record's `clients`): a
 * `vlmc map` endpoint's own data client writes for mapperd, whose lock names blockerm's client.
 * On the real cluster, with the writer in a process of its own (test/child/lock-holder.ts,
 * `writeOnly`): a break blocklists it as well as the holder, even while it is stopped (SIGSTOP)
 * across the break, and nothing it writes after the break lands; the holder's renewals keep the
 * list, also when a registration races with them. Every blocklist entry made here is removed.
 */
import { currentProcess } from '@archipelago/blocker';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ensureCluster, freshNamespace } from './cluster.js';
import {
  blocklist,
  closeOpened,
  expectFencedOnContinue,
  openFencer,
  removeBlocklisted,
  startHolder,
} from './holder.js';
import { runOk } from './run.js';

afterEach(closeOpened);

/** Addresses of no client, registered and so blocklisted by the second test. */
const FAKE = ['10.0.0.1:0/1', '10.0.0.1:0/2'];

afterAll(async () => {
  await removeBlocklisted();
  const { conf } = await ensureCluster();
  const listed = new Set(await blocklist());
  for (const a of FAKE)
    if (listed.has(a)) await runOk('ceph', ['-c', conf, '--admin-socket=', 'osd', 'blocklist', 'rm', a]);
});

/** The lock record as stored (`rados getxattr <vol>_lock archipelago.holder`). */
async function storedRecord(ns: string, volume: string): Promise<Record<string, unknown>> {
  const { conf } = await ensureCluster();
  const r = await runOk('rados', [
    '-c',
    conf,
    '--admin-socket=',
    '-p',
    'maps',
    '-N',
    ns,
    'getxattr',
    `${volume}_lock`,
    'archipelago.holder',
  ]);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

describe('clients writing for a lock holder', () => {
  it('a break blocklists a registered client stopped across it: after SIGCONT nothing it writes lands', async () => {
    const ns = freshNamespace('clients-break');
    // Both children start side by side (each start costs a node process with the TS loader).
    const [holder, writer] = await Promise.all([
      startHolder({ namespace: ns, volume: 'vol', leaseMs: 1500, host: 'clients-elsewhere' }),
      startHolder({ namespace: ns, volume: 'ep', leaseMs: 6000, writeOnly: true }),
    ]);
    const hAddr = holder.ready.addr as string;
    const wAddr = writer.ready.addr as string;
    await writer.next((e) => e.event === 'wrote' && (e.n ?? 0) >= 3);
    const reg = await openFencer(ns, 'registrar_1');
    const rec = await reg.addClient('vol', wAddr, { owner: 'holder_1' });
    expect(rec).toMatchObject({ owner: 'holder_1', addr: hAddr, clients: [wAddr] });
    expect(await reg.addClient('vol', wAddr, { owner: 'holder_1' })).toMatchObject({ clients: [wAddr] });
    // The holder's renewals (every 500 ms) keep the list.
    await holder.next((e) => e.event === 'wrote' && (e.n ?? 0) >= 25);
    expect(await storedRecord(ns, 'vol')).toMatchObject({ owner: 'holder_1', addr: hAddr, clients: [wAddr] });
    expect(holder.events.filter((e) => e.event === 'renew-failed')).toEqual([]);

    // The writer is stopped across the break: it cannot notice anything, only the OSDs can stop it.
    const b = await openFencer(ns, 'breaker_1'); // before the stop: a new client would wait 10 s for its admin socket
    writer.child.kill('SIGSTOP');
    const report = await b.breakLock('vol');
    expect(report.fenced).toBe(`blocklisted ${hAddr}; blocklisted ${wAddr} (writing for holder_1)`);
    expect(await blocklist()).toEqual(expect.arrayContaining([hAddr, wAddr]));
    expect(await b.lockOwner('vol')).toBeNull();
    await expectFencedOnContinue(writer, b, 'ep');
  });

  it('a take-over of a stale lock blocklists its clients; registrations racing renewals lose nothing', async () => {
    const ns = freshNamespace('clients-stale');
    const writer = await startHolder({ namespace: ns, volume: 'ep', leaseMs: 6000, writeOnly: true });
    const wAddr = writer.ready.addr as string;
    // The holder: a client of this process holding for a process elsewhere (as blockerm does).
    const holder = await openFencer(ns, 'holder_1', { connectTimeoutMs: 9_991 });
    const as = { ...currentProcess(), host: 'clients-elsewhere' };
    await holder.acquire('vol', { as, leaseMs: 1500 });
    // Registrations while the holder renews: none of the renewals finds the lock lost.
    const renewals = Array.from({ length: 6 }, () => holder.renew('vol', { as, leaseMs: 1500 }));
    const regs = [FAKE[0] as string, wAddr, FAKE[1] as string].map((a) =>
      holder.addClient('vol', a, { owner: 'holder_1', process: as }),
    );
    await Promise.all([...renewals, ...regs]);
    const info = await holder.lockInfo('vol');
    expect(new Set(info?.clients)).toEqual(new Set([...FAKE, wAddr]));
    expect(info).toMatchObject({ owner: 'holder_1', proxied: true, process: { host: 'clients-elsewhere' } });

    // Wrong holder, no holder, bad address.
    const other = await openFencer(ns, 'other_1');
    await expect(other.addClient('vol', wAddr, { owner: 'other_1' })).rejects.toMatchObject({
      code: 'ELOCKED',
    });
    await expect(other.addClient('none', wAddr, { owner: 'other_1' })).rejects.toMatchObject({
      code: 'ENOTLOCKED',
    });
    await expect(other.addClient('vol', '', { owner: 'holder_1' })).rejects.toMatchObject({ code: 'EINVAL' });

    // The holder stops renewing: the OSD drops its cls lock, and the next acquire fences the
    // clients of the stale record (the holder's own client is this process's: never fenced).
    const taker = await openFencer(ns, 'taker_1', { lockRecheckMs: 200 });
    const r = await taker.acquire('vol', { wait: true, timeoutMs: 15_000 });
    expect(r.took).toBe(true);
    expect(await blocklist()).toContain(wAddr);
    const after = writer.events.length;
    const failed = await writer.next((e) => e.event === 'write-failed', after);
    expect(failed).toMatchObject({ code: 'EIO', fenced: true });
    // The taker's record starts without clients.
    expect((await taker.lockInfo('vol'))?.clients).toBeUndefined();
  });
});
