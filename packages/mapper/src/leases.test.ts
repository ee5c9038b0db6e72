/**
 * Leases and fencing in the mapper (volume-locks.ts) over real file blockers: an open volume's lock
 * is a process hold renewed under a lease; a lease that lapses, or a lock found lost at renewal,
 * fences the volume (every later I/O fails with EIO fenced); `vlmc open` leaves a host hold;
 * a dead holder's lock is taken over, and said so in the log.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { currentProcess } from '@archipelago/blocker';
import { FileBlocker } from '@archipelago/blocker-file';
import { ArchipelagoError } from '@archipelago/libxseg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Mapper } from './mapper.js';
import type { Logger } from './types.js';

const MiB = 1024 * 1024;
let dir: string;
const opened: { close(): Promise<void> }[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'archip-leases-'));
});
afterEach(async () => {
  for (const x of opened.splice(0).reverse()) await x.close().catch(() => {});
  await rm(dir, { recursive: true, force: true });
});

/** Log lines, as the mapper writes them. */
function recorder(): {
  lines: Array<{ level: string; msg: string; obj: Record<string, unknown> }>;
  log: Logger;
} {
  const lines: Array<{ level: string; msg: string; obj: Record<string, unknown> }> = [];
  const at = (level: string) => (obj: Record<string, unknown>, msg?: string) =>
    lines.push({ level, msg: msg ?? '', obj });
  return {
    lines,
    log: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') } as unknown as Logger,
  };
}

function stack(identity: string, leaseMs: number, log?: Logger) {
  const m = new FileBlocker({ dir: join(dir, 'maps'), identity });
  const b = new FileBlocker({ dir: join(dir, 'blocks'), identity });
  const mapper = new Mapper({
    blockerm: m,
    blockerb: b,
    lockTimeoutMs: 300,
    leaseMs,
    ...(log ? { logger: log } : {}),
  });
  opened.push(b, m, mapper);
  return { m, b, mapper };
}

const errorOf = async (p: Promise<unknown>) => {
  try {
    await p;
  } catch (e) {
    if (ArchipelagoError.isInstance(e)) return e;
    throw e;
  }
  throw new Error('expected a failure');
};

describe('leases', () => {
  it('holds an open volume as a process hold and keeps renewing its lease', async () => {
    const { m, mapper } = stack('hostA_1', 600);
    await mapper.create('v', { size: 8 * MiB });
    await mapper.mapWrite('v', 0, 4096);
    const first = await m.lockInfo('v');
    expect(first).toMatchObject({ owner: 'hostA_1', process: currentProcess() });
    await new Promise((r) => setTimeout(r, 900)); // several renewals (every 200 ms)
    const later = await m.lockInfo('v');
    expect(later?.expires).toBeGreaterThan((first?.expires as number) + 400);
    // Still ours: writes and FLUSH go on.
    await mapper.mapWrite('v', 4096, 4096);
    await mapper.flush('v');
  });

  it('fences the volume when a renewal finds its lock lost: every later I/O fails with EIO fenced, logged once', async () => {
    const rec = recorder();
    const a = stack('hostA_1', 600, rec.log);
    const b = stack('hostB_2', 600);
    await a.mapper.create('v', { size: 8 * MiB });
    await a.mapper.mapWrite('v', 0, 4096);
    // Another host takes the lock away (what breakLock does on a shared file system).
    await b.m.release('v', { force: true });
    await b.m.acquire('v');
    await new Promise((r) => setTimeout(r, 400)); // a renewal has run and found it lost
    const e = await errorOf(a.mapper.mapWrite('v', 0, 4096));
    expect(e.code).toBe('EIO');
    expect(e.details).toMatchObject({ volume: 'v', fenced: true });
    expect(e.message).toMatch(/fenced: its lock was lost/);
    expect((await errorOf(a.mapper.mapRead('v', 0, 4096))).details.fenced).toBe(true);
    expect((await errorOf(a.mapper.flush('v'))).details.fenced).toBe(true);
    const fenced = rec.lines.filter((l) => l.level === 'error' && /fenced/.test(l.msg));
    expect(fenced).toHaveLength(1);
    expect(await b.m.lockOwner('v')).toBe('hostB_2'); // and A did not write its lock back
  });

  it('fences the volume when its lease lapses (renewals stopped), without anyone taking it', async () => {
    const a = stack('hostA_1', 300);
    await a.mapper.create('v', { size: 8 * MiB });
    await a.mapper.mapWrite('v', 0, 4096);
    // What a paused process or an unreachable lock store looks like from inside: no renewal.
    (a.mapper as unknown as { locks: { stop(): void } }).locks.stop();
    await new Promise((r) => setTimeout(r, 350));
    const e = await errorOf(a.mapper.mapWrite('v', 0, 4096));
    expect(e.details).toMatchObject({ fenced: true });
    expect(e.message).toMatch(/lease ran out/);
  });

  it('re-checks ownership at FLUSH: a lock taken over between renewals fails the flush', async () => {
    const a = stack('hostA_1', 60_000); // renewals far apart: only the flush can notice
    const b = stack('hostB_2', 60_000);
    await a.mapper.create('v', { size: 8 * MiB });
    await a.mapper.mapWrite('v', 0, 4096);
    await a.mapper.flush('v');
    await b.m.release('v', { force: true });
    await b.m.acquire('v');
    const e = await errorOf(a.mapper.flush('v'));
    expect(e.details).toMatchObject({ fenced: true });
    expect(e.message).toMatch(/held by hostB_2/);
  });

  it('hands an opened volume to the host (vlmc open), and a later process adopts and hands it back', async () => {
    const a = stack('hostA_1', 600);
    await a.mapper.create('v', { size: 8 * MiB });
    await a.mapper.openVolume('v');
    await a.mapper.handOver('v');
    expect(await a.m.lockInfo('v')).toMatchObject({ owner: 'hostA_1', process: null, expires: null });
    expect(a.mapper.openVolumes()).toEqual([]);
    // A later command of the host (a new mapper) writes: it adopts the host hold for its work...
    const later = stack('hostA_1', 600);
    await later.mapper.mapWrite('v', 0, 4096);
    expect((await later.m.lockInfo('v'))?.process).toEqual(currentProcess());
    // ... and when it closes without releasing (keepLocks), the host holds the volume again.
    await later.mapper.close({ keepLocks: true });
    expect(await later.m.lockInfo('v')).toMatchObject({ owner: 'hostA_1', process: null });
  });

  it('takes over the lock a dead process of this host left behind, and logs whose', async () => {
    const rec = recorder();
    const a = stack('hostA_1', 600, rec.log);
    await a.mapper.create('v', { size: 8 * MiB });
    const dead = { ...currentProcess(), pid: 2 ** 22 + 11, start: '1' };
    await a.m.acquire('v', { as: dead, leaseMs: 600_000 });
    await a.mapper.mapWrite('v', 0, 4096);
    expect((await a.m.lockInfo('v'))?.process).toEqual(currentProcess());
    const line = rec.lines.find((l) => /took over the lock of volume v/.test(l.msg));
    expect(line?.msg).toMatch(/pid 4194315 .*is gone/);
    // It took the lock (not this host's to keep): closing releases it.
    await a.mapper.closeVolume('v');
    expect(await a.m.lockOwner('v')).toBeNull();
  });
});
