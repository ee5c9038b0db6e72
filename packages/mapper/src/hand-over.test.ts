/**
 * The cooperative hand-over (volume-locks.ts) between two owners of one store, as two hosts of a
 * live migration see it, over real file blockers: the destination reads without the lock; its
 * first write asks the holder to release; the holder's release handler hands the volume over and
 * its reads go uncached; a holder without a handler, a host hold, and a dead holder.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LockProcess } from '@archipelago/blocker';
import { FileBlocker } from '@archipelago/blocker-file';
import { ArchipelagoError } from '@archipelago/libxseg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Mapper } from './mapper.js';

const MiB = 1024 * 1024;
let dir: string;
const opened: { close(): Promise<void> }[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'archip-handover-'));
});
afterEach(async () => {
  for (const x of opened.splice(0).reverse()) await x.close().catch(() => {});
  await rm(dir, { recursive: true, force: true });
});

function host(identity: string, opts: { leaseMs?: number; lockTimeoutMs?: number } = {}) {
  const m = new FileBlocker({ dir: join(dir, 'maps'), identity, lockPollMs: 20 });
  const b = new FileBlocker({ dir: join(dir, 'blocks'), identity });
  const mapper = new Mapper({
    blockerm: m,
    blockerb: b,
    lockTimeoutMs: opts.lockTimeoutMs ?? 5000,
    leaseMs: opts.leaseMs ?? 3000,
  });
  opened.push(b, m, mapper);
  /** Writes `data` at `offset` as the composer does: map the range, then write the objects. */
  const write = async (name: string, offset: number, data: Buffer) => {
    let at = 0;
    for (const s of await mapper.mapWrite(name, offset, data.length)) {
      await b.write(s.target, s.offset, data.subarray(at, at + s.size));
      at += s.size;
    }
  };
  const read = async (name: string, offset: number, length: number) => {
    const parts: Buffer[] = [];
    for (const s of await mapper.mapRead(name, offset, length))
      parts.push(
        s.zero ? Buffer.alloc(s.size) : await b.read(s.target, s.offset, s.size, { missingOk: true }),
      );
    return Buffer.concat(parts);
  };
  return { m, b, mapper, write, read };
}

const fill = (byte: number, n = 4096) => Buffer.alloc(n, byte);

describe('cooperative hand-over between two owners', () => {
  it('the destination reads without the lock; its first write asks, the holder hands over and reads uncached', async () => {
    // A renews every 10 s: a hand-over within 2 s was woken by the watch (inotify), not a renewal.
    const a = host('host-a_1', { leaseMs: 30_000 });
    const b = host('host-b_1');
    await a.mapper.create('v', { size: 8 * MiB });
    await a.mapper.openVolume('v');
    await a.write('v', 0, fill(0xa1));
    const handed: string[] = [];
    a.mapper.onReleaseRequest = async (name, by) => {
      handed.push(`${name} to ${by}`);
      await a.mapper.yieldVolume(name);
    };
    // B maps it: reads work while A holds it (uncached), and leave A the holder.
    b.mapper.markYielded('v');
    expect((await b.read('v', 0, 4096)).equals(fill(0xa1))).toBe(true);
    expect(await b.m.lockOwner('v')).toBe('host-a_1');
    // B's first write asks A, which hands over; B goes on with the lock.
    const t0 = performance.now();
    await b.write('v', 4096, fill(0xb2));
    const ms = performance.now() - t0;
    expect(handed).toEqual(['v to host-b_1']);
    expect(await b.m.lockOwner('v')).toBe('host-b_1');
    expect(ms).toBeLessThan(2000);
    // A reads B's write (uncached), and does not take the lock back for a read.
    expect((await a.read('v', 4096, 4096)).equals(fill(0xb2))).toBe(true);
    expect(a.mapper.openVolumes()).toEqual([]);
    expect(await a.m.lockOwner('v')).toBe('host-b_1');
    // B's later writes are B's alone; A sees them at once.
    await b.write('v', 0, fill(0xb3));
    expect((await a.read('v', 0, 4096)).equals(fill(0xb3))).toBe(true);
  });

  it('a holder without a release handler keeps the volume: the write fails ELOCKED naming it, in bounded time', async () => {
    const a = host('host-a_1');
    const b = host('host-b_1', { lockTimeoutMs: 1500 });
    await a.mapper.create('v', { size: 8 * MiB });
    await a.mapper.openVolume('v');
    const t0 = performance.now();
    const e = await b.write('v', 0, fill(1)).catch((x: unknown) => x);
    expect(ArchipelagoError.is(e, 'ELOCKED'), String(e)).toBe(true);
    expect(String((e as Error).message)).toMatch(/host-a_1 \(pid \d+ on .*\).*asked to hand the volume over/);
    expect(performance.now() - t0).toBeLessThan(4000);
    expect(await a.m.lockOwner('v')).toBe('host-a_1');
  });

  it('a host hold (vlmc open) is not released on request: the error says how to free it', async () => {
    const a = host('host-a_1');
    const b = host('host-b_1', { lockTimeoutMs: 600 });
    await a.mapper.create('v', { size: 8 * MiB });
    await a.mapper.lock('v');
    const e = await b.write('v', 0, fill(1)).catch((x: unknown) => x);
    expect(ArchipelagoError.is(e, 'ELOCKED'), String(e)).toBe(true);
    expect(String((e as Error).message)).toMatch(/held by the host.*vlmc close v/);
  });

  it('a holder that died elsewhere (its lease ran out) is taken over: the fencing path', async () => {
    const a = host('host-a_1');
    const b = host('host-b_1', { lockTimeoutMs: 5000 });
    await a.mapper.create('v', { size: 8 * MiB });
    await a.write('v', 0, fill(0xa1));
    await a.mapper.closeVolume('v');
    // A process on another machine holds it under a 600 ms lease, then dies (no renewals).
    const elsewhere: LockProcess = { host: 'host-a', boot: 'another-boot', pid: 4242, start: '42' };
    await a.m.acquire('v', { leaseMs: 600, as: elsewhere });
    const t0 = performance.now();
    await b.write('v', 0, fill(0xb1));
    expect(performance.now() - t0).toBeGreaterThan(400);
    expect(await b.m.lockOwner('v')).toBe('host-b_1');
    expect((await b.read('v', 0, 4096)).equals(fill(0xb1))).toBe(true);
  });

  it('vlmc open asks a live holder elsewhere and takes the volume; a host hold elsewhere fails at once', async () => {
    const a = host('host-a_1', { leaseMs: 30_000 });
    const b = host('host-b_1', { lockTimeoutMs: 5000 });
    await a.mapper.create('v', { size: 8 * MiB });
    await a.mapper.create('w', { size: 8 * MiB });
    await a.mapper.openVolume('v');
    a.mapper.onReleaseRequest = (name) => a.mapper.yieldVolume(name);
    await b.mapper.openVolume('v', {}, { ask: true });
    expect(await b.m.lockOwner('v')).toBe('host-b_1');
    // A host hold elsewhere has no process to answer: ELOCKED at once, saying how to free it.
    await a.mapper.lock('w');
    const t0 = performance.now();
    const e = await b.mapper.openVolume('w', {}, { ask: true }).catch((x: unknown) => x);
    expect(ArchipelagoError.is(e, 'ELOCKED'), String(e)).toBe(true);
    expect(String((e as Error).message)).toMatch(/held by the host/);
    expect(performance.now() - t0).toBeLessThan(1000);
    await expect(a.mapper.openVolume('v')).rejects.toMatchObject({ code: 'ELOCKED' });
  });

  it('writes queued behind one that waited in vain fail with its error, not one timeout after another', async () => {
    const a = host('host-a_1');
    const b = host('host-b_1', { lockTimeoutMs: 1000 });
    await a.mapper.create('v', { size: 8 * MiB });
    await a.mapper.openVolume('v'); // no release handler: keeps it
    const t0 = performance.now();
    const results = await Promise.allSettled(
      Array.from({ length: 6 }, (_, i) => b.write('v', i * 4096, fill(i))),
    );
    const ms = performance.now() - t0;
    expect(results.map((r) => r.status)).toEqual(Array(6).fill('rejected'));
    for (const r of results)
      expect(ArchipelagoError.is((r as PromiseRejectedResult).reason, 'ELOCKED')).toBe(true);
    expect(ms, 'one lock timeout, not six').toBeLessThan(2500);
    // A later write waits (and asks) again.
    const t1 = performance.now();
    await expect(b.write('v', 0, fill(9))).rejects.toMatchObject({ code: 'ELOCKED' });
    expect(performance.now() - t1).toBeGreaterThanOrEqual(900);
  });

  it("closing a volume this process handed over is quiet: the lock stays the taker's", async () => {
    const a = host('host-a_1', { leaseMs: 30_000 });
    const b = host('host-b_1');
    await a.mapper.create('v', { size: 8 * MiB });
    await a.mapper.openVolume('v');
    a.mapper.onReleaseRequest = (name) => a.mapper.yieldVolume(name);
    await b.write('v', 0, fill(7));
    await a.mapper.closeVolume('v', { restoreHostHold: true });
    expect(await a.m.lockOwner('v')).toBe('host-b_1');
  });
});
