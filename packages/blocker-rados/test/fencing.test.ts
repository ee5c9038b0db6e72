/**
 * Fencing on the real cluster, with the holder in a process of its own (its own librados client,
 * test/child/lock-holder.ts): a break blocklists it and its next writes fail with EIO `fenced`;
 * a holder stopped past its lease (SIGSTOP) is fenced and taken over by the next acquire, and
 * fails the same way once it runs again (SIGCONT). Every blocklist entry made here is removed.
 */
import { currentProcess } from '@archipelago/blocker';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ensureCluster, freshNamespace, lockInfo } from './cluster.js';
import {
  blocklist,
  closeOpened,
  counter,
  expectFencedOnContinue,
  openFencer,
  removeBlocklisted,
  startHolder,
} from './holder.js';

afterEach(closeOpened);

afterAll(removeBlocklisted);

describe('fencing a lock holder in another process', () => {
  it('breakLock blocklists a live holder elsewhere: its next writes fail with EIO fenced', async () => {
    const ns = freshNamespace('fence-break');
    const holder = await startHolder({
      namespace: ns,
      volume: 'vol',
      leaseMs: 6000,
      host: 'fence-test-elsewhere',
    });
    const addr = holder.ready.addr as string;
    await holder.next((e) => e.event === 'wrote' && (e.n ?? 0) >= 3);
    const b = await openFencer(ns, 'breaker_1');
    expect(addr).not.toBe(b.clientAddr);
    await expect(b.acquire('vol')).rejects.toMatchObject({ code: 'ELOCKED', details: { owner: 'holder_1' } });

    const report = await b.breakLock('vol');
    expect(report.fenced).toBe(`blocklisted ${addr}`);
    expect(report.previous).toMatchObject({
      owner: 'holder_1',
      process: { pid: holder.child.pid, host: 'fence-test-elsewhere' },
    });
    expect(await b.lockOwner('vol')).toBeNull();
    expect(await blocklist()).toContain(addr);

    // Whatever the holder writes from now on is refused: the object no longer changes.
    const after = holder.events.length;
    const failed = await holder.next((e) => e.event === 'write-failed', after);
    expect(failed).toMatchObject({ code: 'EIO', fenced: true });
    expect(failed.message).toMatch(/this client \(client\.\d+ at .*\) was fenced/);
    const landed = await counter(b, 'vol');
    await new Promise((r) => setTimeout(r, 500));
    expect(await counter(b, 'vol')).toBe(landed);
    expect(holder.events.filter((e) => e.event === 'wrote' && (e.n ?? 0) > landed)).toEqual([]);
    // Its renewal fails too, and the lock is the breaker's to take.
    expect(await holder.next((e) => e.event === 'renew-failed', after)).toMatchObject({
      code: 'EIO',
      fenced: true,
    });
    expect(await b.acquire('vol')).toMatchObject({ took: true });
  });

  it('a holder stopped past its lease is fenced and taken over; after SIGCONT its writes fail', async () => {
    const ns = freshNamespace('fence-stop');
    const holder = await startHolder({ namespace: ns, volume: 'vol', leaseMs: 1500 });
    const addr = holder.ready.addr as string;
    await holder.next((e) => e.event === 'wrote' && (e.n ?? 0) >= 3);
    const b = await openFencer(ns, 'taker_1', { lockRecheckMs: 200 });
    await expect(b.acquire('vol')).rejects.toMatchObject({ code: 'ELOCKED', details: { owner: 'holder_1' } });
    // A live process of this host: neither taken over nor broken while it renews.
    await expect(b.breakLock('vol')).rejects.toMatchObject({ code: 'EBUSY' });

    holder.child.kill('SIGSTOP');
    const t0 = Date.now();
    const r = await b.acquire('vol', { wait: true, timeoutMs: 15_000 });
    expect(Date.now() - t0).toBeGreaterThan(500); // it waited for the lease to run out on the OSD
    expect(r.took).toBe(true);
    expect(r.previous).toMatchObject({ owner: 'holder_1', process: { pid: holder.child.pid } });
    expect(r.tookOver).toMatch(/lease ran out on the OSD/);
    expect(r.tookOver).toContain(`blocklisted ${addr}`);
    expect(await blocklist()).toContain(addr);
    expect(await b.lockInfo('vol')).toMatchObject({ owner: 'taker_1', process: { pid: process.pid } });
    await expectFencedOnContinue(holder, b, 'vol');
    expect((await b.renew('vol')).owner).toBe('taker_1');
    const { conf } = await ensureCluster();
    expect((await lockInfo(conf, 'maps', ns, 'vol')).lockers[0]?.name).toBe(b.clientName);
  });

  it('never blocklists a client of this process: a break waits out the lease instead', async () => {
    const ns = freshNamespace('fence-self');
    // Two librados clients of this process (another connect timeout makes another client).
    const holder = await openFencer(ns, 'holder_1', { connectTimeoutMs: 9_992 });
    const b = await openFencer(ns, 'breaker_1');
    expect(holder.clientAddr).not.toBe(b.clientAddr);
    await holder.acquire('vol', { as: { ...currentProcess(), host: 'fence-test-elsewhere' }, leaseMs: 700 });
    const report = await b.breakLock('vol');
    expect(report.fenced).toBe('its lease ran out');
    expect(await blocklist()).not.toContain(holder.clientAddr);
    await holder.write('still', 0, Buffer.from('mine')); // not fenced
  });
});
