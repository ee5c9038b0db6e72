/**
 * Fault: the OSD restarts while writes are in flight. librados resends them when the OSD is back,
 * so every call resolves (none fails), and every acknowledged write reads back. Runs on its own
 * cluster so the restart never stalls the other test files. The restart is graceful (SIGTERM):
 * memstore keeps data in memory and saves it on shutdown, so a kill -9 would lose the store itself.
 * A release watch (`watchRelease`) set up before the restart still wakes its holder after it.
 */
import { afterAll, expect, it } from 'vitest';
import { RadosBlocker } from '../src/index.js';
import { ensureCluster, freshNamespace } from './cluster.js';

const blockers: RadosBlocker[] = [];
afterAll(async () => {
  await Promise.all(blockers.map((b) => b.close()));
});

function payload(i: number): Buffer {
  const b = Buffer.alloc(64 * 1024 + (i % 7) * 1000, i & 0xff);
  b.writeUInt32BE(i, 0);
  return b;
}

it('in-flight I/O waits out an OSD restart, then completes; no acknowledged write is lost', async () => {
  const cluster = await ensureCluster('fault');
  const b = await RadosBlocker.open({
    cephConf: cluster.conf,
    pool: 'blocks',
    namespace: freshNamespace('fault'),
  });
  blockers.push(b);
  const acked = new Set<number>();
  const failures: unknown[] = [];
  let restarting = true;
  let n = 0;
  // Writers keep writing distinct objects until the restart is over, then a little longer.
  const writers = Array.from({ length: 8 }, async () => {
    let after = 0;
    while (restarting || after++ < 5) {
      const i = n++;
      try {
        await b.writeFull(`obj-${i}`, payload(i));
        acked.add(i);
      } catch (e) {
        failures.push(e);
      }
    }
  });
  await new Promise((r) => setTimeout(r, 300));
  const before = acked.size;
  const t0 = Date.now();
  await cluster.restartOsd();
  const restartMs = Date.now() - t0;
  restarting = false;
  await Promise.all(writers);
  expect(failures).toEqual([]);
  expect(before).toBeGreaterThan(0);
  expect(acked.size).toBe(n);
  for (const i of acked) {
    const want = payload(i);
    const got = await b.read(`obj-${i}`, 0, want.length);
    expect(got.equals(want), `obj-${i} after the restart`).toBe(true);
  }
  console.log(
    `OSD restart took ${restartMs} ms; ${acked.size} writes acknowledged (${before} before it), all read back`,
  );
}, 120_000);

it('a release watch outlives an OSD restart: a request after it still wakes the holder', async () => {
  const cluster = await ensureCluster('fault');
  const ns = freshNamespace('fault-watch');
  const open = async (identity: string, opTimeoutMs = 0) => {
    const b = await RadosBlocker.open({
      cephConf: cluster.conf,
      pool: 'maps',
      namespace: ns,
      identity,
      opTimeoutMs,
    });
    blockers.push(b);
    return b;
  };
  const a = await open('hostA_mapperd');
  const b = await open('hostB_mapperd', 60_000); // its own librados client
  await a.acquire('vol', { leaseMs: 120_000 });
  let calls = 0;
  a.watchRelease('vol', () => {
    calls++;
  });
  await new Promise((r) => setTimeout(r, 300));
  await cluster.restartOsd();
  expect(calls).toBe(0);
  // The first ops after the restart wait for the OSD to be active again (seconds): time the wake-up
  // from the moment the request is stored.
  const t0 = Date.now();
  await b.requestRelease('vol');
  const t1 = Date.now();
  while (calls === 0 && Date.now() - t1 < 10_000) await new Promise((r) => setTimeout(r, 5));
  expect(calls).toBeGreaterThan(0);
  console.log(
    `release watch after an OSD restart: requestRelease took ${t1 - t0} ms (the OSD coming back), the holder woke ${Date.now() - t1} ms after it`,
  );
  expect(Date.now() - t1).toBeLessThan(1000);
  expect((await a.renew('vol')).releaseRequested?.by).toBe('hostB_mapperd');
  await a.release('vol');
}, 120_000);
